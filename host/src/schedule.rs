//! Whether this host takes new placements: the transitions of `host.cordon|uncordon|drain.{host}`
//! and a draining host becoming drained once no managed replica is left on it. The rules are
//! pure functions ([`after`], [`settled`]); [`Scheduling`] holds the state they move.

use trellis_lattice::ctl::Schedule;
use trellis_lattice::manifest::MANAGED_BY_ANNOTATION;

use crate::components::Components;

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

/// The scheduling state of one host.
#[derive(Debug, Default)]
pub(crate) struct Scheduling {
    state: std::sync::Mutex<Schedule>,
}

impl Scheduling {
    /// Applies `host.cordon`; returns the state it leaves.
    pub fn cordon(&self) -> Schedule {
        self.apply(Op::Cordon)
    }

    /// Applies `host.uncordon`; returns the state it leaves.
    pub fn uncordon(&self) -> Schedule {
        self.apply(Op::Uncordon)
    }

    /// Applies `host.drain`; returns the state it leaves.
    pub fn drain(&self) -> Schedule {
        self.apply(Op::Drain)
    }

    fn apply(&self, op: Op) -> Schedule {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = after(*s, op);
        tracing::info!(schedule = s.as_str(), "host scheduling changed");
        *s
    }

    /// The state now, with `components` the host runs: a draining host whose last managed
    /// replica is gone becomes (and stays) drained.
    pub async fn current(&self, components: &Components) -> Schedule {
        let now = *self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now != Schedule::Draining {
            return now;
        }
        let managed_left = components.list().await.iter().any(|c| c.annotations.contains_key(MANAGED_BY_ANNOTATION));
        if managed_left {
            return now;
        }
        // Settled against the state as it is now: an uncordon may have come in meanwhile.
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s = settled(*s, false);
        *s
    }
}

#[cfg(test)]
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
        assert_eq!(s.cordon(), Cordoned);
        assert_eq!(s.current(&none).await, Cordoned);
        assert_eq!(s.drain(), Draining);
        assert_eq!(s.current(&none).await, Drained);
        assert_eq!(s.cordon(), Drained);
        assert_eq!(s.uncordon(), Schedulable);
        assert_eq!(s.current(&none).await, Schedulable);
    }
}
