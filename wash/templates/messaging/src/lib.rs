//! `{{name}}`: answers each NATS request it receives through `wasmcloud:messaging` (on the
//! subjects of its wadm.yaml) with a greeting and the request's body.
//! `wash build` builds and signs it; `wash dev` runs it and swaps in each change.

wit_bindgen::generate!({ path: "wit", world: "component", generate_all });

use exports::wasmcloud::messaging::handler::Guest;
use wasmcloud::messaging::consumer::publish;
use wasmcloud::messaging::types::BrokerMessage;

/// Put before the request's body in each answer.
const GREETING: &str = "Hello from {{name}}: ";

struct Component;

export!(Component);

impl Guest for Component {
    fn handle_message(msg: BrokerMessage) -> Result<(), String> {
        let Some(reply_to) = msg.reply_to else {
            eprintln!("a message on `{}` has no reply-to: nothing to answer", msg.subject);
            return Ok(());
        };
        let body = [GREETING.as_bytes(), &msg.body].concat();
        publish(&BrokerMessage { subject: reply_to, body, reply_to: None }).map_err(|e| format!("cannot answer on `{}`: {e}", msg.subject))
    }
}
