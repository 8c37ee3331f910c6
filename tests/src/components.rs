//! Paths to the wasm components built by `tests/build.rs`.
//!
//! The build script compiles `examples/` and `tests/components/` for
//! wasm32-wasip2 and bakes the absolute `.wasm` paths in at compile time, so
//! tests never rebuild or search for them at run time.

/// `examples/http-blobstore`: `PUT|GET|DELETE /C/O` stores, answers or deletes object `O` of
/// container `C` in the linked blobstore (streamed); `GET /C` lists it; `POST /C/O?copy-to=`
/// or `?move-to=C2/O2` copies or moves.
pub fn http_blobstore() -> &'static str {
    env!("TRELLIS_WASM_HTTP_BLOBSTORE")
}

/// `examples/http-echo`: answers every request with its own body, streamed back.
pub fn http_echo() -> &'static str {
    env!("TRELLIS_WASM_HTTP_ECHO")
}

/// `examples/http-fetcher`: fetches `?url=URL` (or its config's `url`) through its
/// `wasi:http/outgoing-handler` link and streams the answer back; `502 error-code: CODE` on failure.
pub fn http_fetcher() -> &'static str {
    env!("TRELLIS_WASM_HTTP_FETCHER")
}

/// `examples/http-hello`: answers every request with `Hello from Trellis!\n`.
pub fn http_hello() -> &'static str {
    env!("TRELLIS_WASM_HTTP_HELLO")
}

/// `examples/http-hello-p3`: the WASI 0.3 hello (`wasi:http/handler@0.3.0`): `Hello from
/// Trellis (WASI 0.3)!\n`; `/echo` streams the request body back; `/sleep?ms=N` awaits N ms.
pub fn http_hello_p3() -> &'static str {
    env!("TRELLIS_WASM_HTTP_HELLO_P3")
}

/// `examples/http-kv-counter`: `/NAME` increments counter `NAME` in the linked key-value
/// store and answers the new count; `?cas=NEW&expect=OLD` compare-and-swaps; `?get` reads.
pub fn http_kv_counter() -> &'static str {
    env!("TRELLIS_WASM_HTTP_KV_COUNTER")
}

/// `examples/messaging-echo`: answers each message on its reply subject with the body
/// uppercased (ASCII); drops messages without a reply subject.
pub fn messaging_echo() -> &'static str {
    env!("TRELLIS_WASM_MESSAGING_ECHO")
}

/// `examples/pinger`: on every HTTP request, calls `trellis:examples/pingpong.ping` through
/// a link with values from the query string and writes the reply as text.
pub fn pinger() -> &'static str {
    env!("TRELLIS_WASM_PINGER")
}

/// `examples/ponger`: exports `trellis:examples/pingpong`, answering deterministically.
pub fn ponger() -> &'static str {
    env!("TRELLIS_WASM_PONGER")
}

/// `tests/components/misbehave`: `/loop` spins, `/grow` eats memory, `/env`
/// reports its environment, anything else answers `misbehave v1\n`.
pub fn misbehave() -> &'static str {
    env!("TRELLIS_WASM_MISBEHAVE")
}

/// `tests/components/misbehave-p3`: a WASI 0.3 handler: `/loop` spins, `/grow` eats memory,
/// `/sleep?ms=N` awaits, `/late?ms=N` answers its head at once and its body N ms later,
/// `/authority` reports what the 0.3 WASI interfaces grant, `/ping?message=M` calls
/// `trellis:examples/pingpong` through a link; anything else answers `misbehave-p3 v1\n`.
pub fn misbehave_p3() -> &'static str {
    env!("TRELLIS_WASM_MISBEHAVE_P3")
}

/// `tests/components/kvbench`: `/get?n=N` and `/increment?n=N` time N key-value calls from
/// inside the component and answer one duration in nanoseconds per line.
pub fn kvbench() -> &'static str {
    env!("TRELLIS_WASM_KVBENCH")
}

/// `tests/components/messenger`: `/request/SUBJECT?timeout_ms=N` and `/publish/SUBJECT?reply-to=R`
/// call `wasmcloud:messaging/consumer` with the request body; `200` with the reply's body (or
/// `published`), `502 err …` for an error value.
pub fn messenger() -> &'static str {
    env!("TRELLIS_WASM_MESSENGER")
}

/// `tests/components/secret-reader`: `/secret/NAME` reads secret `NAME` through
/// `wasmcloud:secrets`; `200` with its value, `403 err …` for an error value.
pub fn secret_reader() -> &'static str {
    env!("TRELLIS_WASM_SECRET_READER")
}

/// A `file://` component reference for `path`, as accepted where an OCI
/// reference would go.
pub fn file_ref(path: impl AsRef<std::path::Path>) -> String {
    format!("file://{}", path.as_ref().display())
}
