//! What the listener hears, and who hears it: the words both engines'
//! listeners (`postgresql/listen.rs`, `sqlite/watch.rs`) speak.

use std::sync::{Arc, Mutex};

use crate::lock::lock;

/// At most this many tickers in one [`Changed::Tickers`]; more changed
/// tickers are [`Changed::Unknown`].
pub const MOST_TICKERS: usize = 1000;

/// What changed, as the listener heard it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Quotes or enabled alerts of these tickers (sorted, each once).
    Tickers(Vec<String>),
    /// Anything, maybe: more tickers than are named, or changes that may
    /// have gone unheard (the listener was down, or just started). Whoever
    /// cares looks for themselves.
    Unknown,
}

impl Changed {
    /// Whether it may concern a ticker that `covers`.
    pub fn concerns(&self, covers: impl Fn(&str) -> bool) -> bool {
        match self {
            Changed::Tickers(tickers) => tickers.iter().any(|ticker| covers(ticker)),
            Changed::Unknown => true,
        }
    }
}

pub(super) type Hearer = Arc<dyn Fn(Changed) + Send + Sync>;

/// Who hears what the listener hears.
pub struct Hearers {
    pub(super) new_events: Box<dyn Fn() + Send + Sync>,
    pub(super) changes: Mutex<Option<Hearer>>,
}

impl Hearers {
    pub(in crate::store) fn new_events(&self) {
        (self.new_events)();
    }

    pub(in crate::store) fn wants_changes(&self) -> bool {
        lock(&self.changes).is_some()
    }

    pub(in crate::store) fn changed(&self, changed: Changed) {
        let hearer = lock(&self.changes).clone();
        if let Some(hearer) = hearer {
            hearer(changed);
        }
    }
}
