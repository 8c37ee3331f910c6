//! App manifests: arbitrary text through `Manifest::parse` (YAML or JSON, with its depth,
//! alias-expansion and size limits), and arbitrary numbers through `spread_counts`.
//!
//! Invariants: a manifest that parses serializes to JSON that parses back to an equal manifest;
//! a refusal lists at least one mistake, each with a message, and no more than the cap (plus
//! the "… more" note); spread counts add up to the instances whenever any weight is positive.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trellis_lattice::manifest::{self, Manifest, Trait};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match Manifest::parse(text) {
            Ok(m) => {
                let json = serde_json::to_string(&m).expect("a manifest encodes");
                let back = Manifest::parse(&json).unwrap_or_else(|e| panic!("our own JSON does not parse back: {e}\n{json}"));
                assert_eq!(back, m, "a manifest changed on the way back through JSON: {json}");
                for c in &m.spec.components {
                    assert!(!m.component_id(c).is_empty());
                    if let Some(Trait::SpreadScaler(s) | Trait::DaemonScaler(s)) = c.scaler() {
                        let counts = s.spread_counts();
                        assert_eq!(counts.len(), s.spread.len());
                    }
                }
                for (source, link) in m.links() {
                    assert!(m.component(&source.name).is_some());
                    assert!(!link.link_name().is_empty());
                }
            }
            Err(errors) => {
                assert!(!errors.is_empty(), "a refusal without a mistake");
                assert!(errors.len() <= manifest::MAX_ERRORS + 1, "{} mistakes listed", errors.len());
                for e in errors.errors() {
                    assert!(!e.message.is_empty(), "a mistake without a message at `{}`", e.path);
                }
            }
        }
    }
    // Spread arithmetic: the first 4 bytes are the instances, each next 4 a weight.
    if let Some((head, rest)) = data.split_first_chunk::<4>() {
        let instances = u32::from_le_bytes(*head);
        let weights: Vec<u32> = rest.chunks_exact(4).take(64).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])).collect();
        let counts = manifest::spread_counts(instances, &weights);
        assert_eq!(counts.len(), weights.len());
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        if weights.iter().any(|&w| w > 0) {
            assert_eq!(total, u64::from(instances), "spread {weights:?} of {instances} gave {counts:?}");
        } else {
            assert_eq!(total, 0);
        }
        for (c, w) in counts.iter().zip(&weights) {
            if *w == 0 {
                assert_eq!(*c, 0, "a zero weight got instances: {weights:?} → {counts:?}");
            }
        }
    }
});
