//! Whether this host takes new placements: the transitions of `host.cordon|uncordon|drain.{host}`
//! and a draining host becoming drained once no managed replica is left on it. The rules are
//! pure functions ([`after`], [`settled`]); [`Scheduling`] holds the state they move.

use trellis_lattice::ctl::Schedule;
use trellis_lattice::manifest::MANAGED_BY_ANNOTATION;

use trellis_lattice::event::HostScheduleChanged;

use crate::components::Components;
use crate::events::Events;

/// A scheduling request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `host.cordon`: no new placements.
    Cordon,
    /// `host.uncordon`: placements again, whatever the state.
    Uncordon,
    /// `host.drain`: no new placements, and the reconciler moves the managed replicas away.
    Drain,
}

/// The state `op` leaves a host in that was in state `from`.
fn after(from: Schedule, op: Op) -> Schedule {
    match op {
        Op::Uncordon => Schedule::Schedulable,
        // Draining or drained stays so; a cordon does not stop a drain, nor a drain restart one.
        Op::Cordon | Op::Drain if from.is_draining() => from,
        Op::Cordon => Schedule::Cordoned,
        Op::Drain => Schedule::Draining,
    }
}

/// The state `now`, given whether a managed replica is left: draining with none left is drained.
fn settled(now: Schedule, managed_left: bool) -> Schedule {
    match now {
        Schedule::Draining if !managed_left => Schedule::Drained,
        other => other,
    }
}

/// The file in the host's state directory that keeps its scheduling state across restarts.
pub(crate) const STATE_FILE: &str = "schedule.json";

/// What [`STATE_FILE`] holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Stored {
    schedule: Schedule,
}

/// The scheduling state of one host. With a state directory, every change is written to
/// [`STATE_FILE`] there (write to a temporary file, then rename) before it is answered, and a
/// host started on that directory starts in the state it holds; each change is published as
/// `host_schedule_changed`.
#[derive(Debug)]
pub(crate) struct Scheduling {
    /// Held across the write and the event, so changes are stored and published in order.
    state: tokio::sync::Mutex<Schedule>,
    file: Option<std::path::PathBuf>,
    events: Option<Events>,
}

impl Default for Scheduling {
    fn default() -> Self {
        Self { state: tokio::sync::Mutex::new(Schedule::Schedulable), file: None, events: None }
    }
}

impl Scheduling {
    /// The state kept in `state_dir` (schedulable without one, or when none was kept), publishing
    /// changes with `events`. An unreadable or garbled file is a warning naming it, and the host
    /// starts schedulable (the file is rewritten at the next change).
    pub fn load(state_dir: Option<&std::path::Path>, events: Events) -> Self {
        let file = state_dir.map(|d| d.join(STATE_FILE));
        let restored = file.as_deref().and_then(restore);
        Self { state: tokio::sync::Mutex::new(restored.unwrap_or_default()), file, events: Some(events) }
    }

    /// Publishes the state restored at start, when it is not schedulable, so the lattice sees
    /// why this host takes no placements.
    pub async fn announce_restored(&self) {
        let now = *self.state.lock().await;
        if now != Schedule::Schedulable {
            tracing::info!(schedule = now.as_str(), "host scheduling restored from the state directory");
            self.publish(Schedule::Schedulable, now).await;
        }
    }

    /// Applies `host.cordon`; returns the state it leaves.
    pub async fn cordon(&self) -> Schedule {
        self.apply(Op::Cordon).await
    }

    /// Applies `host.uncordon`; returns the state it leaves.
    pub async fn uncordon(&self) -> Schedule {
        self.apply(Op::Uncordon).await
    }

    /// Applies `host.drain`; returns the state it leaves.
    pub async fn drain(&self) -> Schedule {
        self.apply(Op::Drain).await
    }

    async fn apply(&self, op: Op) -> Schedule {
        let mut s = self.state.lock().await;
        let previous = *s;
        *s = after(previous, op);
        self.changed(previous, *s).await;
        *s
    }

    /// Stores and publishes a change (nothing when `previous == now`).
    async fn changed(&self, previous: Schedule, now: Schedule) {
        if previous == now {
            return;
        }
        tracing::info!(schedule = now.as_str(), previous = previous.as_str(), "host scheduling changed");
        if let Some(file) = &self.file
            && let Err(error) = store(file, now).await
        {
            tracing::warn!(file = %file.display(), %error, "cannot store the scheduling state; it holds until this host stops");
        }
        self.publish(previous, now).await;
    }

    async fn publish(&self, previous: Schedule, now: Schedule) {
        if let Some(events) = &self.events {
            events.publish(&HostScheduleChanged { host_id: events.host_id().to_string(), previous, schedule: now }).await;
        }
    }

