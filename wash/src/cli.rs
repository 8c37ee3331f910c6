//! The command line: every subcommand, flag and environment variable of `wash`, as clap derive
//! types. Nothing here talks to the lattice; `commands` and `local` do.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::output::Format;

/// Drive a Trellis lattice: run one locally, start and link components and providers, inspect hosts.
#[derive(Debug, Parser)]
#[command(name = "wash", version, about, propagate_version = true)]
pub struct Cli {
    /// Flags every command accepts.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Connection, timeout and output flags, accepted before or after any subcommand.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct Global {
    /// Lattice name.
    #[arg(short = 'x', long, env = "WASH_LATTICE", default_value = trellis_lattice::DEFAULT_LATTICE, global = true)]
    pub lattice: String,
    /// Host of the NATS server carrying the control interface.
    #[arg(long, env = "WASH_CTL_HOST", default_value = "127.0.0.1", global = true)]
    pub ctl_host: String,
    /// Port of that NATS server (`wash up` starts its server on this port).
    #[arg(long, env = "WASH_CTL_PORT", default_value_t = 4222, global = true)]
    pub ctl_port: u16,
    /// NATS credentials file (JWT and seed).
    #[arg(long, env = "WASH_CTL_CREDSFILE", global = true)]
    pub ctl_credsfile: Option<PathBuf>,
    /// NATS nkey seed (`SU…`).
    #[arg(long, env = "WASH_CTL_SEED", global = true, hide_env_values = true)]
    pub ctl_seed: Option<String>,
    /// NATS user JWT (with --ctl-seed).
    #[arg(long, env = "WASH_CTL_JWT", global = true, hide_env_values = true)]
    pub ctl_jwt: Option<String>,
    /// How long to wait for an answer or an outcome event, in milliseconds.
    #[arg(long, env = "WASH_TIMEOUT_MS", default_value_t = 5000, global = true)]
    pub timeout_ms: u64,
    /// How long pings and auctions collect answers from hosts, in milliseconds.
    #[arg(long, env = "WASH_AUCTION_TIMEOUT_MS", default_value_t = 2000, global = true)]
    pub auction_timeout_ms: u64,
    /// Output format.
    #[arg(short = 'o', long, env = "WASH_OUTPUT", value_enum, default_value_t = Format::Text, global = true)]
    pub output: Format,
}

/// The nouns and verbs of `wash`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a local lattice: a NATS server (unless one answers already) and a host.
    Up(UpArgs),
    /// Stop what `wash up` started: its hosts and its NATS server.
    Down(DownArgs),
    /// Start a component or a provider.
    #[command(subcommand)]
    Start(StartCommand),
    /// Stop a component, a provider or a host.
    #[command(subcommand)]
    Stop(StopCommand),
    /// Change how many instances of a component may run at once.
    #[command(subcommand)]
    Scale(ScaleCommand),
    /// Switch a running component to a new reference.
    #[command(subcommand)]
    Update(UpdateCommand),
    /// Put, delete and list links.
    #[command(subcommand)]
    Link(LinkCommand),
    /// Put, read and delete named config.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Put and delete host labels.
    #[command(subcommand)]
    Label(LabelCommand),
    /// List hosts, inventories, links and claims.
    #[command(subcommand)]
    Get(GetCommand),
    /// Generate, show and list nkeys (accounts, components, providers, hosts, users).
    #[command(subcommand)]
    Keys(crate::commands::keys::KeysCommand),
    /// Sign components and inspect their claims.
    #[command(subcommand)]
    Claims(crate::commands::claims::ClaimsCommand),
    /// Print a shell completion script.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

/// `wash up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Run in the background: return once the host is up; `wash down` stops it.
    #[arg(short = 'd', long)]
    pub detached: bool,
    /// A host label key=value (repeatable).
    #[arg(short = 'l', long = "label", value_parser = trellis_host::identity::parse_label)]
    pub labels: Vec<(String, String)>,
    /// Start the local NATS server as a leaf node of this remote (e.g. nats-leaf://hub:7422).
    #[arg(long)]
    pub nats_remote_url: Option<String>,
    /// Where a detached parent waits for the host id (internal).
    #[arg(long, hide = true)]
    pub ready_file: Option<PathBuf>,
}

