//! Test support for Trellis: real `nats-server` processes ([`nats`]), real `redis-server`
//! processes ([`redis`]) and the prebuilt wasm components the integration tests deploy
//! ([`components`]).

pub mod components;
pub mod nats;
pub mod hosts;
pub mod http;
pub mod redis;
pub mod scenario;
