//! Signed components: arbitrary bytes as a JWT, as a WebAssembly binary whose `wasmcloud_jwt`
//! section is extracted and verified, and as edits to a correctly signed component.
//!
//! Invariants: a token that verifies decodes to the same claims; a binary that hashes can be
//! embedded into and signed, the embedded token is the one extracted, embedding or signing
//! leaves the hash unchanged, and a signed binary verifies with exactly the claims it was
//! signed with; edits to a signed component either fail verification or leave its claims and
//! hash intact (no edit yields other verified claims).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nkeys::{KeyPair, KeyPairType};
use trellis_lattice::claims::{self, Claims};

/// A fixed "now" between the dates the targets use.
const NOW: u64 = 1_800_000_000;

fn account() -> &'static KeyPair {
    static K: OnceLock<KeyPair> = OnceLock::new();
    K.get_or_init(|| KeyPair::new_from_raw(KeyPairType::Account, [7; 32]).expect("a raw account key"))
}

fn module() -> &'static KeyPair {
    static K: OnceLock<KeyPair> = OnceLock::new();
    K.get_or_init(|| KeyPair::new_from_raw(KeyPairType::Module, [9; 32]).expect("a raw module key"))
}

fn claims_for(name: &str) -> Claims {
    let mut c = Claims::new(&account().public_key(), &module().public_key(), NOW - 10);
    c.exp = Some(NOW + 10);
    c.nbf = Some(NOW - 10);
    c.wascap.name = Some(name.into());
    c.wascap.rev = Some(3);
    c.wascap.tags = Some(vec!["a".into(), "b".into()]);
    c
}

/// A component holding a core module with a data section, a name section and a legacy
/// `jwt` section, signed with fixed keys: the base that edits are applied to.
fn signed_base() -> &'static (Vec<u8>, Claims, String) {
    static S: OnceLock<(Vec<u8>, Claims, String)> = OnceLock::new();
    S.get_or_init(|| {
        fn section(out: &mut Vec<u8>, id: u8, payload: &[u8]) {
            out.push(id);
            out.push(u8::try_from(payload.len()).expect("small section"));
            out.extend_from_slice(payload);
        }
        fn custom(name: &str, data: &[u8]) -> Vec<u8> {
            let mut p = vec![u8::try_from(name.len()).expect("short name")];
            p.extend_from_slice(name.as_bytes());
            p.extend_from_slice(data);
            p
        }
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        section(&mut module, 11, b"\x01\x00\x41\x00\x0b\x05hello");
        section(&mut module, 0, &custom("name", b"\x00\x04demo"));
        section(&mut module, 0, &custom("jwt", b"legacy"));
        let mut component = b"\0asm\x0d\0\x01\0".to_vec();
        section(&mut component, 1, &module);
        section(&mut component, 0, &custom("producer", b"x"));
        let (signed, c) = claims::sign(&component, claims_for("base"), account()).expect("the base signs");
        let hash = claims::hash(&signed).expect("the base hashes");
        (signed, c, hash)
    })
}

fuzz_target!(|data: &[u8]| {
    // As a token.
    if let Ok(text) = std::str::from_utf8(data) {
        let decoded = claims::decode(text);
        if let Ok(c) = claims::verify_token(text, NOW) {
            assert_eq!(decoded.as_ref(), Ok(&c), "a verified token decodes to other claims");
        }
    }

    // As a component.
    let extracted = claims::extract(data);
    let verified = claims::verify_component(data, NOW, &[]);
    let _ = claims::verify_component(data, NOW, &[account().public_key()]);
    if let Ok(Some(c)) = &verified {
        let token = extracted.as_ref().ok().cloned().flatten().expect("a verified component has a token");
        assert_eq!(claims::decode(&token).as_ref(), Ok(c));
    }
    if matches!(extracted, Ok(None)) {
        assert_eq!(verified, Ok(None), "no token, yet the component is not plain unsigned");
    }
    if let Ok(hash) = claims::hash(data) {
        let embedded = claims::embed(data, "a.b.c").expect("what hashes embeds");
        assert_eq!(claims::hash(&embedded).as_ref(), Ok(&hash), "embedding changed the hash");
        assert_eq!(claims::extract(&embedded), Ok(Some("a.b.c".to_string())), "the embedded token is not the one extracted");
        let (signed, c) = claims::sign(data, claims_for("fuzz"), account()).expect("what hashes signs");
        assert_eq!(c.wascap.hash, hash, "signing hashed other bytes");
        assert_eq!(claims::hash(&signed).as_ref(), Ok(&hash), "signing changed the hash");
        let v = claims::verify_component(&signed, NOW, &[account().public_key()]).expect("a fresh signature verifies");
        assert_eq!(v.as_ref(), Some(&c), "verified claims differ from the signed ones");
        let other = KeyPair::new_from_raw(KeyPairType::Account, [8; 32]).expect("a raw account key").public_key();
        assert!(claims::verify_component(&signed, NOW, &[other]).is_err(), "an issuer not on the list passed");
        assert!(claims::verify_component(&signed, NOW + 20, &[]).is_err(), "an expired token passed");
    } else {
        assert!(claims::sign(data, claims_for("fuzz"), account()).is_err(), "signed what cannot be hashed");
    }

    // As edits (offset, byte) to a signed component.
    let (base, base_claims, base_hash) = signed_base();
    let mut edited = base.clone();
    for pair in data.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % edited.len();
        edited[at] = pair[2];
    }
    if data.len() % 3 == 1 {
        edited.truncate(usize::from(data[data.len() - 1]) % edited.len());
    }
    if let Ok(Some(c)) = claims::verify_component(&edited, NOW, &[]) {
        assert_eq!(&c, base_claims, "an edited component verified with other claims");
        assert_eq!(claims::hash(&edited).as_ref(), Ok(base_hash), "an edited component verified with another hash");
    }
});
