//! WIT values on the wire: the arguments and results of a component-to-component call.
//!
//! [`WitValue`] mirrors the component model's value kinds (records, variants, lists, …) so a
//! call to any function of any interface can cross the data plane without generated code.
//! A call's [`Invocation::head`](crate::rpc::Invocation::head) is its arguments and the
//! [`Response::head`](crate::rpc::Response::head) its results, each a MessagePack array of
//! values written by [`encode`] and read by [`decode`]; the body is empty.
//!
//! Values are self-describing but carry no types: the receiver checks them against the
//! signature it knows. Resources, futures and streams live in one store and have no wire
//! form; the host refuses them before anything is sent.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One WIT value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WitValue {
    /// `bool`
    Bool(bool),
    /// `s8`
    S8(i8),
    /// `u8`
    U8(u8),
    /// `s16`
    S16(i16),
    /// `u16`
    U16(u16),
    /// `s32`
    S32(i32),
    /// `u32`
    U32(u32),
    /// `s64`
    S64(i64),
    /// `u64`
    U64(u64),
    /// `f32`
    Float32(f32),
    /// `f64`
    Float64(f64),
    /// `char`
    Char(char),
    /// `string`
    String(String),
    /// `list<T>` (and fixed-length lists)
    List(Vec<WitValue>),
    /// `list<u8>`, compactly: one MessagePack binary instead of a value per byte. Senders
    /// use it for non-empty byte lists; receivers accept it wherever `list<u8>` is expected.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// `record { … }`: field names and values, in declaration order.
    Record(Vec<(String, WitValue)>),
    /// `tuple<…>`
    Tuple(Vec<WitValue>),
    /// `variant { … }`: the case name and its payload, if the case has one.
    Variant(String, Option<Box<WitValue>>),
    /// `enum { … }`: the case name.
    Enum(String),
    /// `option<T>`
    Option(Option<Box<WitValue>>),
    /// `result<T, E>`: the payload of either side, if that side has one.
    Result(Result<Option<Box<WitValue>>, Option<Box<WitValue>>>),
    /// `flags { … }`: the names of the flags that are set.
    Flags(Vec<String>),
    /// `map<K, V>`: key-value pairs.
    Map(Vec<(WitValue, WitValue)>),
}

impl WitValue {
    /// The kind of value, for messages (`u32`, `record`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Bool(_) => "bool",
            Self::S8(_) => "s8",
            Self::U8(_) => "u8",
            Self::S16(_) => "s16",
            Self::U16(_) => "u16",
            Self::S32(_) => "s32",
            Self::U32(_) => "u32",
            Self::S64(_) => "s64",
            Self::U64(_) => "u64",
            Self::Float32(_) => "f32",
            Self::Float64(_) => "f64",
            Self::Char(_) => "char",
            Self::String(_) => "string",
            Self::List(_) => "list",
            Self::Bytes(_) => "list<u8>",
            Self::Record(_) => "record",
            Self::Tuple(_) => "tuple",
            Self::Variant(..) => "variant",
            Self::Enum(_) => "enum",
            Self::Option(_) => "option",
            Self::Result(_) => "result",
            Self::Flags(_) => "flags",
            Self::Map(_) => "map",
        }
    }
}

/// Encodes the arguments or results of a call.
pub fn encode(values: &[WitValue]) -> Bytes {
    // Plain data always serialises.
    rmp_serde::to_vec(values).map(Bytes::from).unwrap_or_default()
}

/// Decodes the arguments or results of a call; values nested deeper than
/// [`MAX_NESTING`](crate::rpc::MAX_NESTING) arrays and maps are refused.
pub fn decode(bytes: &[u8]) -> Result<Vec<WitValue>, crate::Error> {
    crate::rpc::decode(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn every_kind_survives_the_wire() {
        let some = |v: WitValue| Some(Box::new(v));
        let values = vec![
            WitValue::Record(vec![
                ("flag".into(), WitValue::Bool(true)),
                ("ints".into(), WitValue::Tuple(vec![WitValue::S8(-8), WitValue::U8(8), WitValue::S16(-16), WitValue::U16(16)])),
                ("wide".into(), WitValue::Tuple(vec![WitValue::S32(i32::MIN), WitValue::U32(u32::MAX), WitValue::S64(i64::MIN), WitValue::U64(u64::MAX)])),
                ("floats".into(), WitValue::List(vec![WitValue::Float32(1.5), WitValue::Float64(-0.25), WitValue::Float64(f64::INFINITY)])),
                ("text".into(), WitValue::Tuple(vec![WitValue::Char('é'), WitValue::String("héllo\0".into())])),
            ]),
            WitValue::Variant("pong".into(), some(WitValue::String("HI".into()))),
            WitValue::Variant("silence".into(), None),
            WitValue::Enum("loud".into()),
            WitValue::Option(None),
            WitValue::Option(some(WitValue::Option(None))),
            WitValue::Result(Ok(None)),
            WitValue::Result(Err(some(WitValue::String("no".into())))),
            WitValue::Flags(vec!["urgent".into(), "twice".into()]),
            WitValue::Flags(vec![]),
            WitValue::Bytes(vec![0, 1, 255]),
            WitValue::Map(vec![(WitValue::String("k".into()), WitValue::List(vec![]))]),
        ];
        assert_eq!(decode(&encode(&values)).unwrap(), values);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
        assert!(decode(b"\xc1").is_err());
    }
}
