//! Signed components: wasmCloud's claims format, bit for bit.
//!
//! A signed component carries a JWT in a top-level custom section named `wasmcloud_jwt`. The
//! token's header is `{"typ":"jwt","alg":"Ed25519"}`; its claims name the issuer (an account
//! key, `A…`), the subject (the component's own module key, `M…`), optional validity dates, and
//! under `wascap` the component's name, version, tags and the **hash**: the uppercase hex SHA-256
//! of the component with every `wasmcloud_jwt` (and legacy `jwt`) custom section removed. The
//! signature is Ed25519 over `header.claims` (base64url without padding) by the issuer's key.
//!
//! The hash is computed the way wasmCloud's `wascap` computes it, so components signed by
//! wasmCloud's `wash` verify here and the other way round: the binary is rebuilt section by
//! section (nested core modules and components too) with section sizes in their shortest
//! LEB128 form and the token sections left out.
//!
//! ```
//! use trellis_lattice::claims::{self, Claims};
//! # fn demo(wasm: &[u8]) -> Result<(), claims::ClaimsError> {
//! let account = nkeys::KeyPair::new_account();
//! let module = nkeys::KeyPair::new_module();
//! let now = claims::now();
//! let mut c = Claims::new(&account.public_key(), &module.public_key(), now);
//! c.wascap.name = Some("hello".into());
//! let (signed, _) = claims::sign(wasm, c, &account)?;
//! let verified = claims::verify_component(&signed, now, &[])?.expect("signed");
//! assert_eq!(verified.sub, module.public_key());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use nkeys::{KeyPair, KeyPairType};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::ctl::StringMap;

/// The name of the custom section that holds the token.
pub const SECTION: &str = "wasmcloud_jwt";
/// The section name wascap used before 0.9; removed when hashing, never read.
const LEGACY_SECTION: &str = "jwt";
/// The claims revision this module writes and expects (wascap's `WASCAP_INTERNAL_REVISION`).
pub const WASCAP_REVISION: u32 = 3;
/// How deeply components may nest before the binary is refused (a guard against stack abuse).
const MAX_NESTING: usize = 32;

/// The claims of a signed component, with wasmCloud's JSON field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// A unique token id.
    pub jti: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// The issuer: an account public key (`A…`) whose key signed the token.
    pub iss: String,
    /// The subject: the component's module public key (`M…`).
    pub sub: String,
    /// Expiry, seconds since the Unix epoch; never when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not valid before, seconds since the Unix epoch; valid at once when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The claims revision (3).
    #[serde(default)]
    pub wascap_revision: u32,
    /// What the token says about the component.
    pub wascap: Metadata,
}

/// The `wascap` part of the claims: the component's description and hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// A descriptive name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Uppercase hex SHA-256 of the component without its token sections (see [`hash`]).
    pub hash: String,
    /// Free-form tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// A monotonically increasing revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<i32>,
    /// A human-friendly version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<String>,
    /// A code-friendly alias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_alias: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    typ: String,
    alg: String,
}

const HEADER_TYPE: &str = "jwt";
const HEADER_ALG: &str = "Ed25519";

/// Why a component's claims were refused. Each message names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// The bytes are not a WebAssembly binary whose sections can be walked.
    #[error("malformed WebAssembly: {0}")]
    Wasm(String),
    /// The token cannot be decoded, or its fields are of the wrong kind.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not verify against the issuer's key.
    #[error("bad signature: the token was not signed by its issuer {issuer}; sign the component again with `wash claims sign`")]
    BadSignature {
        /// The claimed issuer.
        issuer: String,
    },
    /// The component's bytes are not the ones that were signed.
    #[error(
        "hash mismatch: the component's bytes changed after it was signed (token hash {token}, actual {actual}); \
         sign it again with `wash claims sign`"
    )]
    HashMismatch {
        /// The hash in the token.
        token: String,
        /// The hash of the bytes at hand.
        actual: String,
    },
    /// The token's `exp` has passed.
    #[error("the token expired at {}; sign the component again with a later expiry (`wash claims sign --expires DAYS`)", human_time(*at))]
    Expired {
        /// `exp`, seconds since the Unix epoch.
        at: u64,
    },
    /// The token's `nbf` has not come yet.
    #[error("the token is not valid before {}", human_time(*from))]
    NotYetValid {
        /// `nbf`, seconds since the Unix epoch.
        from: u64,
    },
    /// The issuer is valid but this verifier does not trust it.
    #[error("issuer {issuer} is not on this host's allowed issuers list (--allowed-issuers)")]
    IssuerNotAllowed {
        /// The token's issuer.
        issuer: String,
    },
    /// Signing failed (a key of the wrong kind, an unusable seed).
    #[error("cannot sign: {0}")]
    Sign(String),
}

