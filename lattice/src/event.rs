//! Lattice events: CloudEvents 1.0 JSON on `wasmbus.evt.{lattice}.{name}`, with the data fields
//! of wasmCloud 1.x. Each data type knows its event name through [`EventData`].

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::ctl::{HostInventory, Link, Schedule, StringMap};
use crate::{Error, ErrorKind};

/// Data carried by one kind of event.
pub trait EventData: Serialize + DeserializeOwned {
    /// The event name: the last subject token and the suffix of the CloudEvent type.
    const NAME: &'static str;
}

/// The CloudEvents 1.0 envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CloudEvent {
    /// Always `1.0`.
    pub specversion: String,
    /// A unique id.
    pub id: String,
    /// The publishing host's id.
    pub source: String,
    /// `com.wasmcloud.lattice.{event_name}`.
    #[serde(rename = "type")]
    pub ty: String,
    /// RFC 3339 time of publication.
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The event's data.
    pub data: serde_json::Value,
}

/// The CloudEvent type prefix.
pub const TYPE_PREFIX: &str = "com.wasmcloud.lattice.";

impl CloudEvent {
    /// Wraps `data` as published by `source` now.
    pub fn new<T: EventData>(source: &str, data: &T) -> Result<Self, Error> {
        let data = serde_json::to_value(data).map_err(|e| Error::new(ErrorKind::Malformed, format!("cannot encode {} event", T::NAME)).with_source(e))?;
        let time = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        Ok(Self {
            specversion: "1.0".into(),
            id: uuid::Uuid::new_v4().to_string(),
            source: source.into(),
            ty: format!("{TYPE_PREFIX}{}", T::NAME),
            time,
            datacontenttype: "application/json".into(),
            data,
        })
    }

    /// Parses an event off the wire.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        serde_json::from_slice(bytes).map_err(|e| Error::new(ErrorKind::Malformed, "an event on the bus is not a CloudEvent").with_source(e))
    }

    /// The event name (`host_started`, …).
    pub fn name(&self) -> &str {
        self.ty.strip_prefix(TYPE_PREFIX).unwrap_or(&self.ty)
    }

    /// The data as `T`, if this event is a `T`.
    pub fn data_as<T: EventData>(&self) -> Option<T> {
        (self.name() == T::NAME).then(|| serde_json::from_value(self.data.clone()).ok()).flatten()
    }
}

