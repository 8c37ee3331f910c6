//! `wasmcloud:messaging@0.2.0` on the data plane.
//!
//! Messaging travels like any linked call (see [`crate::wit_value`]): the interface and
//! function name the WIT function, the head carries its arguments and results as WIT values.
//! Two directions, two interfaces:
//!
//! - [`CONSUMER`]: a component calls its messaging provider (the link's target):
//!   `request(subject, body, timeout-ms) -> result<broker-message, string>` and
//!   `publish(msg: broker-message) -> result<_, string>`. [`ConsumerCall`] is the typed call,
//!   [`ConsumerCall::encode_results`] / [`ConsumerCall::decode_results`] its results.
//! - [`HANDLER`]: the provider delivers a message to a component (the link's source is the
//!   provider): `handle-message(msg: broker-message) -> result<_, string>`, see
//!   [`handle_message_args`], [`handle_message_from_args`], [`encode_handled`] and
//!   [`decode_handled`].
//!
//! A `broker-message` is the record `{subject: string, body: list<u8>, reply-to:
//! option<string>}`, field names in kebab-case as in WIT ([`BrokerMessage`]). A broker's
//! failure (no responders, a timeout, a payload too large) is the `string` of the error side
//! of the WIT result, not a data-plane error: the component sees it as a value.

use crate::keyvalue::{byte_list, bytes};
use crate::wit_value::WitValue;
use crate::{Error, malformed};

/// `wasmcloud:messaging/consumer`: components call the provider.
pub const CONSUMER: &str = "wasmcloud:messaging/consumer";
/// `wasmcloud:messaging/handler`: the provider calls components.
pub const HANDLER: &str = "wasmcloud:messaging/handler";
/// The WIT namespace of both interfaces, as links name it.
pub const NAMESPACE: &str = "wasmcloud";
/// The WIT package of both interfaces, as links name it.
pub const PACKAGE: &str = "messaging";
/// The interface name of [`CONSUMER`] in a link (`--interface consumer`).
pub const CONSUMER_INTERFACE: &str = "consumer";
/// The interface name of [`HANDLER`] in a link (`--interface handler`).
pub const HANDLER_INTERFACE: &str = "handler";
/// `consumer.request`
pub const REQUEST: &str = "request";
/// `consumer.publish`
pub const PUBLISH: &str = "publish";
/// `handler.handle-message`
pub const HANDLE_MESSAGE: &str = "handle-message";

/// The WIT `broker-message`: a message sent to or received from a broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BrokerMessage {
    /// The subject.
    pub subject: String,
    /// The payload.
    pub body: Vec<u8>,
    /// Where an answer goes, if one is expected.
    pub reply_to: Option<String>,
}

impl BrokerMessage {
    /// As the WIT record.
    pub fn to_wit(&self) -> WitValue {
        WitValue::Record(vec![
            ("subject".into(), WitValue::String(self.subject.clone())),
            ("body".into(), bytes(&self.body)),
            ("reply-to".into(), WitValue::Option(self.reply_to.as_ref().map(|r| Box::new(WitValue::String(r.clone()))))),
        ])
    }

