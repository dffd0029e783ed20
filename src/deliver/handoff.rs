//! Events a claim leased to this process's deliverer in its own transaction
//! (`store::outbox::ClaimLease`), handed over in memory: they are sent
//! without waiting for an exchange with the outbox to lease them.
//!
//! The pipeline offers the room it has (what it would lease itself, by
//! [`Ahead`](super::lease::Ahead)); a claim asks for part of it before its
//! transaction, and after its commit hands over the rows it leased and
//! gives back the room it did not use. The pipeline takes them in at its
//! next turn, and sends each only while its lease outlasts the attempt
//! (`LeasePolicy::sendable`), as any other. While it winds down (a stop,
//! new settings) it offers nothing and gives back what is handed over.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::lock::lock;
use crate::store::outbox::{ClaimLease, Exchanged, Leased, Lessee, Want};

use super::time::DbClock;

/// Between the claims of this process and its deliverer.
pub struct Handoff {
    /// The name the deliverer's leases carry.
    owner: String,
    state: Mutex<State>,
    /// Rows were handed over.
    handed: Notify,
    /// A claim queued events it did not lease: the deliverer leases them.
    wake: Arc<Notify>,
}

#[derive(Default)]
struct State {
    /// What a claim's lease is while the pipeline takes rows (its `limit`
    /// unused); none while it takes none.
    offer: Option<Want>,
    /// Rows the pipeline has room for that no claim asked for yet.
    room: usize,
    /// Rows claims under way asked for.
    asked: usize,
    handed: Vec<Leased>,
    /// The database's clock, as the last claim that handed rows over read it.
    clock: Option<DbClock>,
}

/// What a pipeline takes in at its turn.
pub(super) struct Taken {
    pub rows: Vec<Leased>,
    pub clock: Option<DbClock>,
}

impl Handoff {
    /// `wake` is the deliverer's: a claim that queued events it did not
    /// lease notifies it.
    pub fn new(owner: String, wake: Arc<Notify>) -> Handoff {
        Handoff {
            owner,
            state: Mutex::default(),
            handed: Notify::new(),
            wake,
        }
    }

    pub(super) fn owner(&self) -> &str {
        &self.owner
    }

    /// What wakes the deliverer to lease.
    pub fn wake(&self) -> &Arc<Notify> {
        &self.wake
    }

    /// Waits until rows are handed over.
    pub(super) async fn handed(&self) {
        self.handed.notified().await;
    }

    /// The rows handed over since the last turn.
    pub(super) fn take(&self) -> Taken {
        let mut state = lock(&self.state);
        Taken {
            rows: std::mem::take(&mut state.handed),
            clock: state.clock.take(),
        }
    }

    /// The pipeline's room at its turn: `free` rows more, offered to claims
    /// with leases as `offer` takes them (its `limit` unused), or `None`:
    /// kept for its own exchanges. What claims under way asked for, and
    /// what was handed over since [`take`](Self::take), is part of it
    /// already.
    pub(super) fn offer(&self, offer: Option<Want>, free: usize) {
        let mut state = lock(&self.state);
        state.room = free.saturating_sub(state.asked + state.handed.len());
        state.offer = offer;
    }

    /// Of `limit` rows an exchange would lease, those still free: the
    /// pipeline takes them from the room, as a claim would, offered or not.
    pub(super) fn draw(&self, limit: usize) -> usize {
        let mut state = lock(&self.state);
        let drawn = limit.min(state.room);
        state.room -= drawn;
        drawn
    }

    /// Whether claims under way may still hand rows over.
    pub(super) fn awaited(&self) -> bool {
        lock(&self.state).asked > 0
    }
}

impl Lessee for Handoff {
    fn ask(&self, most: usize) -> Option<ClaimLease> {
        let mut state = lock(&self.state);
        let limit = most.min(state.room);
        let mut want = state.offer.clone().filter(|_| limit > 0)?;
        want.limit = limit;
        state.room -= limit;
        state.asked += limit;
        Some(ClaimLease {
            owner: self.owner.clone(),
            want,
        })
    }

