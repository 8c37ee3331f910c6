//! The state plane: JetStream KV buckets and their keys.
//!
//! Bucket names follow wasmCloud (`LATTICEDATA_{lattice}`, `CONFIGDATA_{lattice}`). Links are
//! stored one key per link so that writers of different links never overwrite each other, and
//! each write is a compare-and-set on that key's revision.

use crate::ctl::Link;

/// The bucket holding links and claims of `lattice`.
pub fn lattice_bucket(lattice: &str) -> String {
    format!("LATTICEDATA_{lattice}")
}

/// The bucket holding named config of `lattice`.
pub fn config_bucket(lattice: &str) -> String {
    format!("CONFIGDATA_{lattice}")
}

/// Key prefix of links in the lattice bucket.
pub const LINK_PREFIX: &str = "LINKDEF.";
/// Key prefix of claims in the lattice bucket.
pub const CLAIMS_PREFIX: &str = "CLAIMS.";

/// The key of one link: every field that tells two links apart. KV keys allow `[-/_=.a-zA-Z0-9]`;
/// ids, names and WIT identifiers are validated to `[A-Za-z0-9_-]` before they get here.
pub fn link_key(link: &Link) -> String {
    format!(
        "{LINK_PREFIX}{}.{}.{}.{}.{}",
        link.source_id, link.wit_namespace, link.wit_package, link.name, link.target
    )
}

/// The key prefix of every link from `source_id` for one package and link name (any target).
pub fn link_slot_prefix(source_id: &str, wit_namespace: &str, wit_package: &str, name: &str) -> String {
    format!("{LINK_PREFIX}{source_id}.{wit_namespace}.{wit_package}.{name}.")
}

/// The key of a component's claims.
pub fn claims_key(public_key: &str) -> String {
    format!("{CLAIMS_PREFIX}{public_key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_key_is_inside_its_slot() {
        let link = Link {
            source_id: "http".into(),
            target: "hello".into(),
            name: "default".into(),
            wit_namespace: "wasi".into(),
            wit_package: "http".into(),
            interfaces: vec![],
            source_config: vec![],
            target_config: vec![],
        };
        let key = link_key(&link);
        assert_eq!(key, "LINKDEF.http.wasi.http.default.hello");
        assert!(key.starts_with(&link_slot_prefix("http", "wasi", "http", "default")));
    }
}