    /// From the WIT record (fields in any order); the error says which field is missing,
    /// unknown or of the wrong kind.
    pub fn from_wit(v: WitValue) -> Result<Self, Error> {
        let WitValue::Record(fields) = v else {
            return Err(malformed(format!("a broker-message must be a record, not {}", a(v.kind()))));
        };
        let (mut subject, mut body, mut reply_to) = (None, None, None);
        for (name, value) in fields {
            let kind = a(value.kind());
            let wrong = |expected: &str| malformed(format!("broker-message field `{name}` must be {}, not {kind}", a(expected)));
            match name.as_str() {
                "subject" => match value {
                    WitValue::String(s) => subject = Some(s),
                    _ => return Err(wrong("string")),
                },
                "body" => body = Some(byte_list(value).ok_or_else(|| wrong("list<u8>"))?),
                "reply-to" => match value {
                    WitValue::Option(None) => reply_to = Some(None),
                    WitValue::Option(Some(s)) => match *s {
                        WitValue::String(s) => reply_to = Some(Some(s)),
                        _ => return Err(wrong("option<string>")),
                    },
                    _ => return Err(wrong("option<string>")),
                },
                _ => return Err(malformed(format!("a broker-message has no field `{name}` (it has subject, body, reply-to)"))),
            }
        }
        let missing = |field: &str| malformed(format!("the broker-message has no field `{field}`"));
        Ok(Self {
            subject: subject.ok_or_else(|| missing("subject"))?,
            body: body.ok_or_else(|| missing("body"))?,
            reply_to: reply_to.ok_or_else(|| missing("reply-to"))?,
        })
    }
}

/// One call of a component to `wasmcloud:messaging/consumer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerCall {
    /// `request`: publishes `body` to `subject` and waits up to `timeout_ms` for one reply.
    Request {
        /// Where the request goes.
        subject: String,
        /// The payload.
        body: Vec<u8>,
        /// How long to wait for the reply.
        timeout_ms: u32,
    },
    /// `publish`: sends a message without waiting (with its `reply-to` as the reply subject).
    Publish(BrokerMessage),
}

/// What a [`ConsumerCall`] returns when it succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerReply {
    /// `request`: the reply.
    Message(BrokerMessage),
    /// `publish`: sent.
    Published,
}

/// A consumer call's outcome: the error is the WIT `string`, said in words (subject and cause).
pub type ConsumerResult = Result<ConsumerReply, String>;

impl ConsumerCall {
    /// The function name the call travels under.
    pub fn function(&self) -> &'static str {
        match self {
            Self::Request { .. } => REQUEST,
            Self::Publish(_) => PUBLISH,
        }
    }

    /// The subject the call publishes to.
    pub fn subject(&self) -> &str {
        match self {
            Self::Request { subject, .. } => subject,
            Self::Publish(m) => &m.subject,
        }
    }

    /// The arguments on the wire.
    pub fn to_args(&self) -> Vec<WitValue> {
        match self {
            Self::Request { subject, body, timeout_ms } => vec![WitValue::String(subject.clone()), bytes(body), WitValue::U32(*timeout_ms)],
            Self::Publish(m) => vec![m.to_wit()],
        }
    }

    /// Reads a call of `function` back; the error says what did not fit.
    pub fn from_call(function: &str, args: Vec<WitValue>) -> Result<Self, Error> {
        let what = format!("{CONSUMER}.{function}");
        let n = args.len();
        let mut args = args.into_iter();
        let call = match function {
            REQUEST => {
                let mut next = |name: &str| args.next().ok_or_else(|| malformed(format!("{what}: the argument `{name}` is missing")));
                let subject = match next("subject")? {
                    WitValue::String(s) => s,
                    other => return Err(malformed(format!("{what}: `subject` must be a string, not a {}", other.kind()))),
                };
                let body = next("body")?;
                let kind = body.kind();
                let body = byte_list(body).ok_or_else(|| malformed(format!("{what}: `body` must be a list<u8>, not a {kind}")))?;
                let timeout_ms = match next("timeout-ms")? {
                    WitValue::U32(t) => t,
                    other => return Err(malformed(format!("{what}: `timeout-ms` must be a u32, not a {}", other.kind()))),
                };
                Self::Request { subject, body, timeout_ms }
            }
            PUBLISH => {
                let msg = args.next().ok_or_else(|| malformed(format!("{what}: the argument `msg` is missing")))?;
                Self::Publish(BrokerMessage::from_wit(msg).map_err(|e| malformed(format!("{what}: `msg`: {e}")))?)
            }
            other => return Err(malformed(format!("`{other}` is not a function of {CONSUMER} (it has {REQUEST}, {PUBLISH})"))),
        };
        if args.next().is_some() {
            return Err(malformed(format!("{what}: too many arguments ({n})")));
        }
        Ok(call)
    }

    /// The results on the wire for `outcome`: one WIT `result`, shaped as this call's
    /// function returns it.
    pub fn encode_results(&self, outcome: &ConsumerResult) -> Vec<WitValue> {
        vec![match outcome {
            Err(e) => err_string(e),
            Ok(ConsumerReply::Message(m)) => WitValue::Result(Ok(Some(Box::new(m.to_wit())))),
            Ok(ConsumerReply::Published) => WitValue::Result(Ok(None)),
        }]
    }

    /// Reads the results of this call back; the error says what did not fit.
    pub fn decode_results(&self, results: Vec<WitValue>) -> Result<ConsumerResult, Error> {
        let bad = || malformed(format!("the reply to {CONSUMER}.{} does not have the shape its WIT function returns", self.function()));
        let mut results = results.into_iter();
        let (Some(WitValue::Result(r)), None) = (results.next(), results.next()) else { return Err(bad()) };
        match (self, r) {
            (_, Err(e)) => Ok(Err(error_string(e).ok_or_else(bad)?)),
            (Self::Request { .. }, Ok(Some(m))) => {
                Ok(Ok(ConsumerReply::Message(BrokerMessage::from_wit(*m).map_err(|e| malformed(format!("{}: {e}", bad())))?)))
            }
            (Self::Publish(_), Ok(None)) => Ok(Ok(ConsumerReply::Published)),
            _ => Err(bad()),
        }
    }
}