    fn hand(
        &self,
        asked: Option<ClaimLease>,
        queued: usize,
        leased: Option<Exchanged>,
        since: Instant,
    ) {
        let leased = leased.unwrap_or_default();
        let got = leased.leased.len();
        // A pipeline winding down waits for every claim that asked.
        let answered = asked.is_some();
        {
            let mut state = lock(&self.state);
            if let Some(asked) = asked {
                state.asked -= asked.want.limit;
                state.room += asked.want.limit.saturating_sub(got);
            }
            if got > 0 {
                state.handed.extend(leased.leased);
                state.clock = Some(DbClock::read(since.into(), leased.now_ms));
            }
        }
        if answered || got > 0 {
            self.handed.notify_one();
        }
        if queued > got {
            self.wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt as _;

    use super::*;

    fn want() -> Want {
        Want {
            lease: std::time::Duration::from_secs(30),
            limit: 0,
            spread: None,
            place: false,
        }
    }

    fn rows(ids: std::ops::Range<i64>) -> Exchanged {
        Exchanged {
            leased: ids
                .map(|row_id| Leased {
                    row_id,
                    event_id: format!("e{row_id}"),
                    body: String::new(),
                    attempts: 0,
                    user_id: None,
                    lease_until: 31_000,
                    created_at: None,
                    channel_seq: None,
                    prev_id: None,
                })
                .collect(),
            now_ms: 1_000,
        }
    }

    #[test]
    fn claims_lease_only_the_room_offered_and_give_back_what_they_did_not_use() {
        let wake = Arc::new(Notify::new());
        let handoff = Handoff::new("me".into(), wake);
        assert!(handoff.ask(10).is_none(), "nothing is offered yet");
        handoff.offer(Some(want()), 8);
        let first = handoff.ask(5).unwrap();
        assert_eq!((first.owner.as_str(), first.want.limit), ("me", 5));
        let second = handoff.ask(5).unwrap();
        assert_eq!(second.want.limit, 3, "only the room left");
        assert!(handoff.ask(1).is_none());
        assert!(handoff.awaited());
        // The pipeline's turn: what claims under way asked for is not
        // offered again.
        handoff.offer(Some(want()), 8);
        assert!(handoff.ask(1).is_none());
        // The first leased 2 of its 5: 3 come back; the second failed.
        handoff.hand(Some(first), 2, Some(rows(1..3)), Instant::now());
        handoff.hand(Some(second), 0, None, Instant::now());
        assert!(!handoff.awaited());
        assert_eq!(handoff.draw(10), 6);
        let taken = handoff.take();
        assert_eq!(
            taken.rows.iter().map(|row| row.row_id).collect::<Vec<_>>(),
            [1, 2]
        );
        assert!(taken.clock.is_some());
        assert!(handoff.take().rows.is_empty());
        // Winding down, nothing is offered; a late hand-over is still kept
        // for the pipeline to give back.
        handoff.offer(None, 8);
        assert!(handoff.ask(1).is_none());
        handoff.hand(None, 1, Some(rows(7..8)), Instant::now());
        assert_eq!(handoff.take().rows.len(), 1);
    }

    #[tokio::test]
    async fn a_claim_wakes_the_deliverer_to_lease_only_what_it_did_not_lease() {
        let wake = Arc::new(Notify::new());
        let handoff = Handoff::new("me".into(), wake.clone());
        handoff.offer(Some(want()), 2);
        let asked = handoff.ask(4);
        handoff.hand(asked, 2, Some(rows(1..3)), Instant::now());
        let woken = |notify: &Notify| notify.notified().now_or_never().is_some();
        assert!(woken(&handoff.handed));
        assert!(!woken(&wake), "every event it queued was handed over");
        let asked = handoff.ask(4);
        assert!(asked.is_none(), "no room left");
        handoff.hand(asked, 3, None, Instant::now());
        assert!(woken(&wake), "three events wait for a lease");
        assert!(!woken(&handoff.handed));
    }
}
