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
    /// Cordon, uncordon or drain a host (Trellis' control extension).
    #[command(subcommand)]
    Host(HostCommand),
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
    /// Put, list and delete secrets in the built-in secrets backend (values never printed).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Put and delete host labels.
    #[command(subcommand)]
    Label(LabelCommand),
    /// List hosts, inventories, links and claims.
    #[command(subcommand)]
    Get(GetCommand),
    /// Send an HTTP request to a component over the data plane and print the response body.
    Call(CallArgs),
    /// Watch the calls into and out of a component, wherever it runs, until Ctrl-C.
    Spy(SpyArgs),
    /// Serve the lattice dashboard in the browser (hosts, links, apps, live events), until Ctrl-C.
    Ui(crate::ui::UiArgs),
    /// Push a component or provider to an OCI registry or the lattice's own store (lattice://NAME:TAG).
    Push(crate::commands::artifact::PushArgs),
    /// Pull a component or provider from a registry or the lattice store to a file.
    Pull(crate::commands::artifact::PullArgs),
    /// Show a file's or reference's digest, claims and WIT world (imports and exports).
    Inspect(crate::commands::artifact::InspectArgs),
    /// Generate, show and list nkeys (accounts, components, providers, hosts, users).
    #[command(subcommand)]
    Keys(crate::commands::keys::KeysCommand),
    /// Sign components and inspect their claims.
    #[command(subcommand)]
    Claims(crate::commands::claims::ClaimsCommand),
    /// Declarative applications (wadm manifests): validate, deploy, undeploy, list, inspect.
    #[command(subcommand)]
    App(crate::commands::app::AppCommand),
    /// Create a component project from a built-in template.
    #[command(subcommand)]
    New(crate::commands::new::NewCommand),
    /// Build and sign the project in wasmcloud.toml.
    Build(crate::commands::build::BuildArgs),
    /// Build, run on a local lattice, and rebuild and swap in each change until Ctrl-C.
    Dev(crate::commands::dev::DevArgs),
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
    /// The JetStream domain of the NATS server wash up starts; a leaf needs one other than the
    /// hub's (e.g. `edge`).
    #[arg(long, env = "NATS_JS_DOMAIN")]
    pub nats_js_domain: Option<String>,
    /// The JetStream domain that holds the lattice's state, for the host: the hub's domain
    /// when the NATS server is a leaf node (e.g. `hub`).
    #[arg(long, visible_alias = "js-domain", env = "WASMCLOUD_JS_DOMAIN")]
    pub wasmcloud_js_domain: Option<String>,
    /// Registries the host may speak plain HTTP to, comma-separated (e.g. localhost:5000).
    #[arg(long, env = "WASMCLOUD_OCI_ALLOWED_INSECURE", value_delimiter = ',')]
    pub allowed_insecure: Vec<String>,
    /// Let the host run `:latest` (and untagged) references.
    #[arg(long, env = "WASMCLOUD_OCI_ALLOW_LATEST")]
    pub allow_latest: bool,
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
    /// Grant secret NAME (stored under key KEY, default NAME, in the built-in backend): puts
    /// the reference config `SECRET_NAME` and gives it to the component (repeatable).
    #[arg(long = "secret", value_name = "NAME[=KEY]")]
    pub secrets: Vec<String>,
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

/// `wash secrets …`.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Store a secret (a new version if it exists); the value travels sealed to the backend.
    Put {
        /// The secret's name (its key in the backend).
        name: String,
        /// The value (visible in your shell history and process list: prefer the others).
        #[arg(long, conflicts_with_all = ["from_file", "from_stdin"])]
        value: Option<String>,
        /// Read the value from this file (bytes as they are).
        #[arg(long, conflicts_with = "from_stdin")]
        from_file: Option<std::path::PathBuf>,
        /// Read the value from standard input.
        #[arg(long)]
        from_stdin: bool,
        /// The backend to store it in.
        #[arg(long, default_value = trellis_lattice::secrets::DEFAULT_BACKEND)]
        backend: String,
    },
    /// List stored secrets: names and versions, never values.
    List {
        /// The backend to ask.
        #[arg(long, default_value = trellis_lattice::secrets::DEFAULT_BACKEND)]
        backend: String,
    },
    /// Delete a secret with all its versions.
    Del {
        /// The secret's name.
        name: String,
        /// The backend to ask.
        #[arg(long, default_value = trellis_lattice::secrets::DEFAULT_BACKEND)]
        backend: String,
    },
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