/// The arguments of `handler.handle-message` for `msg`.
pub fn handle_message_args(msg: &BrokerMessage) -> Vec<WitValue> {
    vec![msg.to_wit()]
}

/// Reads the arguments of `handler.handle-message` back.
pub fn handle_message_from_args(args: Vec<WitValue>) -> Result<BrokerMessage, Error> {
    let what = format!("{HANDLER}.{HANDLE_MESSAGE}");
    let mut args = args.into_iter();
    let (Some(msg), None) = (args.next(), args.next()) else {
        return Err(malformed(format!("{what} takes exactly one argument, `msg`")));
    };
    BrokerMessage::from_wit(msg).map_err(|e| malformed(format!("{what}: `msg`: {e}")))
}

/// The results of `handler.handle-message` on the wire.
pub fn encode_handled(outcome: &Result<(), String>) -> Vec<WitValue> {
    vec![match outcome {
        Ok(()) => WitValue::Result(Ok(None)),
        Err(e) => err_string(e),
    }]
}

/// Reads the results of `handler.handle-message`: `Ok(Err(_))` is the component's own error.
pub fn decode_handled(results: Vec<WitValue>) -> Result<Result<(), String>, Error> {
    let bad = || malformed(format!("the reply to {HANDLER}.{HANDLE_MESSAGE} is not the result<_, string> its WIT function returns"));
    let mut results = results.into_iter();
    match (results.next(), results.next()) {
        (Some(WitValue::Result(Ok(None))), None) => Ok(Ok(())),
        (Some(WitValue::Result(Err(e))), None) => Ok(Err(error_string(e).ok_or_else(bad)?)),
        _ => Err(bad()),
    }
}

/// `kind` with its indefinite article, for messages.
fn a(kind: &str) -> String {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) { format!("an {kind}") } else { format!("a {kind}") }
}

fn err_string(e: &str) -> WitValue {
    WitValue::Result(Err(Some(Box::new(WitValue::String(e.to_string())))))
}

