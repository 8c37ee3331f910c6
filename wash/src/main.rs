//! `wash`: the Trellis command line. It talks to a lattice only through the control client of
//! `trellis-lattice`, and can run a NATS server and a host locally (`wash up`).
//!
//! Modules: [`cli`] (arguments), [`output`] (text, JSON, tables, errors), [`lattice`]
//! (connecting, shared lookups), [`events`] (waiting for outcomes), [`commands`] (one module
//! per noun), [`local`] (`up`/`down` process management), [`project`] (`wasmcloud.toml`), [`ui`] (`wash ui`,
//! the dashboard).

mod cli;
mod commands;
mod events;
mod lattice;
mod local;
mod output;
mod project;
mod ui;

fn main() {
    let matches = cli::command().get_matches();
    let cli = match <cli::Cli as clap::FromArgMatches>::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let format = cli.global.output;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            output::print_error(format, &anyhow::Error::new(e).context("cannot start the async runtime"));
            std::process::exit(1);
        }
    };
    let code = match runtime.block_on(commands::run(&cli.global, cli.command)) {
        Ok(report) => {
            report.print(format);
            0
        }
        Err(e) => {
            output::print_error(format, &e);
            1
        }
    };
    // Background tasks (NATS connections, a stopped host's leftovers) must not delay the exit.
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
