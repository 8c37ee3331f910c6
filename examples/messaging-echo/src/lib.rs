//! `messaging-echo`: answers messages it receives through `wasmcloud:messaging`.
//!
//! It exports `wasmcloud:messaging/handler@0.2.0` and imports `consumer` (see
//! `interfaces/wasmcloud-messaging`), as components built for wasmCloud do:
//!
//! - a message with a `reply-to` (a NATS request) is answered on that subject with its body
//!   uppercased (ASCII letters only; other bytes pass through unchanged), so
//!   `nats req echo.hi 'hello'` prints `HELLO`;
//! - a message without a `reply-to` has no one to answer: it is dropped with a line on stderr
//!   (which the host logs with the component id). It is not re-published anywhere, so a wide
//!   subscription such as `echo.>` can never feed the echo back to itself.
//!
//! A failed publish of the answer is returned as the handler's error, which the provider logs.
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; `wadm.yaml` beside this
//! crate deploys it with the messaging-nats provider.

wit_bindgen::generate!({
    path: "../../interfaces/wasmcloud-messaging",
    world: "wasmcloud:messaging/messaging",
});

use exports::wasmcloud::messaging::handler::Guest;
use wasmcloud::messaging::consumer::publish;
use wasmcloud::messaging::types::BrokerMessage;

struct Echo;

export!(Echo);

impl Guest for Echo {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        let Some(reply_to) = msg.reply_to else {
            eprintln!("message on `{}` has no reply-to: nothing to answer", msg.subject);
            return Ok(());
        };
        let answer = BrokerMessage { subject: reply_to, body: msg.body.to_ascii_uppercase(), reply_to: None };
        publish(&answer).map_err(|e| format!("cannot answer the message on `{}`: {e}", msg.subject))
    }
}