fn error_string(e: Option<Box<WitValue>>) -> Option<String> {
    match e.map(|e| *e) {
        Some(WitValue::String(s)) => Some(s),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::wit_value;

    fn wire(values: &[WitValue]) -> Vec<WitValue> {
        wit_value::decode(&wit_value::encode(values)).unwrap()
    }

    fn msg(body: &[u8], reply_to: Option<&str>) -> BrokerMessage {
        BrokerMessage { subject: "orders.new".into(), body: body.to_vec(), reply_to: reply_to.map(str::to_string) }
    }

    #[test]
    fn broker_messages_survive_the_wire() {
        for m in [msg(b"hello", Some("_INBOX.x")), msg(b"", None), msg(&[0, 255, 10], None)] {
            let back = wire(&[m.to_wit()]).pop().unwrap();
            assert_eq!(BrokerMessage::from_wit(back).unwrap(), m);
        }
        // Field names are WIT's, in declaration order; an empty body is a plain empty list.
        let WitValue::Record(fields) = msg(b"", None).to_wit() else { panic!("not a record") };
        assert_eq!(fields.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["subject", "body", "reply-to"]);
        assert_eq!(fields[1].1, WitValue::List(vec![]));
        // Any field order, and a body as a list of u8 values (as a generic sender may write it).
        let reordered = WitValue::Record(vec![
            ("reply-to".into(), WitValue::Option(None)),
            ("body".into(), WitValue::List(vec![WitValue::U8(104), WitValue::U8(105)])),
            ("subject".into(), WitValue::String("orders.new".into())),
        ]);
        assert_eq!(BrokerMessage::from_wit(reordered).unwrap(), msg(b"hi", None));
    }

    #[test]
    fn consumer_calls_and_results_survive_the_wire() {
        let cases = [
            (ConsumerCall::Request { subject: "svc.time".into(), body: b"now?".to_vec(), timeout_ms: 1500 }, Ok(ConsumerReply::Message(msg(b"12:00", None)))),
            (ConsumerCall::Request { subject: "svc.time".into(), body: vec![], timeout_ms: 0 }, Err("request to `svc.time` failed: no responders".to_string())),
            (ConsumerCall::Publish(msg(b"x", Some("replies"))), Ok(ConsumerReply::Published)),
            (ConsumerCall::Publish(msg(b"", None)), Err("publish to `orders.new` failed: too large".to_string())),
        ];
        for (call, outcome) in cases {
            let args = wire(&call.to_args());
            let back = ConsumerCall::from_call(call.function(), args).unwrap();
            assert_eq!(back, call);
            let results = wire(&call.encode_results(&outcome));
            assert_eq!(call.decode_results(results).unwrap(), outcome, "{call:?}");
        }
        assert_eq!(ConsumerCall::Publish(msg(b"", None)).subject(), "orders.new");
    }

    #[test]
    fn handler_calls_and_results_survive_the_wire() {
        let m = msg(b"ping", Some("_INBOX.1"));
        assert_eq!(handle_message_from_args(wire(&handle_message_args(&m))).unwrap(), m);
        for outcome in [Ok(()), Err("cannot parse the order".to_string())] {
            assert_eq!(decode_handled(wire(&encode_handled(&outcome))).unwrap(), outcome);
        }
    }

    #[test]
    fn malformed_calls_say_what_is_wrong() {
        let s = |v: &str| WitValue::String(v.into());
        let err = |function: &str, args: Vec<WitValue>| ConsumerCall::from_call(function, args).unwrap_err().to_string();

        let e = err(REQUEST, vec![s("a"), bytes(b"b")]);
        assert!(e.contains("wasmcloud:messaging/consumer.request: the argument `timeout-ms` is missing"), "{e}");
        let e = err(REQUEST, vec![s("a"), bytes(b"b"), WitValue::U64(5)]);
        assert!(e.contains("`timeout-ms` must be a u32, not a u64"), "{e}");
        let e = err(REQUEST, vec![s("a"), s("b"), WitValue::U32(5)]);
        assert!(e.contains("`body` must be a list<u8>, not a string"), "{e}");
        let e = err(REQUEST, vec![WitValue::U8(1), bytes(b"b"), WitValue::U32(5)]);
        assert!(e.contains("`subject` must be a string, not a u8"), "{e}");
        let e = err(REQUEST, vec![s("a"), bytes(b"b"), WitValue::U32(5), s("extra")]);
        assert!(e.contains("too many arguments"), "{e}");
        let e = err(REQUEST, vec![s("a"), WitValue::List(vec![WitValue::U16(1)]), WitValue::U32(5)]);
        assert!(e.contains("`body` must be a list<u8>"), "{e}");
        let e = err("subscribe", vec![]);
        assert!(e.contains("`subscribe` is not a function of wasmcloud:messaging/consumer"), "{e}");
        let e = err(PUBLISH, vec![]);
        assert!(e.contains("the argument `msg` is missing"), "{e}");
        let e = err(PUBLISH, vec![s("a")]);
        assert!(e.contains("a broker-message must be a record, not a string"), "{e}");

        let record = |fields: Vec<(&str, WitValue)>| WitValue::Record(fields.into_iter().map(|(n, v)| (n.to_string(), v)).collect());
        let e = err(PUBLISH, vec![record(vec![("subject", s("a")), ("body", bytes(b"b"))])]);
        assert!(e.contains("no field `reply-to`"), "{e}");
        let e = err(PUBLISH, vec![record(vec![("subject", s("a")), ("body", bytes(b"b")), ("reply_to", WitValue::Option(None))])]);
        assert!(e.contains("has no field `reply_to` (it has subject, body, reply-to)"), "{e}");
        let e = err(PUBLISH, vec![record(vec![("subject", s("a")), ("body", bytes(b"b")), ("reply-to", s("r"))])]);
        assert!(e.contains("field `reply-to` must be an option<string>, not a string"), "{e}");
        let e = err(PUBLISH, vec![record(vec![("subject", s("a")), ("body", bytes(b"b")), ("reply-to", WitValue::Option(Some(Box::new(WitValue::U8(1)))))])]);
        assert!(e.contains("field `reply-to` must be an option<string>, not an option"), "{e}");
        let e = err(PUBLISH, vec![record(vec![("subject", WitValue::Bool(true)), ("body", bytes(b"b")), ("reply-to", WitValue::Option(None))])]);
        assert!(e.contains("field `subject` must be a string, not a bool"), "{e}");

        let e = handle_message_from_args(vec![]).unwrap_err().to_string();
        assert!(e.contains("takes exactly one argument"), "{e}");
        let e = handle_message_from_args(vec![msg(b"", None).to_wit(), s("x")]).unwrap_err().to_string();
        assert!(e.contains("takes exactly one argument"), "{e}");

        // Results of the wrong shape.
        let request = ConsumerCall::Request { subject: "a".into(), body: vec![], timeout_ms: 1 };
        let publish = ConsumerCall::Publish(msg(b"", None));
        assert!(request.decode_results(vec![]).is_err());
        assert!(request.decode_results(vec![WitValue::Result(Ok(None))]).is_err());
        assert!(request.decode_results(vec![WitValue::Result(Ok(Some(Box::new(s("no")))))]).is_err());
        assert!(request.decode_results(vec![WitValue::Result(Err(None))]).is_err());
        assert!(publish.decode_results(vec![WitValue::Result(Ok(Some(Box::new(msg(b"", None).to_wit()))))]).is_err());
        assert!(publish.decode_results(vec![WitValue::Result(Ok(None)), WitValue::Bool(true)]).is_err());
        assert!(publish.decode_results(vec![WitValue::Bool(true)]).is_err());
        assert!(decode_handled(vec![WitValue::Result(Ok(Some(Box::new(s("x")))))]).is_err());
        assert!(decode_handled(vec![WitValue::Result(Err(Some(Box::new(WitValue::U8(1)))))]).is_err());
        assert!(decode_handled(vec![]).is_err());
    }
}
