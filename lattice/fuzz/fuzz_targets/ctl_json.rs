//! The control plane and the event bus: every control request (and reply) type, the CloudEvent
//! envelope and every event's data, parsed from arbitrary bytes with serde_json as the host
//! and the client parse them; control subjects parsed from arbitrary text.
//!
//! Invariants: whatever parses encodes, and the encoding parses back to an equal value that
//! encodes to the same bytes (decode → encode → decode is stable); a subject that parses is
//! formatted back to exactly itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis_lattice::ctl::*;
use trellis_lattice::event::*;
use trellis_lattice::subject::CtlSubjects;

/// decode → encode → decode → encode: equal values, equal bytes.
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<T> {
    let first: T = serde_json::from_slice(data).ok()?;
    let json = serde_json::to_vec(&first).expect("a parsed value encodes");
    let second: T = serde_json::from_slice(&json).unwrap_or_else(|e| panic!("our own encoding does not parse ({e}): {}", String::from_utf8_lossy(&json)));
    assert_eq!(first, second, "decode → encode → decode changed the value; JSON {}", String::from_utf8_lossy(&json));
    assert_eq!(json, serde_json::to_vec(&second).expect("encodes"), "encoding is not stable");
    Some(first)
}

/// The data of every event, both as the data of a CloudEvent and on its own.
fn events(ev: &CloudEvent) {
    fn one<T: EventData + PartialEq + std::fmt::Debug>(ev: &CloudEvent) {
        if let Some(d) = ev.data_as::<T>() {
            assert_eq!(ev.name(), T::NAME);
            let back = CloudEvent::new(&ev.source, &d).expect("event data encodes");
            assert_eq!(back.name(), T::NAME);
            assert_eq!(back.data_as::<T>().as_ref(), Some(&d), "event data changed on the way back");
        }
    }
    one::<HostStarted>(ev);
    one::<HostStopped>(ev);
    one::<ComponentScaled>(ev);
    one::<ComponentScaleFailed>(ev);
    one::<ProviderStarted>(ev);
    one::<ProviderStartFailed>(ev);
    one::<ProviderStopped>(ev);
    one::<HealthCheckPassed>(ev);
    one::<HealthCheckFailed>(ev);
    one::<HealthCheckStatus>(ev);
    one::<LinkdefDeleted>(ev);
    one::<ConfigSet>(ev);
    one::<ConfigDeleted>(ev);
    one::<LabelsChanged>(ev);
    one::<HostHeartbeat>(ev);
    one::<LinkdefSet>(ev);
    one::<LinkdefSetFailed>(ev);
}

fuzz_target!(|data: &[u8]| {
    // Requests, as host/src/ctl.rs parses them.
    round_trip::<StopHostCommand>(data);
    round_trip::<ComponentAuctionRequest>(data);
    round_trip::<ProviderAuctionRequest>(data);
    round_trip::<ScaleComponentCommand>(data);
    round_trip::<UpdateComponentCommand>(data);
    round_trip::<StartProviderCommand>(data);
    round_trip::<StopProviderCommand>(data);
    round_trip::<HostLabel>(data);
    round_trip::<HostLabelIdentifier>(data);
    round_trip::<Link>(data);
    round_trip::<DeleteLinkRequest>(data);
    round_trip::<StringMap>(data); // config.put
    // Replies, as the client parses them.
    round_trip::<CtlResponse<()>>(data);
    round_trip::<CtlResponse<Host>>(data);
    round_trip::<CtlResponse<HostInventory>>(data);
    round_trip::<CtlResponse<ComponentAuctionAck>>(data);
    round_trip::<CtlResponse<ProviderAuctionAck>>(data);
    round_trip::<CtlResponse<Vec<Link>>>(data);
    round_trip::<CtlResponse<Vec<StringMap>>>(data);
    round_trip::<CtlResponse<StringMap>>(data);
    // Events: the envelope, then each event's data inside it and alone.
    if let Ok(ev) = CloudEvent::from_slice(data) {
        let json = serde_json::to_vec(&ev).expect("an event encodes");
        let again = CloudEvent::from_slice(&json).expect("our own event encoding parses");
        assert_eq!(again, ev, "the event changed on the way back");
        events(&ev);
    }
    round_trip::<HostStarted>(data);
    round_trip::<ComponentScaled>(data);
    round_trip::<ComponentScaleFailed>(data);
    round_trip::<ProviderStarted>(data);
    round_trip::<ProviderStartFailed>(data);
    round_trip::<LinkdefDeleted>(data);
    round_trip::<LabelsChanged>(data);
    round_trip::<HostHeartbeat>(data);
    round_trip::<LinkdefSetFailed>(data);
    // Subjects, as the host's control server parses them.
    if let Ok(text) = std::str::from_utf8(data) {
        let subjects = CtlSubjects::new("default");
        let _ = subjects.parse(text);
        let subject = format!("wasmbus.ctl.v1.default.{text}");
        if let Ok(op) = subjects.parse(&subject) {
            assert_eq!(subjects.subject(&op), subject, "a parsed subject formats back differently");
        }
    }
});