macro_rules! event {
    ($(#[$doc:meta])* $ty:ident = $name:literal { $($(#[$fdoc:meta])* $field:ident : $fty:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
        pub struct $ty { $($(#[$fdoc])* #[serde(default)] pub $field: $fty),* }
        impl EventData for $ty { const NAME: &'static str = $name; }
    };
}

event!(
    /// A host joined the lattice.
    HostStarted = "host_started" {
        /// Its friendly name.
        friendly_name: String,
        /// Its labels.
        labels: StringMap,
        /// Uptime (0 or close).
        uptime_seconds: u64,
        /// Its version.
        version: String,
    }
);
event!(
    /// A host left in order (host.stop, SIGINT, SIGTERM).
    HostStopped = "host_stopped" {
        /// Its labels.
        labels: StringMap,
    }
);
event!(
    /// A component now runs with `max_instances` (0: stopped).
    ComponentScaled = "component_scaled" {
        /// The component's own key, if signed.
        public_key: Option<String>,
        /// Its claims, if signed.
        claims: Option<StringMap>,
        /// Its annotations.
        annotations: StringMap,
        /// The host.
        host_id: String,
        /// The reference it runs from, as the request gave it.
        image_ref: String,
        /// What the reference resolved to (`sha256:…`: the OCI manifest's digest, the lattice
        /// store's, or a file's SHA-256); a Trellis addition.
        image_digest: Option<String>,
        /// The concurrency limit now in force; 0 when stopped.
        max_instances: u32,
        /// The component id.
        component_id: String,
    }
);
/// Scaling a component failed: what `component_scaled` would have carried for the request
/// (the requested reference and limit; no claims), plus `error`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ComponentScaleFailed {
    /// The request, in `component_scaled`'s fields.
    #[serde(flatten)]
    pub scaled: ComponentScaled,
    /// What went wrong.
    #[serde(default)]
    pub error: String,
}
impl EventData for ComponentScaleFailed {
    const NAME: &'static str = "component_scale_failed";
}

event!(
    /// A provider started.
    ProviderStarted = "provider_started" {
        /// The host.
        host_id: String,
        /// The reference it runs from.
        image_ref: String,
        /// The provider id.
        provider_id: String,
        /// Its annotations.
        annotations: StringMap,
        /// Its claims, if any.
        claims: Option<StringMap>,
        /// This run's instance id.
        instance_id: String,
    }
);
event!(
    /// A provider could not start.
    ProviderStartFailed = "provider_start_failed" {
        /// The requested reference.
        provider_ref: String,
        /// The provider id.
        provider_id: String,
        /// The host.
        host_id: String,
        /// What went wrong.
        error: String,
    }
);
event!(
    /// A provider stopped.
    ProviderStopped = "provider_stopped" {
        /// The host.
        host_id: String,
        /// The provider id.
        provider_id: String,
        /// Its annotations.
        annotations: StringMap,
        /// Why (`stop`, `exited`, …).
        reason: String,
    }
);
event!(
    /// A provider health check passed.
    HealthCheckPassed = "health_check_passed" {
        /// The host.
        host_id: String,
        /// The provider id.
        provider_id: String,
    }
);
event!(
    /// A provider health check failed.
    HealthCheckFailed = "health_check_failed" {
        /// The host.
        host_id: String,
        /// The provider id.
        provider_id: String,
    }
);
event!(
    /// A provider's health, unchanged since the last check.
    HealthCheckStatus = "health_check_status" {
        /// The host.
        host_id: String,
        /// The provider id.
        provider_id: String,
    }
);
event!(
    /// A link was deleted (sent even when nothing existed).
    LinkdefDeleted = "linkdef_deleted" {
        /// The source.
        source_id: String,
        /// The link name.
        name: String,
        /// The WIT namespace.
        wit_namespace: String,
        /// The WIT package.
        wit_package: String,
        /// The target, when one link was deleted.
        target: Option<String>,
    }
);
event!(
    /// Named config was written.
    ConfigSet = "config_set" {
        /// The config's name.
        config_name: String,
    }
);
event!(
    /// Named config was deleted.
    ConfigDeleted = "config_deleted" {
        /// The config's name.
        config_name: String,
    }
);
event!(
    /// A host's labels changed.
    LabelsChanged = "labels_changed" {
        /// The host.
        host_id: String,
        /// All its labels now.
        labels: StringMap,
    }
);

event!(
    /// A host's scheduling state changed (Trellis' extension: `host.cordon|uncordon|drain`, a
    /// draining host becoming drained, or a cordon restored from the state directory at start).
    HostScheduleChanged = "host_schedule_changed" {
        /// The host.
        host_id: String,
        /// The state before.
        previous: Schedule,
        /// The state now.
        schedule: Schedule,
    }
);

/// The periodic heartbeat: the host's whole inventory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(transparent)]
pub struct HostHeartbeat(pub HostInventory);
impl EventData for HostHeartbeat {
    const NAME: &'static str = "host_heartbeat";
}

/// A link was put.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct LinkdefSet(pub Link);
impl EventData for LinkdefSet {
    const NAME: &'static str = "linkdef_set";
}

/// A link put was refused: the link plus `error`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkdefSetFailed {
    /// The refused link.
    #[serde(flatten)]
    pub link: Link,
    /// Why it was refused.
    pub error: String,
}
impl EventData for LinkdefSetFailed {
    const NAME: &'static str = "linkdef_set_failed";
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn envelope_has_cloudevents_fields() {
        let ev = CloudEvent::new("NHOST", &HostStopped { labels: [("a".into(), "b".into())].into() }).unwrap();
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["type"], "com.wasmcloud.lattice.host_stopped");
        assert_eq!(v["source"], "NHOST");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["data"], json!({"labels": {"a": "b"}}));
        assert!(time::OffsetDateTime::parse(v["time"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).is_ok());
        let back = CloudEvent::from_slice(&serde_json::to_vec(&ev).unwrap()).unwrap();
        assert_eq!(back.name(), "host_stopped");
        assert!(back.data_as::<HostStopped>().is_some());
        assert!(back.data_as::<HostStarted>().is_none());
    }

    #[test]
    fn scaled_and_failed_field_names() {
        let d = ComponentScaleFailed { scaled: ComponentScaled { component_id: "c".into(), ..Default::default() }, error: "bad".into() };
        let v = serde_json::to_value(&d).unwrap();
        for f in ["public_key", "claims", "annotations", "host_id", "image_ref", "max_instances", "component_id", "error"] {
            assert!(v.get(f).is_some(), "missing {f}");
        }
        assert_eq!(serde_json::from_value::<ComponentScaleFailed>(v).unwrap(), d);
        let set_failed = LinkdefSetFailed {
            link: serde_json::from_value(json!({"source_id":"a","target":"b","wit_namespace":"w","wit_package":"p"})).unwrap(),
            error: "conflict".into(),
        };
        let v = serde_json::to_value(set_failed).unwrap();
        assert_eq!(v["source_id"], "a");
        assert_eq!(v["error"], "conflict");
    }
}