/// `wash down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// Also delete the JetStream store of the NATS server `wash up` started (links, config).
    #[arg(long)]
    pub purge_jetstream: bool,
}

/// `wash start …`.
#[derive(Debug, Subcommand)]
pub enum StartCommand {
    /// Start a component on a host chosen by auction (or --host-id) and wait for the outcome.
    Component(StartComponentArgs),
    /// Start a provider on a host chosen by auction (or --host-id) and wait for the outcome.
    Provider(StartProviderArgs),
}

/// Placement and waiting flags shared by `start component` and `start provider`.
#[derive(Debug, Args)]
pub struct Placement {
    /// Run it on this host instead of holding an auction.
    #[arg(long)]
    pub host_id: Option<String>,
    /// A label key=value the chosen host must carry (repeatable).
    #[arg(short = 'c', long = "constraint", value_parser = parse_key_value)]
    pub constraints: Vec<(String, String)>,
    /// Named config to give it (repeatable; it must exist).
    #[arg(long = "config")]
    pub config: Vec<String>,
    /// Return once the host accepted the request, without waiting for the outcome event.
    #[arg(long)]
    pub skip_wait: bool,
}

/// `wash start component`.
#[derive(Debug, Args)]
pub struct StartComponentArgs {
    /// A file path or a reference such as file:///abs/path.wasm.
    pub component_ref: String,
    /// The id to run it under (letters, digits, `_`, `-`).
    pub component_id: String,
    /// How many instances may run at once.
    #[arg(long, default_value_t = 1)]
    pub max_instances: u32,
    #[command(flatten)]
    pub placement: Placement,
}

/// `wash start provider`.
#[derive(Debug, Args)]
pub struct StartProviderArgs {
    /// A path to an executable, file:///abs/path or builtin://NAME.
    pub provider_ref: String,
    /// The id to run it under (letters, digits, `_`, `-`).
    pub provider_id: String,
    #[command(flatten)]
    pub placement: Placement,
}

/// `wash stop …`.
#[derive(Debug, Subcommand)]
pub enum StopCommand {
    /// Stop a component (scale it to 0) and wait for the outcome.
    Component(StopTargetArgs),
    /// Stop a provider and wait for the outcome.
    Provider(StopTargetArgs),
    /// Stop a host (it publishes host_stopped).
    Host(StopHostArgs),
}

/// The id of a component or provider and, optionally, its host.
#[derive(Debug, Args)]
pub struct StopTargetArgs {
    /// The component or provider id.
    pub id: String,
    /// The host it runs on; found from the inventories when omitted.
    #[arg(long)]
    pub host_id: Option<String>,
    /// Return once the host accepted the request, without waiting for the outcome event.
    #[arg(long)]
    pub skip_wait: bool,
}

/// `wash stop host`.
#[derive(Debug, Args)]
pub struct StopHostArgs {
    /// The host id (`N…`).
    pub host_id: String,
    /// Return once the host accepted the request, without waiting for host_stopped.
    #[arg(long)]
    pub skip_wait: bool,
}

/// `wash scale …`.
#[derive(Debug, Subcommand)]
pub enum ScaleCommand {
    /// Set a running component's concurrency limit (0 stops it).
    Component(ScaleComponentArgs),
}

/// `wash scale component`.
#[derive(Debug, Args)]
pub struct ScaleComponentArgs {
    /// The component id.
    pub component_id: String,
    /// The new limit.
    #[arg(long)]
    pub max_instances: u32,
    /// The host it runs on; found from the inventories when omitted.
    #[arg(long)]
    pub host_id: Option<String>,
    /// Named config to give it (repeatable); replaces the config it was started with.
    #[arg(long = "config")]
    pub config: Vec<String>,
    /// Return once the host accepted the request, without waiting for the outcome event.
    #[arg(long)]
    pub skip_wait: bool,
}

