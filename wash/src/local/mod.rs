//! Running a lattice on this machine: `wash up` (a nats-server and an in-process host,
//! foreground or detached) and `wash down`, with the state they share in the wash home
//! directory and the process handling they need.

pub mod down;
pub(crate) mod home;
mod nats_server;
mod process;
pub mod up;