/// Seconds since the Unix epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A Unix time as RFC 3339 UTC (`2030-01-02T03:04:05Z`).
pub fn human_time(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| format!("{secs} seconds after the Unix epoch"))
}

impl Claims {
    /// Claims issued now-ish (`iat`) by account `iss` for module `sub`, with no dates, no name
    /// and an empty hash ([`sign`] fills it in).
    pub fn new(iss: &str, sub: &str, iat: u64) -> Self {
        Self {
            jti: uuid::Uuid::new_v4().simple().to_string(),
            iat,
            iss: iss.into(),
            sub: sub.into(),
            exp: None,
            nbf: None,
            wascap_revision: WASCAP_REVISION,
            wascap: Metadata::default(),
        }
    }

    /// `exp` as RFC 3339, or `never`.
    pub fn expires_human(&self) -> String {
        self.exp.map(human_time).unwrap_or_else(|| "never".into())
    }

    /// `nbf` as RFC 3339, or `immediately`.
    pub fn not_before_human(&self) -> String {
        self.nbf.map(human_time).unwrap_or_else(|| "immediately".into())
    }

    /// The string map carried by `component_scaled` and returned by `claims.get`, with the keys
    /// wasmCloud uses: `name`, `call_alias`, `iss`, `sub`, `tags` (comma-joined), `rev`,
    /// `version`, `expires_human`, `not_before_human`. Absent optional fields are left out.
    pub fn to_map(&self) -> StringMap {
        let mut m = StringMap::new();
        m.insert("iss".into(), self.iss.clone());
        m.insert("sub".into(), self.sub.clone());
        m.insert("expires_human".into(), self.expires_human());
        m.insert("not_before_human".into(), self.not_before_human());
        let w = &self.wascap;
        if let Some(v) = &w.name {
            m.insert("name".into(), v.clone());
        }
        if let Some(v) = &w.call_alias {
            m.insert("call_alias".into(), v.clone());
        }
        if let Some(v) = &w.tags {
            m.insert("tags".into(), v.join(","));
        }
        if let Some(v) = w.rev {
            m.insert("rev".into(), v.to_string());
        }
        if let Some(v) = &w.ver {
            m.insert("version".into(), v.clone());
        }
        m
    }
}

fn key_type(key: &str) -> Option<KeyPairType> {
    KeyPair::from_public_key(key).ok().map(|k| k.key_pair_type())
}

/// Encodes `claims` as a JWT signed by `issuer` (whose public key should be `claims.iss`).
pub fn encode(claims: &Claims, issuer: &KeyPair) -> Result<String, ClaimsError> {
    sign_token(claims, issuer)
}