    /// The state now, with `components` the host runs: a draining host whose last managed
    /// replica is gone becomes (and stays) drained.
    pub async fn current(&self, components: &Components) -> Schedule {
        let now = *self.state.lock().await;
        if now != Schedule::Draining {
            return now;
        }
        let managed_left = components.list().await.iter().any(|c| c.annotations.contains_key(MANAGED_BY_ANNOTATION));
        if managed_left {
            return now;
        }
        // Settled against the state as it is now: an uncordon may have come in meanwhile.
        let mut s = self.state.lock().await;
        let previous = *s;
        *s = settled(previous, false);
        self.changed(previous, *s).await;
        *s
    }
}

/// The state stored in `file`; `None` when there is none, or (with a warning naming the
/// file) when it cannot be read or parsed.
fn restore(file: &std::path::Path) -> Option<Schedule> {
    match std::fs::read(file) {
        Ok(bytes) => match serde_json::from_slice::<Stored>(&bytes) {
            Ok(stored) => Some(stored.schedule),
            Err(error) => {
                tracing::warn!(file = %file.display(), %error, "the stored scheduling state is not valid JSON `{{\"schedule\": …}}`; starting schedulable");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            tracing::warn!(file = %file.display(), %error, "cannot read the stored scheduling state; starting schedulable");
            None
        }
    }
}

/// Writes `schedule` to `file` whole: a temporary file beside it, then a rename, so a crash
/// leaves the old state or the new one, never half a file.
async fn store(file: &std::path::Path, schedule: Schedule) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(&Stored { schedule }).map_err(std::io::Error::other)?;
    if let Some(dir) = file.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = file.with_extension("json.tmp");
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, file).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use Schedule::*;

    #[test]
    fn transitions() {
        let table = [
            (Schedulable, Op::Cordon, Cordoned),
            (Schedulable, Op::Uncordon, Schedulable),
            (Schedulable, Op::Drain, Draining),
            (Cordoned, Op::Cordon, Cordoned),
            (Cordoned, Op::Uncordon, Schedulable),
            (Cordoned, Op::Drain, Draining),
            (Draining, Op::Cordon, Draining),
            (Draining, Op::Uncordon, Schedulable),
            (Draining, Op::Drain, Draining),
            (Drained, Op::Cordon, Drained),
            (Drained, Op::Uncordon, Schedulable),
            (Drained, Op::Drain, Drained),
        ];
        for (from, op, to) in table {
            assert_eq!(after(from, op), to, "{from:?} × {op:?}");
        }
    }

    #[test]
    fn draining_settles_to_drained_when_no_managed_replica_is_left() {
        let table = [
            (Schedulable, false, Schedulable),
            (Schedulable, true, Schedulable),
            (Cordoned, false, Cordoned),
            (Cordoned, true, Cordoned),
            (Draining, true, Draining),
            (Draining, false, Drained),
            (Drained, true, Drained),
            (Drained, false, Drained),
        ];
        for (now, managed_left, to) in table {
            assert_eq!(settled(now, managed_left), to, "{now:?}, managed replicas left: {managed_left}");
        }
    }

    #[tokio::test]
    async fn scheduling_drains_an_empty_host_to_drained_and_uncordons() {
        let s = Scheduling::default();
        let none = Components::default();
        assert_eq!(s.current(&none).await, Schedulable);
        assert_eq!(s.cordon().await, Cordoned);
        assert_eq!(s.current(&none).await, Cordoned);
        assert_eq!(s.drain().await, Draining);
        assert_eq!(s.current(&none).await, Drained);
        assert_eq!(s.cordon().await, Drained);
        assert_eq!(s.uncordon().await, Schedulable);
        assert_eq!(s.current(&none).await, Schedulable);
    }

    #[tokio::test]
    async fn a_change_is_stored_and_read_back_by_the_next_host() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(STATE_FILE);
        let first = Scheduling { file: Some(file.clone()), ..Scheduling::default() };
        let none = Components::default();
        assert_eq!(first.cordon().await, Cordoned);
        let read = |f: &std::path::Path| serde_json::from_slice::<Stored>(&std::fs::read(f).unwrap()).unwrap().schedule;
        assert_eq!(read(&file), Cordoned);
        assert_eq!(first.drain().await, Draining);
        assert_eq!(first.current(&none).await, Drained);
        assert_eq!(read(&file), Drained, "the settled state is stored too");
        assert_eq!(first.uncordon().await, Schedulable);
        assert_eq!(read(&file), Schedulable);
        assert_eq!(restore(&file), Some(Schedulable));
        std::fs::write(&file, br#"{"schedule":"cordoned"}"#).unwrap();
        assert_eq!(restore(&file), Some(Cordoned));
        std::fs::write(&file, b"\x1b[2J not json").unwrap();
        assert_eq!(restore(&file), None, "garbage starts the host schedulable");
        assert_eq!(restore(&dir.path().join("absent.json")), None);
    }
}
