//! Instantiate-and-invoke of `examples/http-hello`: the Trellis host's invocation path
//! (table lookup, concurrency gate, fresh store with limits, deadline and log streams) against
//! bare wasmtime (a `ProxyPre` on a pooling engine, a fresh store per call), side by side in
//! one run, rounds interleaved so that machine noise hits both alike.
//!
//! `cargo bench -p trellis-tests --bench invoke` prints per-invocation times and the ratio.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

const ROUNDS: usize = 7;
const PER_ROUND: usize = 400;

struct Bare {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: NoHooks,
}
struct NoHooks;
impl wasmtime_wasi_http::WasiHttpHooks for NoHooks {
    fn send_request(
        &mut self,
        _: http::Request<wasmtime_wasi_http::WasiBody>,
        _: Option<wasmtime_wasi_http::RequestOptions>,
        _: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = wasmtime_wasi_http::Result<(
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                )>,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}
impl WasiView for Bare {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
impl WasiHttpView for Bare {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

fn request() -> http::Request<Bytes> {
    http::Request::get("http://localhost/").body(Bytes::new()).expect("request")
}

async fn bare_invoke(pre: &ProxyPre<Bare>) -> Bytes {
    let mut store = Store::new(pre.engine(), Bare { wasi: WasiCtx::builder().build(), http: WasiHttpCtx::new(), table: ResourceTable::new(), hooks: NoHooks });
    let (parts, body) = request().into_parts();
    let body = Full::new(body).map_err(|never| -> wasmtime_wasi_http::Error { match never {} });
    let req = store.data_mut().http().new_incoming_request(Scheme::Http, http::Request::from_parts(parts, body)).expect("req");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let out = store.data_mut().http().new_response_outparam(tx).expect("out");
    let pre = pre.clone();
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
    });
    let resp = rx.await.expect("response").expect("ok");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    task.await.expect("join").expect("guest");
    body
}

fn stats(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let median = v[v.len() / 2].as_secs_f64() * 1e6;
    let mean = v.iter().map(|d| d.as_secs_f64()).sum::<f64>() / v.len() as f64 * 1e6;
    (median, mean)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let wasm = std::fs::read(trellis_tests::components::http_hello())?;

    // Bare wasmtime: pooling engine, linker with WASI + HTTP, ProxyPre.
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(PoolingAllocationConfig::default()));
    let w = |e: wasmtime::Error| anyhow::anyhow!("{e:#}");
    let engine = Engine::new(&config).map_err(w)?;
    let mut linker = Linker::<Bare>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(w)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(w)?;
    let component = Component::new(&engine, &wasm).map_err(w)?;
    let pre = ProxyPre::new(linker.instantiate_pre(&component).map_err(w)?).map_err(w)?;

    // Trellis: a real host on a real nats-server, the component scaled through the control plane.
    let nats = trellis_tests::nats::NatsServer::start().await?;
    let host = trellis_tests::hosts::start_host(&nats.url(), &[]).await?;
    let ctl = trellis_lattice::client::CtlClient::new(nats.client().await?, "default");
    let mut events = trellis_tests::hosts::Events::subscribe(ctl.nats(), "default").await?;
    ctl.scale_component(&trellis_lattice::ctl::ScaleComponentCommand {
        component_ref: trellis_tests::components::file_ref(trellis_tests::components::http_hello()),
        component_id: "hello".into(),
        max_instances: 16,
        host_id: host.id().into(),
        ..Default::default()
    })
    .await?;
    events.wait_for("component_scaled", Duration::from_secs(30), |_| true).await?;

    // Warm up both.
    for _ in 0..200 {
        assert_eq!(bare_invoke(&pre).await.as_ref(), b"Hello from Trellis!\n");
        assert_eq!(host.invoke_http("hello", request()).await?.body().as_ref(), b"Hello from Trellis!\n");
    }

    let (mut bare, mut ours) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for _ in 0..PER_ROUND {
            let t = Instant::now();
            std::hint::black_box(bare_invoke(&pre).await);
            bare.push(t.elapsed());
        }
        for _ in 0..PER_ROUND {
            let t = Instant::now();
            std::hint::black_box(host.invoke_http("hello", request()).await?);
            ours.push(t.elapsed());
        }
    }
    let (bm, ba) = stats(bare);
    let (om, oa) = stats(ours);
    println!("instantiate+invoke http-hello, concurrency 1, {} calls each, interleaved rounds", ROUNDS * PER_ROUND);
    println!("{:<34} {:>10} {:>10}", "", "median µs", "mean µs");
    println!("{:<34} {:>10.1} {:>10.1}", "bare wasmtime (ProxyPre+pooling)", bm, ba);
    println!("{:<34} {:>10.1} {:>10.1}", "trellis host (Host::invoke_http)", om, oa);
    println!("overhead ratio (trellis / bare): median {:.2}x, mean {:.2}x", om / bm, oa / ba);
    host.stop(Duration::from_secs(1)).await;
    Ok(())
}
