//! The typed control client: one method per control subject, replies unwrapped from the
//! `{success, message, response}` envelope into `Result`s whose errors say what to do.

use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ctl::*;
use crate::subject::{CtlOp, CtlSubjects};
use crate::{Error, ErrorKind, subject};

/// How long to wait for a single answer by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long scatter/gather operations (ping, auctions) collect answers, as wasmCloud's wash.
pub const DEFAULT_AUCTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Most pages a paged listing is read in (each at most [`REPLY_BUDGET`], so 128 MiB in all).
pub const MAX_PAGES: usize = 256;

/// What `link.get` lists.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LinkListing {
    /// The links.
    pub links: Vec<Link>,
    /// Link entries in the registry that could not be read: not routed to, and to be fixed or
    /// deleted (`wash link del`).
    pub unreadable: Vec<Unreadable>,
}

/// Encodes a request body; requests without one (`()`) go out empty, as wasmCloud sends them.
fn encode<B: Serialize + ?Sized>(op: &CtlOp, body: &B) -> Result<Vec<u8>, Error> {
    let bytes = serde_json::to_vec(body).map_err(|e| Error::new(ErrorKind::InvalidInput, format!("cannot encode {} request", op.name())).with_source(e))?;
    Ok(if bytes == b"null" { Vec::new() } else { bytes })
}

/// A control-interface client for one lattice.
#[derive(Debug, Clone)]
pub struct CtlClient {
    nats: async_nats::Client,
    lattice: String,
    subjects: CtlSubjects,
    timeout: Duration,
    auction_timeout: Duration,
}

impl CtlClient {
    /// A client for `lattice` over `nats`, with default timeouts.
    pub fn new(nats: async_nats::Client, lattice: &str) -> Self {
        Self { nats, lattice: lattice.to_string(), subjects: CtlSubjects::new(lattice), timeout: DEFAULT_TIMEOUT, auction_timeout: DEFAULT_AUCTION_TIMEOUT }
    }

    /// Sets the timeout of single requests.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets how long ping and auctions collect answers.
    pub fn with_auction_timeout(mut self, timeout: Duration) -> Self {
        self.auction_timeout = timeout;
        self
    }

    /// The lattice this client talks to.
    pub fn lattice(&self) -> &str {
        &self.lattice
    }

    /// The underlying NATS client.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// Subscribes to every event of the lattice (parse them with
    /// [`CloudEvent::from_slice`](crate::event::CloudEvent::from_slice)).
    pub async fn subscribe_events(&self) -> Result<async_nats::Subscriber, Error> {
        self.nats
            .subscribe(subject::events_wildcard(&self.lattice))
            .await
            .map_err(|e| Error::new(ErrorKind::Transport, "cannot subscribe to lattice events").with_source(e))
    }

    async fn request<B: Serialize + ?Sized, T: DeserializeOwned>(&self, op: CtlOp, body: &B) -> Result<Option<T>, Error> {
        Ok(self.request_envelope(op, body).await?.response)
    }

