//! The commands that talk to a running lattice, one module per noun, and the dispatch from the
//! parsed command line. Local process management (`up`, `down`) lives in `crate::local`;
//! `call` is the one command on the data plane rather than the control interface.

use anyhow::Context as _;
use trellis_lattice::ErrorKind;
use trellis_lattice::client::CtlClient;

use crate::cli::{
    Command, ConfigCommand, GetCommand, Global, HostCommand, LabelCommand, LinkCommand, ScaleCommand, SecretsCommand, StartCommand, StopCommand, UpdateCommand,
};
use crate::output::Report;

pub mod app;
pub mod artifact;
pub mod build;
mod call;
pub mod claims;
mod component;
mod config;
pub mod dev;
mod host;
pub mod keys;
mod link;
pub mod new;
mod provider;
mod secrets;
mod spy;

/// Runs one parsed command.
pub async fn run(g: &Global, command: Command) -> anyhow::Result<Report> {
    match command {
        Command::Up(args) => crate::local::up::run(g, &args).await,
        Command::Down(args) => crate::local::down::run(g, &args).await,
        Command::Start(StartCommand::Component(args)) => component::start(g, &args).await,
        Command::Start(StartCommand::Provider(args)) => provider::start(g, &args).await,
        Command::Stop(StopCommand::Component(args)) => component::stop(g, &args).await,
        Command::Stop(StopCommand::Provider(args)) => provider::stop(g, &args).await,
        Command::Stop(StopCommand::Host(args)) => host::stop(g, &args).await,
        Command::Host(HostCommand::Cordon { host_id }) => host::cordon(g, &host_id).await,
        Command::Host(HostCommand::Uncordon { host_id }) => host::uncordon(g, &host_id).await,
        Command::Host(HostCommand::Drain { host_id, wait }) => host::drain(g, &host_id, wait).await,
        Command::Scale(ScaleCommand::Component(args)) => component::scale(g, &args).await,
        Command::Update(UpdateCommand::Component(args)) => component::update(g, &args).await,
        Command::Link(LinkCommand::Put(args)) => link::put(g, &args).await,
        Command::Link(LinkCommand::Del(args)) => link::del(g, &args).await,
        Command::Link(LinkCommand::Get) | Command::Get(GetCommand::Links) => link::get(g).await,
        Command::Config(ConfigCommand::Put { name, values }) => config::put(g, &name, values).await,
        Command::Config(ConfigCommand::Get { name }) => config::get(g, &name).await,
        Command::Config(ConfigCommand::Del { name }) => config::del(g, &name).await,
        Command::Secrets(SecretsCommand::Put { name, value, from_file, from_stdin, backend }) => {
            secrets::put(g, &backend, &name, secrets::Source::pick(value, from_file, from_stdin)?).await
        }
        Command::Secrets(SecretsCommand::List { backend }) => secrets::list(g, &backend).await,
        Command::Secrets(SecretsCommand::Del { name, backend }) => secrets::del(g, &backend, &name).await,
        Command::Label(LabelCommand::Put { host_id, labels }) => host::label_put(g, &host_id, &labels).await,
        Command::Label(LabelCommand::Del { host_id, keys }) => host::label_del(g, &host_id, &keys).await,
        Command::Get(GetCommand::Hosts) => host::get_hosts(g).await,
        Command::Get(GetCommand::Inventory { host_id }) => host::get_inventory(g, host_id.as_deref()).await,
        Command::Get(GetCommand::Claims) => host::get_claims(g).await,
        Command::Call(args) => call::run(g, &args).await,
        Command::Spy(args) => spy::run(g, &args).await,
        Command::Push(args) => artifact::push(g, &args).await,
        Command::Pull(args) => artifact::pull(g, &args).await,
        Command::Inspect(args) => artifact::inspect(g, &args).await,
        Command::Keys(command) => keys::run(command),
        Command::Claims(command) => claims::run(command),
        Command::App(command) => app::run(g, command).await,
        Command::New(command) => new::run(command),
        Command::Build(args) => build::run(g, &args).await,
        Command::Dev(args) => dev::run(g, &args).await,
        Command::Ui(args) => crate::ui::run(g, &args).await,
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut crate::cli::Cli::command(), "wash", &mut script);
            crate::output::print_stdout(&String::from_utf8_lossy(&script));
            Ok(Report::none())
        }
    }
}

/// Fails, naming the first one, unless every named config exists.
async fn check_configs_exist(ctl: &CtlClient, names: &[String]) -> anyhow::Result<()> {
    for name in names {
        match ctl.get_config(name).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Refused => {
                anyhow::bail!("config `{name}` does not exist in lattice `{}`; create it with `wash config put {name} KEY=VALUE`", ctl.lattice())
            }
            Err(e) => return Err(e).with_context(|| format!("cannot check that config `{name}` exists")),
        }
    }
    Ok(())
}

/// `constraints zone=edge, tier=a` or `no constraints`, for messages.
fn constraints_text(constraints: &[(String, String)]) -> String {
    if constraints.is_empty() {
        return "no constraints".into();
    }
    let list = constraints.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ");
    format!("constraints {list}")
}