/// `wash host …`.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// The host keeps what it runs but gets no new placements and bids in no auction.
    Cordon {
        /// The host id.
        host_id: String,
    },
    /// The host takes new placements again.
    Uncordon {
        /// The host id.
        host_id: String,
    },
    /// Cordon the host; the app reconciler starts replacements elsewhere, then stops the
    /// host's managed replicas once their in-flight requests are answered.
    Drain {
        /// The host id.
        host_id: String,
        /// Wait until the host is drained (no managed replica left on it).
        #[arg(long)]
        wait: bool,
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

/// `wash call`.
#[derive(Debug, Args)]
#[command(after_help = "Exits 0 whatever the HTTP status (-v shows it); non-zero only when the call itself fails.")]
pub struct CallArgs {
    /// The component id to call (its `wasi:http/incoming-handler`).
    pub component_id: String,
    /// The request path and query.
    #[arg(default_value = "/")]
    pub path: String,
    /// The request method [default: GET, or POST with -d/--data-file].
    #[arg(short = 'X', long = "request", alias = "method", value_name = "METHOD", value_parser = parse_method)]
    pub method: Option<String>,
    /// A request header `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// The request body.
    #[arg(short = 'd', long = "data", value_name = "BODY", conflicts_with = "data_file")]
    pub data: Option<String>,
    /// Read the request body from a file (`-` for stdin), streamed.
    #[arg(long, value_name = "FILE")]
    pub data_file: Option<PathBuf>,
    /// The link name the call travels under.
    #[arg(long, default_value = "default")]
    pub link_name: String,
    /// Also print the status line and the response headers (on stderr), and the trace id.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Make the call in this W3C trace context (`00-{trace id}-{span id}-{flags}`), e.g. a
    /// script's own; otherwise, with OTEL_EXPORTER_OTLP_ENDPOINT set, `wash` starts a trace
    /// and exports its span.
    #[arg(long, value_name = "TRACEPARENT", value_parser = parse_traceparent)]
    pub traceparent: Option<String>,
}

/// Checks a W3C `traceparent`.
pub fn parse_traceparent(arg: &str) -> Result<String, String> {
    match trellis_lattice::telemetry::parse_traceparent(arg) {
        Some(_) => Ok(arg.trim().to_string()),
        None => Err(format!("`{arg}` is not a W3C traceparent; it looks like 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")),
    }
}

/// `wash spy`.
#[derive(Debug, Args)]
#[command(after_help = "One line per call (-o json: one JSON object per line) until Ctrl-C, which exits 0. \
Hosts record calls only while a spy listens; records start within about a second.")]
pub struct SpyArgs {
    /// The component to watch.
    pub component_id: String,
    /// Also show the first 1 KiB of each request and response (HTTP bodies; arguments and
    /// results of other calls).
    #[arg(long)]
    pub with_bodies: bool,
}

/// Parses `Name: value` (curl's `-H` form).
pub fn parse_header(arg: &str) -> Result<(String, String), String> {
    let Some((name, value)) = arg.split_once(':') else {
        return Err(format!("`{arg}` is not of the form `Name: value`"));
    };
    let name = name.trim();
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("`{name}` is not a valid header name (in `{arg}`)"));
    }
    let value = value.trim();
    if http::HeaderValue::from_str(value).is_err() {
        return Err(format!("the value of header `{name}` has characters a header cannot carry"));
    }
    Ok((name.to_string(), value.to_string()))
}

