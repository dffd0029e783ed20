//! Each user's share: one request in flight per user, so that their events
//! arrive in queue order, and at most `WAVES` requests' worth of rows held
//! per user, so that one user's backlog never fills the queue.

use std::collections::{HashMap, HashSet};

use crate::store::outbox::{Leased, Spread, user_key};

use super::lease::WAVES;

/// What each user holds in a pipeline routing events by user. A user has
/// at most one request in flight, so that a user's events reach their
/// channel in the order they were queued, and at most `WAVES` rows held
/// (queued or in flight) a request carries, so that leasing shares the rows
/// among users and a slow user's backlog never fills the queue: the others'
/// events go on. (`WAVES` requests behind one another, each bounded by the
/// timeouts, fit in one lease, as `Webhook::lease` counts.)
pub(super) struct Users {
    /// Rows a user may hold: `WAVES` requests' worth.
    share: usize,
    /// Rows queued or in flight, per user (`user_key`).
    held: HashMap<String, usize>,
    /// The user of each row queued or in flight.
    of_row: HashMap<i64, String>,
    /// Users with a request in flight.
    busy: HashSet<String>,
    /// How often a user with a whole share got room for more: a lease that
    /// found nothing, asked for while this count was lower, may find rows now.
    pub(super) room_made: u64,
}

impl Users {
    /// Users sharing requests of up to `batch` rows.
    pub(super) fn new(batch: usize) -> Users {
        Users {
            share: WAVES as usize * batch,
            held: HashMap::new(),
            of_row: HashMap::new(),
            busy: HashSet::new(),
            room_made: 0,
        }
    }

    pub(super) fn leased(&mut self, event: &Leased) {
        let user = user_key(event.user_id.as_deref()).to_owned();
        *self.held.entry(user.clone()).or_default() += 1;
        self.of_row.insert(event.row_id, user);
    }

    pub(super) fn is_busy(&self, event: &Leased) -> bool {
        self.busy.contains(user_key(event.user_id.as_deref()))
    }

    pub(super) fn sending(&mut self, event: &Leased) {
        self.busy
            .insert(user_key(event.user_id.as_deref()).to_owned());
    }

    /// A row leaves the pipeline's hands: sent and answered (`answered`), or
    /// given back unsent. Returns whether its user had their whole share
    /// and now has room for more: leasing may find rows for them again.
    pub(super) fn left(&mut self, row_id: i64, answered: Answered) -> bool {
        let Some(user) = self.of_row.remove(&row_id) else {
            return false;
        };
        if answered == Answered::Yes {
            self.busy.remove(&user);
        }
        let Some(held) = self.held.get_mut(&user) else {
            return false;
        };
        let had_share = *held >= self.share;
        *held -= 1;
        if *held == 0 {
            self.held.remove(&user);
        }
        self.room_made += u64::from(had_share);
        had_share
    }

    /// The users leasing should leave out, and each one's share.
    pub(super) fn spread(&self) -> Spread {
        Spread {
            per_user: self.share,
            full: self
                .held
                .iter()
                .filter(|(_, held)| **held >= self.share)
                .map(|(user, _)| user.clone())
                .collect(),
        }
    }
}

/// Whether a row that leaves the pipeline was sent and answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answered {
    Yes,
    No,
}