/// A JWT of `claims` (any claims shape) signed by `issuer`.
fn sign_token<T: Serialize>(claims: &T, issuer: &KeyPair) -> Result<String, ClaimsError> {
    let header = Header { typ: HEADER_TYPE.into(), alg: HEADER_ALG.into() };
    let signed = format!("{}.{}", json_segment(&header)?, json_segment(claims)?);
    let sig = issuer.sign(signed.as_bytes()).map_err(|e| ClaimsError::Sign(format!("the issuer key cannot sign ({e}); give a seed (S…), not a public key")))?;
    Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

fn json_segment<T: Serialize>(value: &T) -> Result<String, ClaimsError> {
    let json = serde_json::to_vec(value).map_err(|e| ClaimsError::Sign(format!("cannot encode the token: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(json))
}

fn segment_json<T: serde::de::DeserializeOwned>(what: &str, segment: &str) -> Result<T, ClaimsError> {
    let bytes = URL_SAFE_NO_PAD.decode(segment.trim_end_matches('=')).map_err(|e| ClaimsError::Malformed(format!("the {what} is not base64url: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| ClaimsError::Malformed(format!("the {what} is not the expected JSON: {e}")))
}

/// Decodes a token's claims without checking anything but its shape (for display).
pub fn decode(token: &str) -> Result<Claims, ClaimsError> {
    let parts: Vec<&str> = token.trim().split('.').collect();
    let [_, claims, _] = parts.as_slice() else {
        return Err(ClaimsError::Malformed(format!("a JWT has 3 dot-separated parts; this one has {}", parts.len())));
    };
    segment_json("claims segment", claims)
}

/// Decodes `token` and checks its header, key kinds, signature and dates against `now`
/// (seconds since the Unix epoch). The hash is not checked here: see [`verify_component`].
pub fn verify_token(token: &str, now: u64) -> Result<Claims, ClaimsError> {
    verify_signed(token, now, KeyPairType::Module, "a module public key (M…)")
}

/// What [`verify_signed`] checks of a token's claims.
trait Signed: serde::de::DeserializeOwned {
    fn keys(&self) -> (&str, &str);
    fn dates(&self) -> (Option<u64>, Option<u64>);
}

impl Signed for Claims {
    fn keys(&self) -> (&str, &str) {
        (&self.iss, &self.sub)
    }
    fn dates(&self) -> (Option<u64>, Option<u64>) {
        (self.nbf, self.exp)
    }
}

impl Signed for ProviderClaims {
    fn keys(&self) -> (&str, &str) {
        (&self.iss, &self.sub)
    }
    fn dates(&self) -> (Option<u64>, Option<u64>) {
        (self.nbf, self.exp)
    }
}

/// Header, issuer and subject key kinds, signature and dates of a token.
fn verify_signed<T: Signed>(token: &str, now: u64, subject: KeyPairType, subject_kind: &str) -> Result<T, ClaimsError> {
    let token = token.trim();
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims_seg, sig] = parts.as_slice() else {
        return Err(ClaimsError::Malformed(format!("a JWT has 3 dot-separated parts; this one has {}", parts.len())));
    };
    let h: Header = segment_json("header", header)?;
    if h.alg != HEADER_ALG || !h.typ.eq_ignore_ascii_case(HEADER_TYPE) {
        return Err(ClaimsError::Malformed(format!("the header says typ `{}`, alg `{}`; expected typ `jwt`, alg `Ed25519`", h.typ, h.alg)));
    }
    let claims: T = segment_json("claims segment", claims_seg)?;
    let (iss, sub) = claims.keys();
    if key_type(iss) != Some(KeyPairType::Account) {
        return Err(ClaimsError::Malformed(format!("the issuer `{iss}` is not an account public key (A…)")));
    }
    if key_type(sub) != Some(subject) {
        return Err(ClaimsError::Malformed(format!("the subject `{sub}` is not {subject_kind}")));
    }
    let sig = URL_SAFE_NO_PAD.decode(sig.trim_end_matches('=')).map_err(|e| ClaimsError::Malformed(format!("the signature is not base64url: {e}")))?;
    let issuer = KeyPair::from_public_key(iss).map_err(|e| ClaimsError::Malformed(format!("the issuer key: {e}")))?;
    let signed_len = header.len() + 1 + claims_seg.len();
    issuer.verify(&token.as_bytes()[..signed_len], &sig).map_err(|_| ClaimsError::BadSignature { issuer: iss.to_string() })?;
    let (nbf, exp) = claims.dates();
    if let Some(nbf) = nbf
        && now < nbf
    {
        return Err(ClaimsError::NotYetValid { from: nbf });
    }
    if let Some(exp) = exp
        && now >= exp
    {
        return Err(ClaimsError::Expired { at: exp });
    }
    Ok(claims)
}

/// The claims of a wasmCloud provider archive (`claims.jwt` in a PAR), with wasmCloud's field
/// names: the subject is the provider's service key (`V…`), and `wascap.target_hashes` holds
/// the upper-case hex SHA-256 of each platform's binary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderClaims {
    /// A unique token id.
    pub jti: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// The issuer: an account public key (`A…`).
    pub iss: String,
    /// The subject: the provider's service public key (`V…`).
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Not valid before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The claims revision.
    #[serde(default)]
    pub wascap_revision: u32,
    /// What the token says about the provider.
    pub wascap: ProviderMetadata,
}

/// The `wascap` part of [`ProviderClaims`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProviderMetadata {
    /// A descriptive name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Who made it.
    #[serde(default)]
    pub vendor: String,
    /// A monotonically increasing revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rev: Option<i32>,
    /// A human-friendly version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ver: Option<String>,
    /// A JSON schema for the provider's link config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<serde_json::Value>,
    /// Platform (`x86_64-linux`, …) → upper-case hex SHA-256 of its binary.
    #[serde(default)]
    pub target_hashes: BTreeMap<String, String>,
}

/// Encodes provider claims as a JWT signed by `issuer`.
pub fn encode_provider(claims: &ProviderClaims, issuer: &KeyPair) -> Result<String, ClaimsError> {
    sign_token(claims, issuer)
}

/// Checks a provider archive's token (header, keys, signature, dates) and that it lists
/// `binary` as the binary for `target`.
pub fn verify_provider(token: &str, now: u64, target: &str, binary: &[u8]) -> Result<ProviderClaims, ClaimsError> {
    let claims: ProviderClaims = verify_signed(token, now, KeyPairType::Service, "a service public key (V…)")?;
    let want = claims.wascap.target_hashes.get(target).ok_or_else(|| ClaimsError::Malformed(format!("the claims list no hash for `{target}`")))?;
    let got = hex_upper(&Sha256::digest(binary));
    if !want.eq_ignore_ascii_case(&got) {
        return Err(ClaimsError::HashMismatch { token: want.clone(), actual: got });
    }
    Ok(claims)
}

/// Verifies a component's embedded claims: token shape, signature, hash, issuer (when
/// `allowed_issuers` is not empty) and dates against `now`. `Ok(None)` when it is unsigned.
pub fn verify_component(wasm: &[u8], now: u64, allowed_issuers: &[String]) -> Result<Option<Claims>, ClaimsError> {
    let Some(token) = extract(wasm)? else { return Ok(None) };
    // Signature before anything else: a forged token's other fields mean nothing.
    let claims = match verify_token(&token, now) {
        Ok(c) => c,
        Err(e @ (ClaimsError::Expired { .. } | ClaimsError::NotYetValid { .. })) => {
            // The dates are checked last so a tampered component is reported as tampered
            // rather than as expired; re-verify without them to get at the claims.
            let claims = decode(&token)?;
            check_hash(wasm, &claims)?;
            check_issuer(&claims, allowed_issuers)?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    check_hash(wasm, &claims)?;
    check_issuer(&claims, allowed_issuers)?;
    Ok(Some(claims))
}

fn check_hash(wasm: &[u8], claims: &Claims) -> Result<(), ClaimsError> {
    let actual = hash(wasm)?;
    if !claims.wascap.hash.eq_ignore_ascii_case(&actual) {
        return Err(ClaimsError::HashMismatch { token: claims.wascap.hash.clone(), actual });
    }
    Ok(())
}

fn check_issuer(claims: &Claims, allowed_issuers: &[String]) -> Result<(), ClaimsError> {
    if !allowed_issuers.is_empty() && !allowed_issuers.iter().any(|a| a.trim() == claims.iss) {
        return Err(ClaimsError::IssuerNotAllowed { issuer: claims.iss.clone() });
    }
    Ok(())
}

/// Signs `wasm` as `claims` with `issuer`: fills in `iss` and the hash, encodes the token and
/// embeds it (replacing any earlier one). Returns the signed bytes and the final claims.
pub fn sign(wasm: &[u8], mut claims: Claims, issuer: &KeyPair) -> Result<(Vec<u8>, Claims), ClaimsError> {
    if issuer.key_pair_type() != KeyPairType::Account {
        return Err(ClaimsError::Sign(format!("the issuer must be an account key (SA… seed), not a {:?} key", issuer.key_pair_type())));
    }
    if key_type(&claims.sub) != Some(KeyPairType::Module) {
        return Err(ClaimsError::Sign(format!("the subject `{}` is not a module public key (M…)", claims.sub)));
    }
    claims.iss = issuer.public_key();
    let stripped = strip(wasm)?;
    claims.wascap.hash = hex_upper(&Sha256::digest(&stripped));
    let token = encode(&claims, issuer)?;
    Ok((append_section(stripped, &token), claims))
}

/// `wasm` with any token sections removed and `token` appended as a `wasmcloud_jwt` section.
pub fn embed(wasm: &[u8], token: &str) -> Result<Vec<u8>, ClaimsError> {
    Ok(append_section(strip(wasm)?, token))
}

fn append_section(mut wasm: Vec<u8>, token: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(SECTION.len() + token.len() + 5);
    write_leb(&mut payload, SECTION.len() as u64);
    payload.extend_from_slice(SECTION.as_bytes());
    payload.extend_from_slice(token.as_bytes());
    wasm.push(0);
    write_leb(&mut wasm, payload.len() as u64);
    wasm.extend_from_slice(&payload);
    wasm
}

/// The token in `wasm`'s first top-level `wasmcloud_jwt` section, if any.
pub fn extract(wasm: &[u8]) -> Result<Option<String>, ClaimsError> {
    let (_, sections) = read_header(wasm)?;
    for s in Sections::new(wasm, sections) {
        let s = s?;
        if s.id == 0 && s.custom_name()? == Some(SECTION) {
            let (_, data) = s.custom()?;
            return String::from_utf8(data.to_vec()).map(Some).map_err(|_| ClaimsError::Malformed("the wasmcloud_jwt section is not UTF-8 text".into()));
        }
    }
    Ok(None)
}

/// The hash a token must carry for `wasm`: uppercase hex SHA-256 of the binary rebuilt without
/// its token sections (as wascap computes it).
pub fn hash(wasm: &[u8]) -> Result<String, ClaimsError> {
    Ok(hex_upper(&Sha256::digest(strip(wasm)?)))
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Rebuilds the binary without `wasmcloud_jwt`/`jwt` custom sections at any depth, writing
/// every section size in its shortest LEB128 form (what wascap's rebuild produces).
fn strip(wasm: &[u8]) -> Result<Vec<u8>, ClaimsError> {
    let mut out = Vec::with_capacity(wasm.len());
    strip_into(wasm, &mut out, 0)?;
    Ok(out)
}

fn strip_into(bin: &[u8], out: &mut Vec<u8>, depth: usize) -> Result<(), ClaimsError> {
    if depth > MAX_NESTING {
        return Err(ClaimsError::Wasm(format!("components nest more than {MAX_NESTING} deep")));
    }
    let (is_component, start) = read_header(bin)?;
    out.extend_from_slice(&bin[..start]);
    for s in Sections::new(bin, start) {
        let s = s?;
        if s.id == 0 && matches!(s.custom_name()?, Some(SECTION | LEGACY_SECTION)) {
            continue;
        }
        // In a component, section 1 is a nested core module and 4 a nested component.
        if is_component && (s.id == 1 || s.id == 4) {
            let mut nested = Vec::with_capacity(s.payload.len());
            strip_into(s.payload, &mut nested, depth + 1)?;
            out.push(s.id);
            write_leb(out, nested.len() as u64);
            out.extend_from_slice(&nested);
        } else {
            out.push(s.id);
            write_leb(out, s.payload.len() as u64);
            out.extend_from_slice(s.payload);
        }
    }
    Ok(())
}

/// Checks the 8-byte preamble; returns whether it is a component and where sections start.
fn read_header(bin: &[u8]) -> Result<(bool, usize), ClaimsError> {
    match bin.get(..8) {
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok((true, 8)),
        Some([0, b'a', b's', b'm', _, _, 0, 0]) => Ok((false, 8)),
        Some([0, b'a', b's', b'm', ..]) => Err(ClaimsError::Wasm("unknown WebAssembly layer".into())),
        _ => Err(ClaimsError::Wasm(format!("{} bytes that do not start with `\\0asm`", bin.len()))),
    }
}

struct Section<'a> {
    id: u8,
    payload: &'a [u8],
}

impl<'a> Section<'a> {
    /// A custom section's name and data.
    fn custom(&self) -> Result<(&'a str, &'a [u8]), ClaimsError> {
        let (len, n) = read_leb(self.payload, 0)?;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| n.checked_add(l))
            .filter(|e| *e <= self.payload.len())
            .ok_or_else(|| ClaimsError::Wasm("a custom section's name runs past the section".into()))?;
        let name = std::str::from_utf8(&self.payload[n..end]).map_err(|_| ClaimsError::Wasm("a custom section's name is not UTF-8".into()))?;
        Ok((name, &self.payload[end..]))
    }

    fn custom_name(&self) -> Result<Option<&'a str>, ClaimsError> {
        if self.id != 0 {
            return Ok(None);
        }
        self.custom().map(|(name, _)| Some(name))
    }
}

/// The sections of a binary from offset `pos`: (id u8, size LEB128 u32, payload).
struct Sections<'a> {
    bin: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Sections<'a> {
    fn new(bin: &'a [u8], pos: usize) -> Self {
        Self { bin, pos, failed: false }
    }
}

impl<'a> Iterator for Sections<'a> {
    type Item = Result<Section<'a>, ClaimsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.bin.len() {
            return None;
        }
        let at = self.pos;
        let id = self.bin[at];
        let section = read_leb(self.bin, at + 1).and_then(|(size, n)| {
            let start = at + 1 + n;
            let end = usize::try_from(size)
                .ok()
                .filter(|s| *s <= u32::MAX as usize)
                .and_then(|s| start.checked_add(s))
                .filter(|e| *e <= self.bin.len())
                .ok_or_else(|| ClaimsError::Wasm(format!("the section at offset {at} runs past the end of the binary")))?;
            Ok((start, end))
        });
        match section {
            Ok((start, end)) => {
                self.pos = end;
                Some(Ok(Section { id, payload: &self.bin[start..end] }))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// An unsigned LEB128 of at most 5 bytes (u32) at `pos`: (value, bytes read).
fn read_leb(bin: &[u8], pos: usize) -> Result<(u64, usize), ClaimsError> {
    let mut value = 0u64;
    for i in 0..5 {
        let Some(&b) = bin.get(pos + i) else {
            return Err(ClaimsError::Wasm(format!("the binary ends inside a size at offset {pos}")));
        };
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(ClaimsError::Wasm(format!("a size at offset {pos} is longer than 5 bytes")))
}

fn write_leb(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component with a nested core module holding a data section and a name section.
    fn component() -> Vec<u8> {
        let mut module = b"\0asm\x01\0\0\0".to_vec();
        section(&mut module, 11, b"\x01\x00\x41\x00\x0b\x13Hello from Trellis!");
        custom(&mut module, "name", b"\x00\x04demo");
        let mut c = b"\0asm\x0d\0\x01\0".to_vec();
        section(&mut c, 1, &module);
        custom(&mut c, "producers", b"\x00");
        c
    }

    fn section(out: &mut Vec<u8>, id: u8, payload: &[u8]) {
        out.push(id);
        write_leb(out, payload.len() as u64);
        out.extend_from_slice(payload);
    }

    fn custom(out: &mut Vec<u8>, name: &str, data: &[u8]) {
        let mut p = Vec::new();
        write_leb(&mut p, name.len() as u64);
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(data);
        section(out, 0, &p);
    }

    struct Keys {
        account: KeyPair,
        module: KeyPair,
    }

    fn keys() -> Keys {
        Keys { account: KeyPair::new_account(), module: KeyPair::new_module() }
    }

    fn signed(k: &Keys, edit: impl FnOnce(&mut Claims)) -> Vec<u8> {
        let mut c = Claims::new(&k.account.public_key(), &k.module.public_key(), 1_000);
        c.wascap.name = Some("hello".into());
        c.wascap.tags = Some(vec!["a".into(), "b".into()]);
        c.wascap.rev = Some(3);
        c.wascap.ver = Some("0.1.0".into());
        edit(&mut c);
        sign(&component(), c, &k.account).expect("signs").0
    }

    const NOW: u64 = 2_000;

    #[test]
    fn round_trip() {
        let k = keys();
        let wasm = signed(&k, |_| {});
        assert!(extract(&component()).expect("walks").is_none());
        assert_eq!(verify_component(&component(), NOW, &[]), Ok(None));
        let c = verify_component(&wasm, NOW, &[k.account.public_key()]).expect("verifies").expect("signed");
        assert_eq!((c.iss.as_str(), c.sub.as_str()), (k.account.public_key().as_str(), k.module.public_key().as_str()));
        assert_eq!(c.wascap.hash, hash(&component()).expect("hash"));
        assert_eq!(c.wascap.hash, hash(&wasm).expect("hash"), "the token section is not hashed");
        assert_eq!(c.wascap_revision, 3);
        let m = c.to_map();
        assert_eq!(m["name"], "hello");
        assert_eq!(m["tags"], "a,b");
        assert_eq!(m["rev"], "3");
        assert_eq!(m["version"], "0.1.0");
        assert_eq!(m["expires_human"], "never");
        assert_eq!(m["not_before_human"], "immediately");
        assert!(!m.contains_key("call_alias"));

        // The wire shape is wasmCloud's.
        let token = extract(&wasm).expect("walks").expect("token");
        let header: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').next().expect("header")).expect("b64")).expect("json");
        assert_eq!(header, serde_json::json!({"typ": "jwt", "alg": "Ed25519"}));
        let body: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).expect("claims")).expect("b64")).expect("json");
        assert_eq!(body["wascap"]["hash"].as_str().map(str::len), Some(64));
        assert!(body["wascap"]["hash"].as_str().is_some_and(|h| h.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())));
        assert_eq!(body["wascap_revision"], 3);
        assert!(body.get("exp").is_none() && body.get("nbf").is_none());

        // Signing again replaces the token rather than adding a second one.
        let again = signed(&k, |c| c.wascap.name = Some("renamed".into()));
        let twice = embed(&wasm, &extract(&again).expect("walks").expect("token")).expect("embeds");
        assert_eq!(twice.len(), again.len());
        assert_eq!(verify_component(&twice, NOW, &[]).expect("verifies").expect("signed").wascap.name.as_deref(), Some("renamed"));
    }

    #[test]
    fn a_changed_byte_is_a_hash_mismatch() {
        let k = keys();
        let mut wasm = signed(&k, |_| {});
        let at = wasm.windows(5).position(|w| w == b"Hello").expect("data");
        wasm[at] = b'J';
        let err = verify_component(&wasm, NOW, &[]).expect_err("refused");
        assert!(matches!(err, ClaimsError::HashMismatch { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.starts_with("hash mismatch: the component's bytes changed after it was signed (token hash "), "{msg}");
    }

    #[test]
    fn dates_are_enforced() {
        let k = keys();
        let wasm = signed(&k, |c| c.exp = Some(1_500));
        let err = verify_component(&wasm, NOW, &[]).expect_err("refused");
        assert_eq!(err, ClaimsError::Expired { at: 1_500 });
        assert!(err.to_string().starts_with("the token expired at 1970-01-01T00:25:00Z"), "{err}");
        assert!(verify_component(&wasm, 1_499, &[]).is_ok());

        let wasm = signed(&k, |c| c.nbf = Some(3_000));
        let err = verify_component(&wasm, NOW, &[]).expect_err("refused");
        assert_eq!(err.to_string(), "the token is not valid before 1970-01-01T00:50:00Z");
        assert!(verify_component(&wasm, 3_000, &[]).is_ok());
        let m = verify_component(&wasm, 3_000, &[]).expect("valid").expect("signed").to_map();
        assert_eq!(m["not_before_human"], "1970-01-01T00:50:00Z");

        // Tampering is reported as such even when the token has also expired.
        let mut wasm = signed(&k, |c| c.exp = Some(1_500));
        let at = wasm.windows(5).position(|w| w == b"Hello").expect("data");
        wasm[at] ^= 1;
        assert!(matches!(verify_component(&wasm, NOW, &[]), Err(ClaimsError::HashMismatch { .. })));
    }

    #[test]
    fn only_allowed_issuers_pass() {
        let k = keys();
        let wasm = signed(&k, |_| {});
        let other = KeyPair::new_account().public_key();
        let err = verify_component(&wasm, NOW, std::slice::from_ref(&other)).expect_err("refused");
        assert_eq!(err.to_string(), format!("issuer {} is not on this host's allowed issuers list (--allowed-issuers)", k.account.public_key()));
        assert!(verify_component(&wasm, NOW, &[other, k.account.public_key()]).is_ok());
    }

    #[test]
    fn a_wrong_signature_is_refused() {
        let k = keys();
        // Claims naming one account, signed by another.
        let mut c = Claims::new(&k.account.public_key(), &k.module.public_key(), 1_000);
        c.wascap.hash = hash(&component()).expect("hash");
        let forged = encode(&c, &KeyPair::new_account()).expect("encodes");
        let wasm = embed(&component(), &forged).expect("embeds");
        let err = verify_component(&wasm, NOW, &[]).expect_err("refused");
        assert!(err.to_string().starts_with("bad signature"), "{err}");

        // A claims segment edited after signing.
        let token = extract(&signed(&k, |_| {})).expect("walks").expect("token");
        let parts: Vec<&str> = token.split('.').collect();
        let mut body: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("b64")).expect("json");
        body["wascap"]["name"] = "evil".into();
        let edited = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(serde_json::to_vec(&body).expect("json")), parts[2]);
        let err = verify_component(&embed(&component(), &edited).expect("embeds"), NOW, &[]).expect_err("refused");
        assert!(matches!(err, ClaimsError::BadSignature { .. }), "{err}");
    }

    #[test]
    fn malformed_tokens_and_keys() {
        let k = keys();
        for token in ["", "a.b", "not.a.token", "e30.e30.AAAA"] {
            let err = verify_component(&embed(&component(), token).expect("embeds"), NOW, &[]).expect_err("refused");
            assert!(err.to_string().starts_with("malformed token"), "{token}: {err}");
        }
        // Issuer and subject must be of the right kinds.
        let mut c = Claims::new(&k.account.public_key(), &KeyPair::new_user().public_key(), 1_000);
        c.wascap.hash = hash(&component()).expect("hash");
        let err = verify_token(&encode(&c, &k.account).expect("encodes"), NOW).expect_err("refused");
        assert!(err.to_string().contains("is not a module public key (M…)"), "{err}");
        assert!(sign(&component(), c, &k.account).is_err());
        let c = Claims::new(&k.account.public_key(), &k.module.public_key(), 1_000);
        let err = sign(&component(), c, &k.module).expect_err("refused");
        assert!(err.to_string().contains("must be an account key"), "{err}");
        // Garbage is not walked.
        assert!(matches!(verify_component(b"hello world!", NOW, &[]), Err(ClaimsError::Wasm(_))));
        let mut truncated = component();
        truncated.truncate(truncated.len() - 3);
        assert!(matches!(hash(&truncated), Err(ClaimsError::Wasm(_))));
    }

    #[test]
    fn the_hash_is_wascaps() {
        // wascap rebuilds sections with minimal LEB128 sizes and drops token sections at any
        // depth; a padded size or a nested token must not change the hash.
        let plain = component();
        let mut padded = b"\0asm\x0d\0\x01\0".to_vec();
        let nested = &plain[8..];
        // Re-write the nested module section's size as a 5-byte LEB.
        let (size, n) = read_leb(nested, 1).expect("leb");
        padded.push(1);
        padded.extend((0..5).map(|i| ((size >> (7 * i)) as u8 & 0x7f) | if i < 4 { 0x80 } else { 0 }));
        padded.extend_from_slice(&nested[1 + n..]);
        assert_ne!(padded, plain);
        assert_eq!(hash(&padded), hash(&plain));
        let mut with_legacy = plain.clone();
        custom(&mut with_legacy, "jwt", b"old");
        assert_eq!(hash(&with_legacy), hash(&plain));
        assert_eq!(hash(&plain).expect("hash"), hex_upper(&Sha256::digest(&plain)));
    }
}