/// Parses an HTTP method (any token: `GET`, `PURGE`, …).
pub fn parse_method(arg: &str) -> Result<String, String> {
    match http::Method::from_bytes(arg.as_bytes()) {
        Ok(m) if !arg.is_empty() => Ok(m.to_string()),
        _ => Err(format!("`{arg}` is not an HTTP method")),
    }
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
    fn headers() {
        assert_eq!(parse_header("Content-Type: text/plain"), Ok(("Content-Type".into(), "text/plain".into())));
        assert_eq!(parse_header("x-a:b:c"), Ok(("x-a".into(), "b:c".into())));
        assert_eq!(parse_header("x-empty:"), Ok(("x-empty".into(), String::new())));
        assert!(parse_header("no colon").is_err());
        assert!(parse_header("bad name: v").is_err());
        assert!(parse_header(": v").is_err());
    }

    #[test]
    fn call_flags() {
        let cli = Cli::try_parse_from(["wash", "call", "echo", "/echo", "-X", "PUT", "-H", "a: b", "-d", "hi", "-v"]).expect("parses");
        let Command::Call(args) = cli.command else { panic!("not a call") };
        assert_eq!((args.component_id.as_str(), args.path.as_str()), ("echo", "/echo"));
        assert_eq!(args.method.as_deref(), Some("PUT"));
        assert_eq!(args.headers, vec![("a".to_string(), "b".to_string())]);
        assert_eq!(args.data.as_deref(), Some("hi"));
        assert!(args.verbose);
        assert!(Cli::try_parse_from(["wash", "call", "x", "-d", "a", "--data-file", "f"]).is_err());
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = Cli::try_parse_from(["wash", "get", "hosts", "-o", "json", "-x", "edge", "--ctl-port", "4333"]).expect("parses");
        assert_eq!(cli.global.lattice, "edge");
        assert_eq!(cli.global.ctl_port, 4333);
        assert_eq!(cli.global.output, Format::Json);
    }
}

/// The top-level commands by task, as `wash --help` lists them (every command is in one).
const GROUPS: &[(&str, &[&str])] = &[
    ("Develop", &["new", "build", "dev", "call"]),
    ("Run", &["up", "down", "start", "stop", "scale", "update", "app"]),
    ("Inspect", &["get", "inspect", "spy", "ui"]),
    ("Manage", &["link", "config", "secrets", "label", "host", "push", "pull", "keys", "claims", "completions"]),
];

/// One example for every command (by its path of subcommand names), shown in its `--help`.
const EXAMPLES: &[(&str, &str)] = &[
    ("new component", "wash new component hello --template hello-http"),
    ("build", "wash build -p ./hello"),
    ("dev", "cd hello && wash dev"),
    ("call", "wash call hello /greet --data '{\"name\":\"me\"}'"),
    ("up", "wash up -d -l zone=laptop"),
    ("down", "wash down --purge-jetstream"),
    ("start component", "wash start component ghcr.io/org/hello:0.1.0 hello --max-instances 4"),
    ("start provider", "wash start provider builtin://http-server http-server"),
    ("stop component", "wash stop component hello"),
    ("stop provider", "wash stop provider http-server"),
    ("stop host", "wash stop host NB…"),
    ("scale component", "wash scale component hello --max-instances 8"),
    ("update component", "wash update component hello ghcr.io/org/hello:0.2.0"),
    ("app validate", "wash app validate wadm.yaml"),
    ("app deploy", "wash app deploy examples/http-kv-counter/wadm.yaml"),
    ("app undeploy", "wash app undeploy http-kv-counter"),
    ("app list", "wash app list -o json"),
    ("app get", "wash app get http-kv-counter --version v0.1.0"),
    ("app status", "wash app status http-kv-counter"),
    ("app history", "wash app history http-kv-counter"),
    ("app delete", "wash app delete http-kv-counter --version v0.1.0"),
    ("get hosts", "wash get hosts -o json"),
    ("get inventory", "wash get inventory NB…"),
    ("get links", "wash get links"),
    ("get claims", "wash get claims"),
    ("inspect", "wash inspect ./build/hello_s.wasm"),
    ("spy", "wash spy hello --with-bodies"),
    ("ui", "wash ui --addr 127.0.0.1:3030"),
    ("link put", "wash link put http-server hello wasi http --interface incoming-handler --source-config hello-http"),
    ("link del", "wash link del http-server wasi http"),
    ("link get", "wash link get"),
    ("config put", "wash config put hello-http address=127.0.0.1:8080"),
    ("config get", "wash config get hello-http"),
    ("config del", "wash config del hello-http"),
    ("secrets put", "wash secrets put api-token --from-file token.txt"),
    ("secrets list", "wash secrets list"),
    ("secrets del", "wash secrets del api-token"),
    ("label put", "wash label put NB… zone=edge"),
    ("label del", "wash label del NB… zone"),
    ("host cordon", "wash host cordon NB…"),
    ("host uncordon", "wash host uncordon NB…"),
    ("host drain", "wash host drain NB… --wait"),
    ("push", "wash push localhost:5000/hello:0.1.0 ./build/hello_s.wasm"),
    ("pull", "wash pull lattice://hello:0.1.0 --destination hello.wasm"),
    ("keys gen", "wash keys gen account"),
    ("keys get", "wash keys get wash_account"),
    ("keys list", "wash keys list"),
    ("claims sign", "wash claims sign hello.wasm --name hello --ver 0.1.0"),
    ("claims inspect", "wash claims inspect hello_s.wasm"),
    ("completions", "wash completions bash > /etc/bash_completion.d/wash"),
];

