//! Least authority, visible: components get no directories, no environment and no network
//! (the deny-by-default WASI context of [`crate::runtime`]); this module makes a component's
//! attempt to use them show in the host log, tagged with the component id, rather than only as
//! an error inside the component.
//!
//! It shadows, in the host's linker, the WASI functions a component goes through to reach for
//! each: `wasi:filesystem/preopens.get-directories` (where a guest looks for a directory to
//! open any path in), `wasi:cli/environment.get-environment`, and
//! `wasi:sockets/tcp-create-socket.create-tcp-socket` / `udp-create-socket.create-udp-socket`
//! (the first step of any connection: the context allows neither TCP nor UDP, so no address is
//! ever reached). Each answers what wasmtime-wasi answers for that context (no directories, no
//! variables, `access-denied`) and logs a warning the first time a store (one invocation)
//! makes it. Guests importing any `0.2.x` of these interfaces resolve to the shadows, as they
//! resolve to wasmtime-wasi's own definitions.

use wasmtime::component::{Linker, Val};
use wasmtime::{Result, StoreContextMut};

use crate::runtime::State;

/// The version of the WASI 0.2 interfaces wasmtime-wasi defines (its `wit/deps`); a shadow
/// must use the same name to replace the definition rather than add a second one.
const WASI_VERSION: &str = "0.2.12";

/// What a component reached for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Authority {
    Directories,
    Environment,
    Tcp,
    Udp,
}

/// The denials a store has logged, so an invocation logs each kind once.
#[derive(Debug, Default)]
pub struct Denials {
    logged: u8,
}

impl Denials {
    /// Records `what`; true the first time.
    fn first(&mut self, what: Authority) -> bool {
        let bit = 1u8 << what as u8;
        let first = self.logged & bit == 0;
        self.logged |= bit;
        first
    }
}

/// Logs that the component of `store` reached for `what`, once per store.
fn deny(store: &mut StoreContextMut<'_, State>, what: Authority) {
    if !store.data_mut().denials.first(what) {
        return;
    }
    let id = store.data().link_context().component_id.clone();
    match what {
        Authority::Directories => tracing::warn!(
            component_id = %id,
            "denied: component `{id}` looked for preopened directories to open a file in; components get no \
             filesystem by design (deny-by-default), only what their links provide"
        ),
        Authority::Environment => tracing::warn!(
            component_id = %id,
            "denied: component `{id}` asked for its environment variables; components get no environment by \
             design (deny-by-default); give it named config instead (wasi:config)"
        ),
        Authority::Tcp => tracing::warn!(
            component_id = %id,
            "denied: component `{id}` tried to open a TCP socket; components get network access only through links"
        ),
        Authority::Udp => tracing::warn!(
            component_id = %id,
            "denied: component `{id}` tried to open a UDP socket; components get network access only through links"
        ),
    }
}

/// `result<_, error-code>` with `error-code::access-denied`.
fn access_denied() -> Val {
    Val::Result(Err(Some(Box::new(Val::Enum("access-denied".into())))))
}

/// Shadows the WASI functions above in `linker`, which already holds wasmtime-wasi's.
pub(crate) fn add_to_linker(linker: &mut Linker<State>) -> Result<()> {
    linker.allow_shadowing(true);
    let result = shadow(linker);
    linker.allow_shadowing(false);
    result
}

fn shadow(linker: &mut Linker<State>) -> Result<()> {
    let mut preopens = linker.instance(&format!("wasi:filesystem/preopens@{WASI_VERSION}"))?;
    preopens.func_new("get-directories", |mut store, _, _, results| {
        deny(&mut store, Authority::Directories);
        results[0] = Val::List(Vec::new());
        Ok(())
    })?;
    let mut environment = linker.instance(&format!("wasi:cli/environment@{WASI_VERSION}"))?;
    environment.func_new("get-environment", |mut store, _, _, results| {
        deny(&mut store, Authority::Environment);
        results[0] = Val::List(Vec::new());
        Ok(())
    })?;
    let mut tcp = linker.instance(&format!("wasi:sockets/tcp-create-socket@{WASI_VERSION}"))?;
    tcp.func_new("create-tcp-socket", |mut store, _, _, results| {
        deny(&mut store, Authority::Tcp);
        results[0] = access_denied();
        Ok(())
    })?;
    let mut udp = linker.instance(&format!("wasi:sockets/udp-create-socket@{WASI_VERSION}"))?;
    udp.func_new("create-udp-socket", |mut store, _, _, results| {
        deny(&mut store, Authority::Udp);
        results[0] = access_denied();
        Ok(())
    })?;
    Ok(())
}
