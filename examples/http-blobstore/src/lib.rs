//! `http-blobstore`: files over HTTP in a blobstore it reaches through a link, shaped like
//! wasmCloud's `http-blobstore` example.
//!
//! It exports `wasi:http/incoming-handler` and imports `wasi:blobstore/blobstore@0.2.0-draft`:
//!
//! - `PUT /C/O` stores the request body as object `O` of container `C` (made if missing),
//!   streamed: the body goes to the blobstore as it arrives (`write-data`, then the writes,
//!   then `finish`). `?write-first` writes the body before `write-data` instead (the order
//!   wasmCloud examples use for small values). Answers `stored N bytes`.
//! - `GET /C/O` answers the object, streamed (`get-data`, `incoming-value-consume-async`);
//!   `?sync` reads it with `incoming-value-consume-sync`; `?range=S-E` bytes `S..=E`.
//! - `GET /C` lists the container, one name per line; `GET /C?exists` answers `true`/`false`;
//!   `GET /C?info` the container's name and creation time; `GET /C/O?info` the object's size.
//! - `DELETE /C/O` deletes the object, `DELETE /C` the container; `PUT /C` creates it.
//! - `POST /C/O?copy-to=C2/O2` and `?move-to=C2/O2` copy or move it.
//!
//! A blobstore error is an ordinary value: the answer is `404` (no such container or
//! object), `400` (a refused name) or `500`, with the error's text.
//!
//! Build it with `cargo build --release --target wasm32-wasip2`.

use std::io::Write as _;

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam};

mod bindings {
    wit_bindgen::generate!({
    inline: "
        package trellis:http-blobstore;
        world files {
            import wasi:blobstore/blobstore@0.2.0-draft;
        }
    ",
    path: ["../../interfaces/wasi-blobstore"],
    world: "trellis:http-blobstore/files",
    generate_all,
    });
}

use bindings::wasi::blobstore::blobstore;
use bindings::wasi::blobstore::types::{IncomingValue, ObjectId, OutgoingValue};
use bindings::wasi::io::streams::{OutputStream, StreamError};

/// The most read from a stream at a time.
const PIECE: u64 = 64 * 1024;

struct Files;

wasi::http::proxy::export!(Files);

/// What a request ends with: a status and a body, or a streamed object.
enum Answer {
    Text(u16, String),
    Object(IncomingValue),
}

impl Guest for Files {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let full = request.path_with_query().unwrap_or_default();
        let (path, query) = full.split_once('?').unwrap_or((&full, ""));
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let container = parts.next().unwrap_or("").to_string();
        let object = parts.next().filter(|o| !o.is_empty()).map(str::to_string);
        let answer = if container.is_empty() {
            Answer::Text(400, "name a container in the path, e.g. /photos or /photos/cat.jpg\n".into())
        } else {
            match answer(&request, &container, object.as_deref(), query) {
                Ok(a) => a,
                Err(e) => Answer::Text(status_of(&e), format!("{e}\n")),
            }
        };
        match answer {
            Answer::Text(status, text) => respond(response_out, status, text.as_bytes()),
            Answer::Object(value) => stream_out(response_out, value),
        }
    }
}

fn status_of(error: &str) -> u16 {
    if error.contains("no such") || error.contains("no object") {
        404
    } else if error.contains("refused") {
        400
    } else {
        500
    }
}

fn param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == key).then_some(v)
    })
}

fn answer(request: &IncomingRequest, container: &str, object: Option<&str>, query: &str) -> Result<Answer, String> {
    let method = request.method();
    match (method, object) {
        (Method::Put, None) => {
            blobstore::create_container(container)?;
            Ok(Answer::Text(200, format!("created container {container}\n")))
        }
        (Method::Delete, None) => {
            blobstore::delete_container(container)?;
            Ok(Answer::Text(200, format!("deleted container {container}\n")))
        }
        (Method::Get, None) if param(query, "exists").is_some() => Ok(Answer::Text(200, format!("{}\n", blobstore::container_exists(container)?))),
        (Method::Get, None) if param(query, "info").is_some() => {
            let info = blobstore::get_container(container)?.info()?;
            Ok(Answer::Text(200, format!("{} created-at={}\n", info.name, info.created_at)))
        }
        (Method::Get, None) => {
            let names = blobstore::get_container(container)?.list_objects()?;
            let mut text = String::new();
            loop {
                let (page, end) = names.read_stream_object_names(1000)?;
                for n in page {
                    text.push_str(&n);
                    text.push('\n');
                }
                if end {
                    break;
                }
            }
            Ok(Answer::Text(200, text))
        }
        (Method::Put, Some(object)) => put(request, container, object, param(query, "write-first").is_some()),
        (Method::Get, Some(object)) => {
            let c = blobstore::get_container(container)?;
            if param(query, "info").is_some() {
                let info = c.object_info(object)?;
                return Ok(Answer::Text(200, format!("{} in {} size={}\n", info.name, info.container, info.size)));
            }
            if !c.has_object(object)? {
                return Ok(Answer::Text(404, format!("no object {object} in container {container}\n")));
            }
            let (start, end) = match param(query, "range").and_then(|r| r.split_once('-')) {
                Some((s, e)) => (s.parse().map_err(|_| "range start is not a number".to_string())?, e.parse().map_err(|_| "range end is not a number".to_string())?),
                None => (0, c.object_info(object)?.size),
            };
            let value = c.get_data(object, start, end)?;
            if param(query, "sync").is_some() {
                let bytes = IncomingValue::incoming_value_consume_sync(value)?;
                return Ok(Answer::Text(200, String::from_utf8_lossy(&bytes).into_owned()));
            }
            Ok(Answer::Object(value))
        }
        (Method::Delete, Some(object)) => {
            blobstore::get_container(container)?.delete_object(object)?;
            Ok(Answer::Text(200, format!("deleted {container}/{object}\n")))
        }
        (Method::Post, Some(object)) => {
            let src = ObjectId { container: container.to_string(), object: object.to_string() };
            let (verb, to) = match (param(query, "copy-to"), param(query, "move-to")) {
                (Some(to), _) => ("copied", to),
                (None, Some(to)) => ("moved", to),
                _ => return Ok(Answer::Text(400, "POST needs ?copy-to=C/O or ?move-to=C/O\n".into())),
            };
            let (c2, o2) = to.split_once('/').ok_or_else(|| "the destination is C/O".to_string())?;
            let dest = ObjectId { container: c2.to_string(), object: o2.to_string() };
            if verb == "copied" { blobstore::copy_object(&src, &dest)? } else { blobstore::move_object(&src, &dest)? }
            Ok(Answer::Text(200, format!("{verb} {container}/{object} to {to}\n")))
        }
        _ => Ok(Answer::Text(405, "use GET, PUT, POST or DELETE\n".into())),
    }
}

