//! `secret-reader`: a test fixture that reads secrets through `wasmcloud:secrets`.
//!
//! It exports `wasi:http/incoming-handler` and imports `wasmcloud:secrets/store` and `reveal`
//! (`@0.1.0-draft`): `/secret/NAME` gets secret `NAME` and answers `200` with its revealed
//! value (text as is, bytes as `bytes:` and their length); an error value answers `403`
//! with `err ` and the error.

use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

mod bindings {
    wit_bindgen::generate!({
        inline: "
            package trellis:secret-reader;
            world secret-reader {
                import wasmcloud:secrets/store@0.1.0-draft;
                import wasmcloud:secrets/reveal@0.1.0-draft;
            }
        ",
        path: ["../../../interfaces/wasmcloud-secrets"],
        world: "trellis:secret-reader/secret-reader",
        generate_all,
    });
}

use bindings::wasmcloud::secrets::reveal::reveal;
use bindings::wasmcloud::secrets::store::{SecretValue, SecretsError, get};

struct Reader;

wasi::http::proxy::export!(Reader);

impl Guest for Reader {
    fn handle(req: IncomingRequest, response_out: ResponseOutparam) {
        let path = req.path_with_query().unwrap_or_default();
        let Some(name) = path.strip_prefix("/secret/") else {
            return respond(response_out, 404, b"use /secret/NAME\n");
        };
        match get(name) {
            Ok(secret) => match reveal(&secret) {
                SecretValue::String(s) => respond(response_out, 200, s.as_bytes()),
                SecretValue::Bytes(b) => respond(response_out, 200, format!("bytes:{}", b.len()).as_bytes()),
            },
            Err(e) => {
                let text = match e {
                    SecretsError::Upstream(m) => format!("upstream: {m}"),
                    SecretsError::Io(m) => format!("io: {m}"),
                    SecretsError::NotFound => "not found".to_string(),
                };
                respond(response_out, 403, format!("err {text}").as_bytes())
            }
        }
    }
}

fn respond(response_out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).expect("content-type is a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("body is taken only once");
    ResponseOutparam::set(response_out, Ok(response));
    let mut out = outgoing.write().expect("stream is taken only once");
    out.write_all(body).expect("write body");
    out.flush().expect("flush body");
    drop(out);
    OutgoingBody::finish(outgoing, None).expect("finish body");
}
