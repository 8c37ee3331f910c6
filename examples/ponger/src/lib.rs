//! `ponger`: exports `trellis:examples/pingpong` (see `interfaces/trellis-examples`).
//!
//! Its answer is a pure function of the ping, so a caller can check that every value made
//! the round trip:
//! - an empty message is an error: `err("empty message: nothing to pong")`;
//! - otherwise one outcome per count: `refused("#3 is a multiple of three")` for multiples
//!   of three, else `pong("{message} #{i}")` with the message lower-cased (`quiet`), as is
//!   (`normal`) or upper-cased (`loud`); a count of zero answers `[silence]`;
//! - `reply-to` and `marks` are echoed, `tags` come back reversed, and `stats` is
//!   `(u64::MAX - count, -count, count / 4, the message's last char)`.
//!
//! Build it with `cargo build --release --target wasm32-wasip2`.

wit_bindgen::generate!({
    path: "../../interfaces/trellis-examples",
    world: "ponger",
});

use exports::trellis::examples::pingpong::{Guest, Outcome, Reply, Request, Volume};

struct Ponger;

export!(Ponger);

impl Guest for Ponger {
    fn ping(p: Request) -> Result<Reply, String> {
        if p.message.is_empty() {
            return Err("empty message: nothing to pong".into());
        }
        let text = match p.volume {
            Volume::Quiet => p.message.to_lowercase(),
            Volume::Normal => p.message.clone(),
            Volume::Loud => p.message.to_uppercase(),
        };
        let outcomes = if p.count == 0 {
            vec![Outcome::Silence]
        } else {
            (1..=p.count)
                .map(|i| if i % 3 == 0 { Outcome::Refused(format!("#{i} is a multiple of three")) } else { Outcome::Pong(format!("{text} #{i}")) })
                .collect()
        };
        let last = p.message.chars().last().unwrap_or('-');
        Ok(Reply {
            outcomes,
            reply_to: p.reply_to,
            tags: p.tags.into_iter().rev().collect(),
            stats: (u64::MAX - u64::from(p.count), (p.count as i16).wrapping_neg(), f64::from(p.count) / 4.0, last),
            marks: p.marks,
        })
    }
}
