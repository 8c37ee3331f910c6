//! `wash spy COMPONENT_ID`: the calls into and out of one component, wherever it runs, as they
//! happen, until Ctrl-C. It announces its interest on the lattice (`trellis_lattice::spy`);
//! the host running the component then publishes a record of each call (local routing
//! included) while the interest lasts.
//!
//! Text: one line per call (time, direction, source → target, interface.function, link,
//! duration, outcome, bytes each way, host), with `--with-bodies` one more line per side.
//! JSON (`-o json`): one record object per line, as hosts publish it plus `direction` and,
//! with bodies, `request_text` / `response_text`.

use std::time::Duration;

use serde_json::Value;
use tokio::signal::unix::{SignalKind, signal};
use trellis_lattice::spy::{BODY_CAP, CallRecord, Spy};

use crate::cli::{Global, SpyArgs};
use crate::lattice;
use crate::output::{Format, Report, escape, print_stdout};

/// `wash spy`.
pub async fn run(g: &Global, args: &SpyArgs) -> anyhow::Result<Report> {
    trellis_lattice::validate_id("component id", &args.component_id)?;
    // Ctrl-C is ours from here on: it ends the spy, with exit code 0.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let ctl = lattice::ctl(g).await?;
    let mut spy = Spy::start(ctl.nats(), &g.lattice, &args.component_id, args.with_bodies).await?;
    let format = g.output;
    if format == Format::Text {
        eprintln!("watching the calls of `{}` in lattice `{}` (Ctrl-C to stop)", escape(&args.component_id), escape(&g.lattice));
    }
    let mut seen = 0u64;
    loop {
        let record = tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            r = spy.next() => r,
        };
        let Some(mut record) = record else { anyhow::bail!("the NATS connection closed; run `wash spy` again once NATS is back") };
        // Another spy of the same component may have asked for bodies; this one did not.
        if !args.with_bodies {
            record.request = None;
            record.response = None;
        }
        seen += 1;
        match format {
            Format::Text => print_stdout(&text_line(&record, &args.component_id)),
            Format::Json => print_stdout(&format!("{}\n", json_line(&record, &args.component_id))),
        }
    }
    // Give the NATS client a moment to flush nothing; the interest expires on its own.
    drop(spy);
    tokio::time::sleep(Duration::from_millis(10)).await;
    if format == Format::Text {
        eprintln!("{seen} calls seen");
    }
    Ok(Report::none())
}

/// `in` when the spied component is the target, else `out`.
fn direction(r: &CallRecord, component: &str) -> &'static str {
    if r.target == component { "in" } else { "out" }
}

fn is_http(r: &CallRecord) -> bool {
    r.interface == trellis_lattice::rpc::http::INTERFACE
}

/// A side of a call as text: an HTTP body as (lossy) UTF-8, other calls' WIT values decoded
/// when all of them were kept (hosts keep the first `BODY_CAP` bytes).
fn side_text(r: &CallRecord, bytes: &[u8], total: u64) -> String {
    let cut = if bytes.len() >= BODY_CAP { format!(" … (first {BODY_CAP} bytes; {total} in all with the head)") } else { String::new() };
    if !is_http(r)
        && cut.is_empty()
        && let Ok(values) = trellis_lattice::wit_value::decode(bytes)
    {
        return format!("{values:?}");
    }
    format!("{:?}{cut}", String::from_utf8_lossy(bytes))
}

fn human_duration(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", us as f64 / 1_000_000.0)
    }
}

fn text_line(r: &CallRecord, component: &str) -> String {
    // The time of day, from the RFC 3339 stamp (`…T12:34:56.789…Z`).
    let time = r.time.split_once('T').map_or(r.time.as_str(), |(_, t)| t.trim_end_matches('Z'));
    let time: String = time.chars().take(12).collect();
    let host: String = r.host_id.chars().take(8).collect();
    let mut line = format!(
        "{time}  {:<3} {} → {}  {}.{}  link={}  {}  {}  req={}B resp={}B  {} host={host}",
        direction(r, component),
        r.source,
        r.target,
        r.interface,
        r.function,
        r.link_name,
        human_duration(r.duration_us),
        r.outcome,
        r.request_bytes,
        r.response_bytes,
        r.route,
    );
    if let Some(e) = &r.error {
        line.push_str(&format!("  error: {e}"));
    }
    let mut out = escape(&line).into_owned();
    out.push('\n');
    if let Some(b) = &r.request {
        out.push_str(&format!("    > {}\n", escape(&side_text(r, b, r.request_bytes))));
    }
    if let Some(b) = &r.response {
        out.push_str(&format!("    < {}\n", escape(&side_text(r, b, r.response_bytes))));
    }
    out
}

fn json_line(r: &CallRecord, component: &str) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("direction".into(), Value::String(direction(r, component).into()));
        if let Some(b) = &r.request {
            map.insert("request_text".into(), Value::String(side_text(r, b, r.request_bytes)));
        }
        if let Some(b) = &r.response {
            map.insert("response_text".into(), Value::String(side_text(r, b, r.response_bytes)));
        }
    }
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn lines_show_the_call() {
        let r = CallRecord {
            time: "2026-12-01T14:00:01.234567Z".into(),
            host_id: "NABCDEFGHIJK".into(),
            source: "http".into(),
            target: "hello".into(),
            interface: "wasi:http/incoming-handler".into(),
            function: "handle".into(),
            link_name: "default".into(),
            route: "local".into(),
            duration_us: 1500,
            outcome: "ok".into(),
            error: None,
            request_bytes: 40,
            response_bytes: 60,
            request: None,
            response: Some(b"Hello\n\x1b[2J".to_vec()),
        };
        let line = text_line(&r, "hello");
        assert!(
            line.starts_with(
                "14:00:01.234  in  http → hello  wasi:http/incoming-handler.handle  link=default  1.5ms  ok  req=40B resp=60B  local host=NABCDEFG\n"
            ),
            "{line}"
        );
        assert!(!line.contains('\u{1b}'), "{line}");
        let json = json_line(&r, "http");
        assert_eq!(json["direction"], "out");
        assert!(json["response_text"].as_str().unwrap().contains("Hello"));
    }
}
