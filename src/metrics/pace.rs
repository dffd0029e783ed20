//! A reacting job's pace: how long the oldest change it has heard and not
//! yet judged has waited (its lag), and how many runs a second it makes.
//! Both come from what the loop tells it (a change heard, a run started, a
//! run ended) and the time of the scrape: a run that never ends shows a lag
//! that grows, without another event.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The span the runs a second are counted over.
const OVER: Duration = Duration::from_secs(10);
/// Its buckets, one a second.
const BUCKETS: usize = 10;

/// Each reacting job's pace, by name.
#[derive(Default)]
pub(super) struct Paces(HashMap<String, Pace>);

/// One job's.
#[derive(Default)]
struct Pace {
    /// The first change heard since the last run started: the next run
    /// judges it.
    waiting: Option<Instant>,
    /// The oldest change the running run judges.
    judging: Option<Instant>,
    /// Runs that succeeded, a bucket a second (`second` is the newest's).
    runs: [u32; BUCKETS],
    second: u64,
}

/// What a scrape shows of one job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// How long the oldest change heard and not yet judged has waited (zero
    /// when none waits).
    pub lag: Duration,
    /// Runs that succeeded a second, over the last [`OVER`].
    pub runs_per_second: f64,
}

impl Paces {
    /// The jobs that react now: the others' paces go.
    pub(super) fn keep(&mut self, jobs: &[String]) {
        self.0.retain(|job, _| jobs.contains(job));
        for job in jobs {
            self.0.entry(job.clone()).or_default();
        }
    }

    /// A change `job` covers was heard at `at`.
    pub(super) fn heard(&mut self, job: &str, at: Instant) {
        if let Some(pace) = self.0.get_mut(job) {
            pace.waiting.get_or_insert(at);
        }
    }

    /// A run of `job` started: it judges what was heard before.
    pub(super) fn started(&mut self, job: &str) {
        if let Some(pace) = self.0.get_mut(job) {
            pace.judging = earliest(pace.judging, pace.waiting.take());
        }
    }

    /// A run of `job` ended at `at`; a failed one (or a fire time another
    /// member took) judged nothing for sure, so what it was to judge waits
    /// again, and only runs that succeeded are counted.
    pub(super) fn ended(&mut self, job: &str, succeeded: bool, at: Instant, origin: Instant) {
        let Some(pace) = self.0.get_mut(job) else {
            return;
        };
        let judging = pace.judging.take();
        if !succeeded {
            pace.waiting = earliest(pace.waiting, judging);
            return;
        }
        let second = at.saturating_duration_since(origin).as_secs();
        pace.roll(second);
        pace.runs[(second % BUCKETS as u64) as usize] += 1;
    }

    /// Each job's reading at `now`.
    pub(super) fn read(
        &mut self,
        now: Instant,
        origin: Instant,
    ) -> impl Iterator<Item = (&str, Reading)> {
        let second = now.saturating_duration_since(origin).as_secs();
        self.0.iter_mut().map(move |(job, pace)| {
            pace.roll(second);
            // The current second counts in part: the span is the full
            // seconds before it, and what passed of this one.
            let runs: u32 = pace.runs.iter().sum();
            let span = (OVER - Duration::from_secs(1)).as_secs_f64()
                + now.saturating_duration_since(origin).as_secs_f64().fract();
            let oldest = earliest(pace.waiting, pace.judging);
            (
                job.as_str(),
                Reading {
                    lag: oldest.map_or(Duration::ZERO, |at| now.saturating_duration_since(at)),
                    runs_per_second: f64::from(runs) / span,
                },
            )
        })
    }
}

impl Pace {
    /// Empties the buckets of the seconds since the newest, up to `second`.
    fn roll(&mut self, second: u64) {
        if second <= self.second {
            return;
        }
        for passed in (self.second + 1..=second).take(BUCKETS) {
            self.runs[(passed % BUCKETS as u64) as usize] = 0;
        }
        self.second = second;
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(paces: &mut Paces, now: Instant, origin: Instant) -> Reading {
        paces.read(now, origin).next().unwrap().1
    }

    #[test]
    fn the_lag_is_the_wait_of_the_oldest_change_not_yet_judged() {
        let origin = Instant::now();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        let mut paces = Paces::default();
        paces.keep(&["evaluate".to_owned()]);
        assert_eq!(reading(&mut paces, at(5), origin).lag, Duration::ZERO);

        paces.heard("evaluate", at(10));
        paces.heard("evaluate", at(20));
        assert_eq!(
            reading(&mut paces, at(30), origin).lag,
            Duration::from_millis(20)
        );
        paces.started("evaluate");
        // Heard while the run judges what came before: it waits for the next.
        paces.heard("evaluate", at(40));
        assert_eq!(
            reading(&mut paces, at(50), origin).lag,
            Duration::from_millis(40)
        );
        paces.ended("evaluate", true, at(60), origin);
        assert_eq!(
            reading(&mut paces, at(70), origin).lag,
            Duration::from_millis(30)
        );

        // A failed run leaves what it was to judge waiting.
        paces.started("evaluate");
        paces.ended("evaluate", false, at(80), origin);
        assert_eq!(
            reading(&mut paces, at(90), origin).lag,
            Duration::from_millis(50)
        );
        paces.started("evaluate");
        paces.ended("evaluate", true, at(100), origin);
        assert_eq!(reading(&mut paces, at(110), origin).lag, Duration::ZERO);
        // Changes for a job that does not react are not kept.
        paces.heard("purge", at(120));
        assert_eq!(paces.read(at(130), origin).count(), 1);
    }

    #[test]
    fn runs_a_second_count_the_last_ten_seconds() {
        let origin = Instant::now();
        let at = |ms: u64| origin + Duration::from_millis(ms);
        let mut paces = Paces::default();
        paces.keep(&["evaluate".to_owned()]);
        // 20 runs a second for 12 seconds.
        for run in 0..240 {
            paces.started("evaluate");
            paces.ended("evaluate", true, at(run * 50), origin);
        }
        let rate = reading(&mut paces, at(12_000), origin).runs_per_second;
        assert!((19.0..=21.0).contains(&rate), "{rate}");
        // Then none: after ten quiet seconds, none a second.
        let rate = reading(&mut paces, at(17_500), origin).runs_per_second;
        assert!((8.0..=12.0).contains(&rate), "{rate}");
        let rate = reading(&mut paces, at(25_000), origin).runs_per_second;
        assert_eq!(rate, 0.0);
    }
}