/// `wash update …`.
#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Switch a running component to a new reference and wait for the outcome.
    Component(UpdateComponentArgs),
}

/// `wash update component`.
#[derive(Debug, Args)]
pub struct UpdateComponentArgs {
    /// The component id.
    pub component_id: String,
    /// The new file path or reference.
    pub new_ref: String,
    /// The host it runs on; found from the inventories when omitted.
    #[arg(long)]
    pub host_id: Option<String>,
    /// Return once the host accepted the request, without waiting for the outcome event.
    #[arg(long)]
    pub skip_wait: bool,
}

/// `wash link …`.
#[derive(Debug, Subcommand)]
pub enum LinkCommand {
    /// Let SOURCE call INTERFACEs of NAMESPACE:PACKAGE on TARGET.
    Put(LinkPutArgs),
    /// Delete the links from SOURCE for NAMESPACE:PACKAGE under a link name.
    Del(LinkDelArgs),
    /// List every link in the lattice.
    Get,
}

/// `wash link put`.
#[derive(Debug, Args)]
pub struct LinkPutArgs {
    /// The calling component or provider id.
    pub source_id: String,
    /// The called component or provider id.
    pub target: String,
    /// WIT namespace, e.g. wasi.
    pub wit_namespace: String,
    /// WIT package, e.g. http.
    pub wit_package: String,
    /// An interface of the package (repeatable, at least one).
    #[arg(long = "interface", required = true)]
    pub interfaces: Vec<String>,
    /// The link name.
    #[arg(long, default_value = "default")]
    pub link_name: String,
    /// Named config the source sees for this link (repeatable; it must exist).
    #[arg(long)]
    pub source_config: Vec<String>,
    /// Named config the target sees for this link (repeatable; it must exist).
    #[arg(long)]
    pub target_config: Vec<String>,
}

/// `wash link del`.
#[derive(Debug, Args)]
pub struct LinkDelArgs {
    /// The calling component or provider id.
    pub source_id: String,
    /// WIT namespace.
    pub wit_namespace: String,
    /// WIT package.
    pub wit_package: String,
    /// The link name.
    #[arg(long, default_value = "default")]
    pub link_name: String,
}

/// `wash config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Create or replace named config with key=value pairs.
    Put {
        /// The config name.
        name: String,
        /// key=value pairs (at least one).
        #[arg(required = true, value_parser = parse_key_value)]
        values: Vec<(String, String)>,
    },
    /// Print named config.
    Get {
        /// The config name.
        name: String,
    },
    /// Delete named config.
    Del {
        /// The config name.
        name: String,
    },
}

/// `wash label …`.
#[derive(Debug, Subcommand)]
pub enum LabelCommand {
    /// Set labels key=value on a host.
    Put {
        /// The host id.
        host_id: String,
        /// key=value pairs (at least one).
        #[arg(required = true, value_parser = parse_key_value)]
        labels: Vec<(String, String)>,
    },
    /// Remove labels from a host.
    Del {
        /// The host id.
        host_id: String,
        /// Label keys (at least one).
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// `wash get …`.
#[derive(Debug, Subcommand)]
pub enum GetCommand {
    /// The hosts that answer a ping.
    Hosts,
    /// What a host runs (every host when none is named).
    Inventory {
        /// The host id.
        host_id: Option<String>,
    },
    /// Every link in the lattice.
    Links,
    /// The claims of every signed component seen in the lattice.
    Claims,
}

/// Parses `key=value` (the value may be empty and may contain `=`).
pub fn parse_key_value(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{arg}` is not of the form key=value")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn key_values() {
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(parse_key_value("a="), Ok(("a".into(), String::new())));
        assert!(parse_key_value("=b").is_err());
        assert!(parse_key_value("ab").is_err());
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["wash", "get", "hosts", "-o", "json", "-x", "edge", "--ctl-port", "4333"]).expect("parses");
        assert_eq!(cli.global.lattice, "edge");
        assert_eq!(cli.global.ctl_port, 4333);
        assert_eq!(cli.global.output, Format::Json);
    }
}
