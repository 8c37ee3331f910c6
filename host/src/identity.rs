//! Who a host is: its `N…` server key, a friendly name, and its labels (built-in `hostcore.*`,
//! `-l k=v` flags, `TRELLIS_LABEL_k` / `WASMCLOUD_LABEL_k` environment variables).

use std::collections::BTreeMap;

use rand::Rng;
use rand::seq::IndexedRandom;

/// Label keys under this prefix belong to the host and cannot be changed through the lattice.
pub const RESERVED_LABEL_PREFIX: &str = "hostcore.";

/// Whether `key` is a reserved (`hostcore.*`) label key, in any letter case: `HOSTCORE.os` is
/// as reserved as `hostcore.os`.
pub fn is_reserved_label(key: &str) -> bool {
    key.get(..RESERVED_LABEL_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_LABEL_PREFIX))
}

/// Whether `c` may not stand in an id, label or name: a control character (C0, DEL, C1) or a
/// bidirectional override or isolate, any of which can rewrite what a terminal shows.
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Refuses text with a [`is_forbidden_char`], naming `field` and the character (as `U+001B`)
/// and where it is, never echoing the text raw.
pub fn check_text(field: &str, value: &str) -> Result<(), String> {
    match value.char_indices().find(|(_, c)| is_forbidden_char(*c)) {
        Some((at, c)) => {
            Err(format!("{field} `{}` contains the control character U+{:04X} at byte {at}; use printable characters only", value.escape_debug(), c as u32))
        }
        None => Ok(()),
    }
}

/// Checks a label for a host to carry: a non-empty key, not reserved, and no control character
/// in key or value.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("a label key must not be empty".into());
    }
    check_text("label key", key)?;
    check_text(&format!("the value of label `{key}`"), value)?;
    if is_reserved_label(key) {
        return Err(format!("label `{key}` is reserved: `{RESERVED_LABEL_PREFIX}*` labels (in any letter case) are set by the host itself"));
    }
    Ok(())
}

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
    wasmcloud.retain(|k, _| !k.is_empty() && !is_reserved_label(k));
    wasmcloud
}

/// Parses a `k=v` label argument.
pub fn parse_label(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => {
            check_label(k, v)?;
            Ok((k.to_string(), v.to_string()))
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
        assert!(parse_label("HOSTCORE.os=x").is_err(), "reserved in any case");
        assert!(parse_label("HostCore.arch=x").is_err());
        assert!(parse_label("hostcorex=x").is_ok());
        assert!(!labels_from_env([("TRELLIS_LABEL_HOSTCORE.os".to_string(), "x".to_string())]).contains_key("HOSTCORE.os"));
    }

    #[test]
    fn control_characters_are_refused_by_name() {
        let err = parse_label("zone=\u{1b}[2J").unwrap_err();
        assert!(err.contains("the value of label `zone`") && err.contains("U+001B"), "{err}");
        assert!(!err.contains('\u{1b}'), "the error echoes no raw escape: {err:?}");
        let err = check_label("a\nb", "v").unwrap_err();
        assert!(err.contains("label key `a\\nb`") && err.contains("U+000A"), "{err}");
        assert!(check_label("k", "\u{202e}evil").is_err());
        assert!(check_label("k", "\u{9b}").is_err(), "C1 controls too");
        assert!(check_label("zone", "édge 東京").is_ok(), "printable Unicode is fine");
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
