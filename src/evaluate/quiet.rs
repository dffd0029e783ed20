//! Quiet bands: what a job knows, between its ticks, of the moves that can
//! reach none of a ticker's alerts, so that a feed's small steps cost no
//! read of the level indexes.
//!
//! A moved ticker whose alerts' reads gave no row at its new price `p`,
//! and none of whose alerts changed in the window, gets a band: the open
//! interval between its enabled alerts' nearest levels around `p`, over
//! every condition and every channel's upper level
//! (`store::changes::nearest_levels`). Every range of `condition::REACH`
//! is bounded by levels alone, so a move between two prices inside the
//! band reads the same alerts as a move from `p` to `p`: those a level
//! holds at `p`, which were none. The next move inside the band is not
//! read; the first outside it is, and drops it.
//!
//! The band lasts only while the job has seen every change to the
//! ticker's alerts since: any alert inserted, re-armed or edited is a
//! change (`store::changes`) the next windows read, and a change to one of
//! a ticker's alerts drops its band (its changed alerts are read as ever).
//! A claim only disables alerts, which takes levels away. So the job's
//! bands hold only while its windows follow each other in this process
//! (`evaluate::carried`): a window starting anywhere else (another
//! daemon's tick, a failed tick) starts without them, and a ticker read
//! from its hold drops its own.

use std::collections::HashMap;

use crate::store::changes::Nearest;

/// How many tickers' bands a job keeps: past it, a ticker is read at every
/// move, as without bands (some 100 bytes each).
pub(super) const BANDS_KEPT: usize = 65_536;

/// How many bands a page learns at most: learning one costs a few dozen
/// index seeks (on PostgreSQL, as much as reading the ticker's move), so
/// a feed's first ticks, where no ticker has one, learn them a few at a
/// time instead of falling behind (10,000 at once held a tick 2 s).
pub(super) const LEARNED_PER_PAGE: usize = 64;

/// How far inside its levels a band stops, relative to each: the level
/// index computes a moving-% alert's level one way and the reads compare
/// it another (`condition::ROUNDING`, a thousand times smaller).
const MARGIN: f64 = 1e-6;

/// One job's bands, by ticker.
#[derive(Debug, Clone, Default)]
pub(super) struct JobBands {
    bands: HashMap<String, Band>,
}

/// The prices strictly between a ticker's nearest levels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Band {
    below: Option<f64>,
    above: Option<f64>,
}

impl Band {
    fn of(nearest: Nearest, price: f64) -> Option<Band> {
        let band = Band {
            below: nearest.below,
            above: nearest.above,
        };
        band.holds(price).then_some(band)
    }

    /// Whether `price` is inside, away from either level by [`MARGIN`].
    fn holds(&self, price: f64) -> bool {
        let inside_of = |level: f64| {
            if level.is_finite() {
                level.abs() * MARGIN
            } else {
                0.0
            }
        };
        price.is_finite()
            && self
                .below
                .is_none_or(|below| price > below + inside_of(below))
            && self
                .above
                .is_none_or(|above| price < above - inside_of(above))
    }
}

impl JobBands {
    /// Whether a move of `ticker` from `previous` to `price` is inside its
    /// band (then it reaches nothing, and is not read); a move out of it
    /// drops it.
    pub(super) fn quiet(&mut self, ticker: &str, previous: Option<f64>, price: f64) -> bool {
        let Some(band) = self.bands.get(ticker) else {
            return false;
        };
        let quiet = previous.is_some_and(|previous| band.holds(previous)) && band.holds(price);
        if !quiet {
            self.bands.remove(ticker);
        }
        quiet
    }

    /// A change to some of `ticker`'s alerts: its band goes.
    pub(super) fn forget(&mut self, ticker: &str) {
        self.bands.remove(ticker);
    }

    /// `ticker`'s band at `price`, from its alerts' nearest levels there,
    /// kept up to [`BANDS_KEPT`].
    pub(super) fn learn(&mut self, ticker: &str, price: f64, nearest: Nearest) {
        let Some(band) = Band::of(nearest, price) else {
            self.bands.remove(ticker);
            return;
        };
        if self.bands.len() < BANDS_KEPT || self.bands.contains_key(ticker) {
            self.bands.insert(ticker.to_owned(), band);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.bands.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nearest(below: Option<f64>, above: Option<f64>) -> Nearest {
        Nearest { below, above }
    }

    /// A move inside the band is quiet, and keeps it; one that leaves it
    /// (from inside or to outside), or lands on a level, is read and drops
    /// it.
    #[test]
    fn a_move_inside_the_band_is_quiet_and_one_out_of_it_drops_it() {
        let mut bands = JobBands::default();
        bands.learn("A", 100.0, nearest(Some(95.0), Some(105.0)));
        assert!(bands.quiet("A", Some(100.0), 104.9));
        assert!(bands.quiet("A", Some(104.9), 95.1));
        assert!(!bands.quiet("A", Some(95.1), 105.0));
        assert!(!bands.quiet("A", Some(105.0), 100.0), "dropped");
        bands.learn("A", 100.0, nearest(Some(95.0), Some(105.0)));
        assert!(!bands.quiet("A", Some(106.0), 100.0), "from outside");
        bands.learn("A", 100.0, nearest(Some(95.0), Some(105.0)));
        assert!(!bands.quiet("A", None, 100.0), "nothing observed before");
        // Within the margin of a level: read.
        bands.learn("A", 100.0, nearest(Some(95.0), Some(105.0)));
        assert!(!bands.quiet("A", Some(100.0), 105.0 * (1.0 - MARGIN / 2.0)));
    }

    /// A price on a level, or between levels too close to keep it off
    /// them, has no band; no level on a side leaves that side open.
    #[test]
    fn a_band_is_only_learned_strictly_between_levels() {
        let mut bands = JobBands::default();
        bands.learn("A", 100.0, nearest(Some(100.0), Some(101.0)));
        bands.learn("B", 100.0, nearest(None, Some(100.0)));
        bands.learn("C", 100.0, nearest(Some(99.99999999), Some(100.00000001)));
        assert_eq!(bands.len(), 0);
        bands.learn("D", 100.0, nearest(None, None));
        assert!(bands.quiet("D", Some(1e-9), 1e12));
        bands.learn("E", 100.0, nearest(Some(50.0), None));
        assert!(bands.quiet("E", Some(51.0), 1e12));
        assert!(!bands.quiet("E", Some(51.0), 49.0));
        // Infinite levels (PostgreSQL keeps them) bound nothing finite.
        bands.learn(
            "F",
            100.0,
            nearest(Some(f64::NEG_INFINITY), Some(f64::INFINITY)),
        );
        assert!(bands.quiet("F", Some(1e-9), 1e300));
    }

    /// Past the most bands kept, new tickers are not kept, known ones are
    /// renewed.
    #[test]
    fn bands_are_kept_up_to_a_bound() {
        let mut bands = JobBands::default();
        for n in 0..BANDS_KEPT + 10 {
            bands.learn(&format!("T{n}"), 100.0, nearest(Some(95.0), Some(105.0)));
        }
        assert_eq!(bands.len(), BANDS_KEPT);
        bands.learn("T0", 100.0, nearest(Some(99.0), Some(101.0)));
        assert!(!bands.quiet("T0", Some(100.0), 102.0));
    }
}
