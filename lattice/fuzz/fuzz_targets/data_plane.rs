//! The data plane: arbitrary bytes decoded as a call, a reply and a body chunk (the
//! MessagePack envelopes of lattice/src/rpc.rs), as `rpc::reply_error`, as HTTP heads, as
//! WIT values (`wit_value::decode`), and those values read as key-value calls
//! (`keyvalue::Request::from_call`) and replies (`decode_results`).
//!
//! Invariants: every envelope that decodes re-encodes to bytes that decode and re-encode to
//! the same bytes; `reply_error` agrees with the reply decoder before and after; heads and
//! WIT values survive decode → encode → decode; a key-value request read from a call is
//! written back to the same interface, function and arguments it was read from, and a reply
//! read back from results is encoded to results that read back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_lattice::keyvalue::{self, Request};
use trellis_lattice::rpc::{self, WireKind};
use trellis_lattice::wit_value;

const KV_FUNCTIONS: &[(&str, &str)] = &[
    (keyvalue::STORE, "open"),
    (keyvalue::STORE, "get"),
    (keyvalue::STORE, "set"),
    (keyvalue::STORE, "delete"),
    (keyvalue::STORE, "exists"),
    (keyvalue::STORE, "list-keys"),
    (keyvalue::ATOMICS, "increment"),
    (keyvalue::BATCH, "get-many"),
    (keyvalue::BATCH, "set-many"),
    (keyvalue::BATCH, "delete-many"),
    (keyvalue::CAS, "compare-and-swap"),
    (keyvalue::STORE, "nope"),
];

fn envelope(kind: WireKind, data: &[u8]) {
    if let Some(once) = rpc::fuzz_decode_encode(kind, data) {
        let twice = rpc::fuzz_decode_encode(kind, &once).unwrap_or_else(|| panic!("our own {kind:?} encoding does not decode: {once:?}"));
        assert_eq!(once, twice, "{kind:?}: decode → encode is not stable");
    }
}

fn head<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(h) = rpc::http::decode::<T>(data) {
        let bytes = rpc::http::encode(&h);
        assert_eq!(rpc::http::decode::<T>(&bytes).ok().as_ref(), Some(&h), "an HTTP head changed on the way back");
    }
}

fuzz_target!(|data: &[u8]| {
    envelope(WireKind::Call, data);
    envelope(WireKind::Reply, data);
    envelope(WireKind::Chunk, data);
    if let Some(e) = rpc::reply_error(data) {
        let reencoded = rpc::fuzz_decode_encode(WireKind::Reply, data).expect("reply_error decoded a reply the decoder refuses");
        assert_eq!(rpc::reply_error(&reencoded), Some(e), "the error changed on the way back");
    }
    head::<rpc::http::RequestHead>(data);
    head::<rpc::http::ResponseHead>(data);

    // WIT values: the first byte picks a key-value function, the rest are its arguments.
    let Some((&pick, rest)) = data.split_first() else { return };
    for bytes in [data, rest] {
        if let Ok(values) = wit_value::decode(bytes) {
            // Floats (NaN) make values unequal to themselves: compare encodings instead.
            let once = wit_value::encode(&values);
            let again = wit_value::decode(&once).expect("our own encoding of WIT values decodes");
            assert_eq!(once, wit_value::encode(&again), "WIT values changed on the way back");
            for v in &values {
                let _ = keyvalue::byte_list(v.clone());
                let _ = keyvalue::KvError::from_wit(v.clone());
            }
        }
    }
    let Ok(args) = wit_value::decode(rest) else { return };
    let (interface, function) = KV_FUNCTIONS[usize::from(pick) % KV_FUNCTIONS.len()];
    match Request::from_call(interface, function, args.clone()) {
        Ok(req) => {
            assert_eq!((req.interface(), req.function()), (interface, function));
            let back = req.to_args();
            assert_eq!(Request::from_call(interface, function, back).ok().as_ref(), Some(&req), "a key-value request changed on the way back");
        }
        Err(message) => assert!(!message.to_string().is_empty()),
    }
    // The same values read as the results of a request of that function.
    let req = sample(usize::from(pick));
    if let Ok(outcome) = req.decode_results(args) {
        let results = req.encode_results(&outcome);
        assert_eq!(req.decode_results(results).ok(), Some(outcome), "a key-value reply changed on the way back");
    }
});

/// A request of each kind, for reading results.
fn sample(pick: usize) -> Request {
    let (bucket, key) = (String::from("b"), String::from("k"));
    let all = [
        Request::Open { bucket: bucket.clone() },
        Request::Get { bucket: bucket.clone(), key: key.clone() },
        Request::Set { bucket: bucket.clone(), key: key.clone(), value: vec![1] },
        Request::Delete { bucket: bucket.clone(), key: key.clone() },
        Request::Exists { bucket: bucket.clone(), key: key.clone() },
        Request::ListKeys { bucket: bucket.clone(), cursor: None },
        Request::Increment { bucket: bucket.clone(), key: key.clone(), delta: 1 },
        Request::GetMany { bucket: bucket.clone(), keys: vec![key.clone()] },
        Request::SetMany { bucket: bucket.clone(), items: vec![(key.clone(), vec![1])] },
        Request::DeleteMany { bucket: bucket.clone(), keys: vec![key.clone()] },
        Request::CompareAndSwap { bucket, key, expected: None, new: vec![1] },
    ];
    all[pick % all.len()].clone()
}