/// Writes all of `data` to `out`, waiting for room as the stream says.
fn write_all(out: &OutputStream, mut data: &[u8]) -> Result<(), String> {
    while !data.is_empty() {
        let room = out.check_write().map_err(|e| format!("writing the object failed: {}", describe(e)))?;
        if room == 0 {
            out.subscribe().block();
            continue;
        }
        let n = data.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        out.write(&data[..n]).map_err(|e| format!("writing the object failed: {}", describe(e)))?;
        data = &data[n..];
    }
    Ok(())
}

fn describe(e: StreamError) -> String {
    match e {
        StreamError::Closed => "the stream was closed".into(),
        StreamError::LastOperationFailed(e) => e.to_debug_string(),
    }
}

fn put(request: &IncomingRequest, container: &str, object: &str, write_first: bool) -> Result<Answer, String> {
    let c = if blobstore::container_exists(container)? { blobstore::get_container(container)? } else { blobstore::create_container(container)? };
    let incoming = request.consume().map_err(|()| "the request body was already taken".to_string())?;
    let input = incoming.stream().map_err(|()| "the request stream was already taken".to_string())?;
    let value = OutgoingValue::new_outgoing_value();
    let out = value.outgoing_value_write_body().map_err(|()| "the value's stream was already taken".to_string())?;
    if !write_first {
        c.write_data(object, &value)?;
    }
    let mut total = 0u64;
    let copied = (|| {
        loop {
            match input.blocking_read(PIECE) {
                Ok(piece) => {
                    total += piece.len() as u64;
                    write_all(&out, &piece)?;
                }
                Err(wasi::io::streams::StreamError::Closed) => break,
                Err(e) => return Err(format!("reading the request body failed: {e:?}")),
            }
        }
        out.flush().map_err(|e| format!("writing the object failed: {}", describe(e)))?;
        out.subscribe().block();
        Ok(())
    })();
    drop(out);
    drop(input);
    if write_first {
        copied.clone()?;
        c.write_data(object, &value)?;
    }
    // When the blobstore refused the upload part way, its stream just closed: `finish` says why.
    OutgoingValue::finish(value)?;
    copied?;
    Ok(Answer::Text(200, format!("stored {total} bytes\n")))
}

fn stream_out(response_out: ResponseOutparam, value: IncomingValue) {
    let input = match IncomingValue::incoming_value_consume_async(value) {
        Ok(s) => s,
        Err(e) => return respond(response_out, 500, format!("{e}\n").as_bytes()),
    };
    let headers = Fields::from_list(&[("content-type".to_string(), b"application/octet-stream".to_vec())]).expect("content-type is a valid header");
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("body is taken only once");
    ResponseOutparam::set(response_out, Ok(response));
    {
        let mut out = body.write().expect("the response stream is taken only once");
        loop {
            match input.blocking_read(PIECE) {
                Ok(piece) => out.write_all(&piece).expect("write the response body"),
                Err(StreamError::Closed) => break,
                // The status is sent: a failed read can only cut the body short.
                Err(e) => panic!("reading the object failed: {}", describe(e)),
            }
        }
        out.flush().expect("flush the response body");
    }
    OutgoingBody::finish(body, None).expect("finish body");
}

fn respond(response_out: ResponseOutparam, status: u16, body: &[u8]) {
    let headers = Fields::from_list(&[("content-type".to_string(), b"text/plain".to_vec())]).expect("content-type is a valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("a valid status");
    let out = response.body().expect("body is taken only once");
    ResponseOutparam::set(response_out, Ok(response));
    {
        let mut stream = out.write().expect("stream is taken only once");
        stream.write_all(body).expect("write body");
        stream.flush().expect("flush body");
    }
    OutgoingBody::finish(out, None).expect("finish body");
}
