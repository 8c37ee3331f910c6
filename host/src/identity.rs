//! Who a host is: its `N…` server key, a friendly name, and its labels (built-in `hostcore.*`,
//! `-l k=v` flags, `TRELLIS_LABEL_k` / `WASMCLOUD_LABEL_k` environment variables).

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::IndexedRandom;

/// Label keys under this prefix belong to the host and cannot be changed through the lattice.
pub const RESERVED_LABEL_PREFIX: &str = "hostcore.";

/// Most labels a host carries, `hostcore.*` included: labels travel in every `host.ping`
/// answer and heartbeat, so they are capped (at start and on `label.put`).
pub const MAX_LABELS: usize = 64;
/// Longest label key.
pub const MAX_LABEL_KEY_BYTES: usize = 4096;
/// Longest label value.
pub const MAX_LABEL_VALUE_BYTES: usize = 4096;
/// Most bytes of all label keys and values together.
pub const MAX_LABELS_BYTES: usize = 16 * 1024;

/// Checks one label's size.
pub fn check_label_size(key: &str, value: &str) -> Result<(), String> {
    if key.len() > MAX_LABEL_KEY_BYTES {
        return Err(format!("label key `{}…` is {} bytes long; the limit is {MAX_LABEL_KEY_BYTES}", key.chars().take(32).collect::<String>(), key.len()));
    }
    if value.len() > MAX_LABEL_VALUE_BYTES {
        return Err(format!("the value of label `{key}` is {} bytes long; the limit is {MAX_LABEL_VALUE_BYTES}", value.len()));
    }
    Ok(())
}

/// Checks that `labels` (every label the host would carry) stay within [`MAX_LABELS`] and
/// [`MAX_LABELS_BYTES`], and each within the key and value limits.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in labels {
        check_label_size(k, v)?;
    }
    if labels.len() > MAX_LABELS {
        return Err(format!("a host carries at most {MAX_LABELS} labels (`hostcore.*` included); this would make {}: remove some first", labels.len()));
    }
    let bytes: usize = labels.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_LABELS_BYTES {
        return Err(format!("a host's labels are at most {MAX_LABELS_BYTES} bytes in all (keys and values); these would be {bytes}: remove some first"));
    }
    Ok(())
}

/// A fresh host identity: the public key (`N…`) of a new server nkey.
pub fn new_host_id() -> String {
    nkeys::KeyPair::new_server().public_key()
}

/// A name people can tell apart, such as `bold-dew-8526`, as wasmCloud hosts have.
pub fn friendly_name() -> String {
    const ADJ: &[&str] = &[
        "bold", "calm", "damp", "eager", "fancy", "gentle", "hidden", "icy", "jolly", "keen", "lively", "misty", "noble", "odd", "proud", "quiet", "rapid",
        "silent", "tiny", "upbeat", "vivid", "wild", "young", "zesty",
    ];
    const NOUN: &[&str] = &[
        "dew", "field", "grove", "hill", "lake", "moon", "oak", "pine", "rain", "river", "sea", "snow", "star", "sun", "tree", "wave", "wind", "brook",
        "cloud", "dawn", "fern", "frost", "leaf", "meadow",
    ];
    let mut rng = rand::rng();
    format!("{}-{}-{:04}", ADJ.choose(&mut rng).copied().unwrap_or("bold"), NOUN.choose(&mut rng).copied().unwrap_or("dew"), rng.random_range(0..10_000))
}

/// The labels every host carries.
pub fn builtin_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("hostcore.arch".to_string(), std::env::consts::ARCH.to_string()),
        ("hostcore.os".to_string(), std::env::consts::OS.to_string()),
        ("hostcore.osfamily".to_string(), std::env::consts::FAMILY.to_string()),
    ])
}

/// Labels from `TRELLIS_LABEL_<k>=v` and `WASMCLOUD_LABEL_<k>=v` in `vars` (the key is kept as
/// written; a later `TRELLIS_` wins over `WASMCLOUD_`).
pub fn labels_from_env(vars: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    let mut wasmcloud = BTreeMap::new();
    let mut trellis = BTreeMap::new();
    for (k, v) in vars {
        if let Some(key) = k.strip_prefix("WASMCLOUD_LABEL_") {
            wasmcloud.insert(key.to_string(), v);
        } else if let Some(key) = k.strip_prefix("TRELLIS_LABEL_") {
            trellis.insert(key.to_string(), v);
        }
    }
    wasmcloud.extend(trellis);
    wasmcloud.retain(|k, _| !k.is_empty() && !k.starts_with(RESERVED_LABEL_PREFIX));
    wasmcloud
}

/// Parses a `k=v` label argument.
pub fn parse_label(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => {
            if k.starts_with(RESERVED_LABEL_PREFIX) {
                Err(format!("label `{k}` is reserved: `hostcore.*` labels are set by the host itself"))
            } else {
                Ok((k.to_string(), v.to_string()))
            }
        }
        _ => Err(format!("label `{arg}` is not of the form key=value")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn identity_shapes() {
        assert!(new_host_id().starts_with('N'));
        let name = friendly_name();
        assert_eq!(name.split('-').count(), 3, "{name}");
        assert!(builtin_labels().contains_key("hostcore.arch"));
    }

    #[test]
    fn env_labels() {
        let vars = [
            ("WASMCLOUD_LABEL_zone".to_string(), "edge".to_string()),
            ("TRELLIS_LABEL_zone".to_string(), "cloud".to_string()),
            ("TRELLIS_LABEL_hostcore.os".to_string(), "x".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
        ];
        let labels = labels_from_env(vars);
        assert_eq!(labels.len(), 1);
        assert_eq!(labels["zone"], "cloud");
        assert!(parse_label("a=b=c").is_ok_and(|(k, v)| k == "a" && v == "b=c"));
        assert!(parse_label("hostcore.os=x").is_err());
        assert!(parse_label("novalue").is_err());
    }

    #[test]
    fn label_caps() {
        let mut labels = builtin_labels();
        assert!(check_labels(&labels).is_ok());
        labels.insert("big".into(), "v".repeat(MAX_LABEL_VALUE_BYTES + 1));
        assert!(check_labels(&labels).unwrap_err().contains("label `big`"));
        labels.remove("big");
        labels.extend((0..MAX_LABELS).map(|i| (format!("k{i}"), String::new())));
        assert!(check_labels(&labels).unwrap_err().contains("at most 64 labels"));
        let mut labels: BTreeMap<String, String> = (0..5).map(|i| (format!("k{i}"), "v".repeat(4000))).collect();
        assert!(check_labels(&labels).unwrap_err().contains("16384 bytes"));
        labels.clear();
        assert!(check_labels(&labels).is_ok());
    }
}