    /// Sends one request and returns the whole envelope of a successful reply.
    async fn request_envelope<B: Serialize + ?Sized, T: DeserializeOwned>(&self, op: CtlOp, body: &B) -> Result<CtlResponse<T>, Error> {
        let subject = self.subjects.subject(&op);
        let payload = encode(&op, body)?;
        let request = self.nats.request(subject.clone(), payload.into());
        let msg = match tokio::time::timeout(self.timeout, request).await {
            Err(_) => {
                let ms = self.timeout.as_millis();
                let message = match op.target_host() {
                    // Hosts answer unknown subjects from a catch-all, so a wrong host id shows
                    // up as silence rather than as "no responders".
                    Some(host) => format!(
                        "{} got no answer from host `{host}` within {ms} ms; is the host id right? `wash get hosts` lists the hosts of lattice `{}`",
                        op.name(),
                        self.lattice
                    ),
                    None => format!("no answer on `{subject}` within {ms} ms; is a host of lattice `{}` running?", self.lattice),
                };
                return Err(Error::new(ErrorKind::Timeout, message));
            }
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                let hint = match op.target_host() {
                    Some(host) => format!("no host with id `{host}` is running in lattice `{}`; `wash get hosts` lists them", self.lattice),
                    None => format!("no host of lattice `{}` is running; start one with `wash up`", self.lattice),
                };
                return Err(Error::new(ErrorKind::NoResponders, format!("{} failed: {hint}", op.name())));
            }
            Ok(Err(e)) => return Err(Error::new(ErrorKind::Transport, format!("{} request on `{subject}` failed", op.name())).with_source(e)),
            Ok(Ok(msg)) => msg,
        };
        let reply: CtlResponse<T> = serde_json::from_slice(&msg.payload)
            .map_err(|e| Error::new(ErrorKind::Malformed, format!("the reply to {} is not a control-interface envelope", op.name())).with_source(e))?;
        if !reply.success {
            return Err(Error::new(ErrorKind::Refused, reply.message));
        }
        Ok(reply)
    }

    /// Asks for every page of a paged listing ([`CtlResponse::next`]) and hands each page to
    /// `add`; returns the unreadable entries reported. The first request goes out with no
    /// body, as wasmCloud's; later ones carry `{"after": next}`. At most [`MAX_PAGES`] pages,
    /// and each cursor must move forward, so a confused server cannot keep us asking.
    async fn pages<T: DeserializeOwned>(&self, op: CtlOp, mut add: impl FnMut(T)) -> Result<Vec<Unreadable>, Error> {
        let name = op.name();
        let mut unreadable = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let reply: CtlResponse<T> = match &after {
                None => self.request_envelope(op.clone(), &()).await?,
                Some(a) => self.request_envelope(op.clone(), &PageRequest { after: Some(a.clone()) }).await?,
            };
            unreadable.extend(reply.unreadable);
            if let Some(r) = reply.response {
                add(r);
            }
            match reply.next {
                None => return Ok(unreadable),
                Some(next) if after.as_ref().is_some_and(|a| next.as_str() <= a.as_str()) => {
                    return Err(crate::malformed(format!("the pages of {name} do not move forward (`{next}` came after `{}`)", after.unwrap_or_default())));
                }
                Some(next) => after = Some(next),
            }
        }
        Err(crate::malformed(format!("{name} answered more than {MAX_PAGES} pages; the listing is too large to put together")))
    }

    async fn request_value<B: Serialize + ?Sized, T: DeserializeOwned>(&self, op: CtlOp, body: &B) -> Result<T, Error> {
        let name = op.name();
        self.request(op, body).await?.ok_or_else(|| Error::new(ErrorKind::Malformed, format!("the reply to {name} carries no response")))
    }

    async fn ack<B: Serialize + ?Sized>(&self, op: CtlOp, body: &B) -> Result<(), Error> {
        self.request::<B, serde_json::Value>(op, body).await.map(|_| ())
    }

    /// Publishes to a scatter/gather subject and collects every answer until the auction timeout.
    async fn gather<B: Serialize + ?Sized, T: DeserializeOwned>(&self, op: CtlOp, body: &B) -> Result<Vec<T>, Error> {
        let subject = self.subjects.subject(&op);
        let payload = encode(&op, body)?;
        let inbox = self.nats.new_inbox();
        let mut sub =
            self.nats.subscribe(inbox.clone()).await.map_err(|e| Error::new(ErrorKind::Transport, "cannot subscribe to a reply inbox").with_source(e))?;
        self.nats
            .publish_with_reply(subject.clone(), inbox, payload.into())
            .await
            .map_err(|e| Error::new(ErrorKind::Transport, format!("cannot publish on `{subject}`")).with_source(e))?;
        let mut out = Vec::new();
        let deadline = tokio::time::sleep(self.auction_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                msg = sub.next() => {
                    let Some(msg) = msg else { break };
                    // A malformed or refusing answer from one host must not hide the others.
                    match serde_json::from_slice::<CtlResponse<T>>(&msg.payload) {
                        Ok(CtlResponse { success: true, response: Some(r), .. }) => out.push(r),
                        Ok(r) => tracing::debug!(subject, message = r.message, "a host declined"),
                        Err(e) => tracing::warn!(subject, error = %e, "ignoring a malformed answer"),
                    }
                }
            }
        }
        Ok(out)
    }

    /// `host.ping`: every host of the lattice that answers within the auction timeout.
    pub async fn ping_hosts(&self) -> Result<Vec<Host>, Error> {
        self.gather(CtlOp::HostPing, &()).await
    }

    /// `host.get.{host}`: a host's inventory, put together from its pages when it is too
    /// large for one reply.
    pub async fn get_host_inventory(&self, host_id: &str) -> Result<HostInventory, Error> {
        let mut whole: Option<HostInventory> = None;
        self.pages(CtlOp::HostGet(host_id.into()), |page: HostInventory| match whole.as_mut() {
            None => whole = Some(page),
            Some(w) => {
                w.components.extend(page.components);
                w.providers.extend(page.providers);
            }
        })
        .await?;
        let mut inv = whole.ok_or_else(|| Error::new(ErrorKind::Malformed, "the reply to host.get carries no response"))?;
        if let Some(summary) = inv.summary.as_mut() {
            summary.listed = true;
        }
        Ok(inv)
    }

    /// `host.stop.{host}`: asks a host to stop, waiting up to `timeout_ms` for in-flight work.
    pub async fn stop_host(&self, host_id: &str, timeout_ms: Option<u64>) -> Result<(), Error> {
        let cmd = StopHostCommand { host_id: host_id.into(), timeout: timeout_ms };
        self.ack(CtlOp::HostStop(host_id.into()), &cmd).await
    }

    /// `host.cordon.{host}` (Trellis' extension): no new placements; what runs stays.
    pub async fn cordon_host(&self, host_id: &str) -> Result<HostScheduleReply, Error> {
        self.request_value(CtlOp::HostCordon(host_id.into()), &()).await
    }

    /// `host.uncordon.{host}` (Trellis' extension): the host takes placements again.
    pub async fn uncordon_host(&self, host_id: &str) -> Result<HostScheduleReply, Error> {
        self.request_value(CtlOp::HostUncordon(host_id.into()), &()).await
    }

    /// `host.drain.{host}` (Trellis' extension): cordons the host; the app reconciler places
    /// replacements elsewhere, then stops the host's managed replicas. The host reports
    /// `drained` in its inventory once none is left.
    pub async fn drain_host(&self, host_id: &str) -> Result<HostScheduleReply, Error> {
        self.request_value(CtlOp::HostDrain(host_id.into()), &()).await
    }

    /// `component.auction`: the hosts willing to run the component.
    pub async fn perform_component_auction(&self, req: &ComponentAuctionRequest) -> Result<Vec<ComponentAuctionAck>, Error> {
        self.gather(CtlOp::ComponentAuction, req).await
    }

    /// `provider.auction`: the hosts willing to run the provider.
    pub async fn perform_provider_auction(&self, req: &ProviderAuctionRequest) -> Result<Vec<ProviderAuctionAck>, Error> {
        self.gather(CtlOp::ProviderAuction, req).await
    }

    /// `component.scale.{host}`: accepted now; the outcome arrives as `component_scaled` or
    /// `component_scale_failed`.
    pub async fn scale_component(&self, cmd: &ScaleComponentCommand) -> Result<(), Error> {
        self.ack(CtlOp::ComponentScale(cmd.host_id.clone()), cmd).await
    }

    /// `component.update.{host}`.
    pub async fn update_component(&self, cmd: &UpdateComponentCommand) -> Result<(), Error> {
        self.ack(CtlOp::ComponentUpdate(cmd.host_id.clone()), cmd).await
    }

    /// `provider.start.{host}`.
    pub async fn start_provider(&self, cmd: &StartProviderCommand) -> Result<(), Error> {
        self.ack(CtlOp::ProviderStart(cmd.host_id.clone()), cmd).await
    }

    /// `provider.stop.{host}`.
    pub async fn stop_provider(&self, cmd: &StopProviderCommand) -> Result<(), Error> {
        self.ack(CtlOp::ProviderStop(cmd.host_id.clone()), cmd).await
    }

    /// `label.put.{host}`.
    pub async fn put_label(&self, host_id: &str, key: &str, value: &str) -> Result<(), Error> {
        let body = HostLabel { key: key.into(), value: value.into() };
        self.ack(CtlOp::LabelPut(host_id.into()), &body).await
    }

    /// `label.del.{host}`.
    pub async fn delete_label(&self, host_id: &str, key: &str) -> Result<(), Error> {
        self.ack(CtlOp::LabelDel(host_id.into()), &HostLabelIdentifier { key: key.into() }).await
    }

    /// `link.put`.
    pub async fn put_link(&self, link: &Link) -> Result<(), Error> {
        self.ack(CtlOp::LinkPut, link).await
    }

    /// `link.del`: deletes the links from `source_id` for the package under `name`.
    pub async fn delete_link(&self, req: &DeleteLinkRequest) -> Result<(), Error> {
        self.ack(CtlOp::LinkDel, req).await
    }

    /// `link.get`: every link in the lattice (every page of it).
    pub async fn get_links(&self) -> Result<Vec<Link>, Error> {
        Ok(self.get_links_listing().await?.links)
    }

    /// `link.get`, with the stored entries that could not be read (by key) beside the links.
    pub async fn get_links_listing(&self) -> Result<LinkListing, Error> {
        let mut links = Vec::new();
        let unreadable = self.pages(CtlOp::LinkGet, |page: Vec<Link>| links.extend(page)).await?;
        Ok(LinkListing { links, unreadable })
    }

    /// `claims.get`: the claims of every signed component seen in the lattice.
    pub async fn get_claims(&self) -> Result<Vec<StringMap>, Error> {
        let mut claims = Vec::new();
        self.pages(CtlOp::ClaimsGet, |page: Vec<StringMap>| claims.extend(page)).await?;
        Ok(claims)
    }

    /// `config.put.{name}`.
    pub async fn put_config(&self, name: &str, values: &StringMap) -> Result<(), Error> {
        crate::validate_id("config name", name)?;
        self.ack(CtlOp::ConfigPut(name.into()), values).await
    }

    /// `config.get.{name}`.
    pub async fn get_config(&self, name: &str) -> Result<StringMap, Error> {
        crate::validate_id("config name", name)?;
        self.request_value(CtlOp::ConfigGet(name.into()), &()).await
    }

    /// `config.del.{name}`.
    pub async fn delete_config(&self, name: &str) -> Result<(), Error> {
        crate::validate_id("config name", name)?;
        self.ack(CtlOp::ConfigDel(name.into()), &()).await
    }
}