/// The command line with `--help` grouped by task and an example in every command's help.
pub fn command() -> clap::Command {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    for (path, example) in EXAMPLES {
        cmd = with_example(cmd, &path.split(' ').collect::<Vec<_>>(), example);
    }
    let mut listing = String::new();
    let width = GROUPS.iter().flat_map(|(_, names)| names.iter()).map(|n| n.len()).max().unwrap_or(0);
    for (group, names) in GROUPS {
        listing.push_str(&format!("{group}:\n"));
        for name in *names {
            let about = cmd.find_subcommand(name).and_then(|c| c.get_about()).map(|a| a.to_string()).unwrap_or_default();
            listing.push_str(&format!("  {name:<width$}  {about}\n"));
        }
        listing.push('\n');
    }
    cmd.help_template(format!("{{about-with-newline}}\n{{usage-heading}} {{usage}}\n\n{listing}Options:\n{{options}}{{after-help}}"))
}

fn with_example(cmd: clap::Command, path: &[&str], example: &str) -> clap::Command {
    match path {
        [] => {
            let before = cmd.get_after_help().map(|h| format!("{h}\n\n")).unwrap_or_default();
            if before.contains("Example") {
                return cmd;
            }
            cmd.after_help(format!("{before}Example:\n  {example}"))
        }
        [first, rest @ ..] => cmd.mut_subcommand(*first, |sub| with_example(sub, rest, example)),
    }
}

#[cfg(test)]
mod grouping_tests {
    use super::*;

    fn leaves(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(String, bool)>) {
        let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|c| c.get_name() != "help").collect();
        if subs.is_empty() {
            out.push((path.join(" "), cmd.get_after_help().is_some_and(|h| h.to_string().contains("Example"))));
        }
        for sub in subs {
            let mut p = path.clone();
            p.push(sub.get_name().to_string());
            leaves(sub, p, out);
        }
    }

    #[test]
    fn every_command_is_grouped_and_has_an_example() {
        let cmd = command();
        let grouped: Vec<&str> = GROUPS.iter().flat_map(|(_, n)| n.iter().copied()).collect();
        for sub in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
            assert_eq!(grouped.iter().filter(|n| **n == sub.get_name()).count(), 1, "`{}` must be in exactly one help group", sub.get_name());
        }
        let mut all = Vec::new();
        leaves(&cmd, Vec::new(), &mut all);
        let missing: Vec<&String> = all.iter().filter(|(_, has)| !has).map(|(p, _)| p).collect();
        assert!(missing.is_empty(), "commands without an example in their help: {missing:?}");
        // Each example parses as a command line.
        for (path, example) in EXAMPLES {
            let line = example.rsplit("&& ").next().unwrap_or(example);
            let line = line.split(" > ").next().unwrap_or(line);
            let words: Vec<String> = line.split_whitespace().map(|w| w.trim_matches('\'').to_string()).collect();
            if let Err(e) = cmd.clone().try_get_matches_from(&words) {
                panic!("the example of `{path}` does not parse: {example}\n{e}");
            }
        }
        let help = cmd.clone().render_help().to_string();
        for group in ["Develop:", "Run:", "Inspect:", "Manage:"] {
            assert!(help.contains(group), "{help}");
        }
    }
}
