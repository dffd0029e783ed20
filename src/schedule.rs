//! Cron schedules: parsing, time zones and fire times. The only module that knows
//! cron syntax or tokio-cron-scheduler.
//!
//! tokio-cron-scheduler 0.15 freezes a time-zone job's UTC offset when the job is
//! created, so its cron jobs fire an hour off after a DST change (its issues #87
//! and #107). We therefore compute every fire time here, in the job's own zone,
//! and hand the scheduler one one-shot job per fire time: [`Schedule::next_after`]
//! is the single source of fire times for both the scheduler and `check-config`.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, SubsecRound as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use tokio_cron_scheduler::{Job, JobScheduler};
use uuid::Uuid;

/// A parsed cron expression together with the zone its fields are read in.
#[derive(Clone)]
pub struct Schedule {
    expression: String,
    cron: Cron,
    zone: Tz,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self.expression, self.zone)
    }
}

impl Schedule {
    /// Parses a 5-field crontab line (seconds = 0), a 6-field line with seconds
    /// first, or a 7-field line with a trailing year. Day-of-month and
    /// day-of-week are ANDed when both are restricted, as tokio-cron-scheduler
    /// does (Vixie cron ORs them).
    pub fn parse(expression: &str, zone: Option<&str>) -> Result<Schedule, String> {
        let zone = match zone {
            None => Tz::UTC,
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| format!("unknown time zone {name:?} (expected an IANA name such as \"America/New_York\")"))?,
        };
        let fields = expanded(expression)?;
        let count = fields.split_whitespace().count();
        if !(5..=7).contains(&count) {
            return Err(format!(
                "cron expression {expression:?} has {count} fields; expected 5 (minute first), 6 (seconds first) or 7 (with a year), or @hourly, @daily, @weekly, @monthly, @yearly"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Optional)
            .dom_and_dow(true)
            .build()
            .parse(fields)
            .map_err(|error| format!("invalid cron expression {expression:?}: {error}"))?;
        let schedule = Schedule {
            expression: expression.to_owned(),
            cron,
            zone,
        };
        if schedule.next_after(Utc::now()).is_none() {
            return Err(format!("cron expression {expression:?} never fires"));
        }
        Ok(schedule)
    }

    pub fn expression(&self) -> &str {
        &self.expression
    }

    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// The first fire time strictly after `instant`, computed in the job's
    /// zone: always a whole second. (croner keeps the instant's fraction of a
    /// second, which would put every fire time that far past its second, and
    /// the scheduler, which rounds up, a whole second late.)
    pub fn next_after(&self, instant: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let instant = instant.trunc_subsecs(0);
        self.cron
            .find_next_occurrence(&instant.with_timezone(&self.zone), false)
            .ok()
            .map(|local| local.with_timezone(&Utc))
    }

    /// The next `count` fire times strictly after `instant`.
    pub fn upcoming(&self, instant: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
        let mut times = Vec::with_capacity(count);
        let mut cursor = instant;
        while times.len() < count {
            match self.next_after(cursor) {
                Some(next) => {
                    times.push(next);
                    cursor = next;
                }
                None => break,
            }
        }
        times
    }
}

/// The fields of an expression: crontab's nicknames (`@hourly` ... `@yearly`,
/// `@annually`, `@midnight`) as Vixie cron defines them; a crontab
/// `CRON_TZ=`/`TZ=` prefix is refused with a pointer to `timezone`.
fn expanded(expression: &str) -> Result<&str, String> {
    let trimmed = expression.trim();
    if let Some((variable, _)) = trimmed.split_once('=')
        && matches!(variable.trim(), "CRON_TZ" | "TZ")
    {
        return Err(format!(
            "{expression:?} sets the zone crontab's way; here the job's `timezone` does, e.g. timezone = \"America/New_York\", and `schedule` holds only the fields"
        ));
    }
    if !trimmed.starts_with('@') {
        return Ok(expression);
    }
    match trimmed.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Ok("0 0 0 1 1 *"),
        "@monthly" => Ok("0 0 0 1 * *"),
        "@weekly" => Ok("0 0 0 * * SUN"),
        "@daily" | "@midnight" => Ok("0 0 0 * * *"),
        "@hourly" => Ok("0 0 * * * *"),
        _ => Err(format!(
            "unknown nickname {trimmed:?}; expected @hourly, @daily (@midnight), @weekly, @monthly or @yearly (@annually)"
        )),
    }
}

/// The scheduler: a tokio-cron-scheduler instance that runs one one-shot job per
/// fire time and hands each firing to a callback.
pub struct Scheduler {
    inner: JobScheduler,
}

/// What the scheduler calls when a fire time arrives.
pub type OnFire = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

impl Scheduler {
    pub async fn start() -> anyhow::Result<Scheduler> {
        let inner = JobScheduler::new()
            .await
            .context("creating the scheduler")?;
        inner.start().await.context("starting the scheduler")?;
        Ok(Scheduler { inner })
    }

    /// Adds a one-shot job that calls `on_fire` at `at` (or at once if `at` has
    /// passed). Returns the job's id, so it can be removed on reload.
    pub async fn add_at(&self, at: DateTime<Utc>, on_fire: OnFire) -> anyhow::Result<Uuid> {
        let job = Job::new_one_shot_async(delay_until(at, Utc::now()), move |_, _| on_fire())
            .context("creating a scheduler job")?;
        self.inner.add(job).await.context("adding a scheduler job")
    }

    pub async fn remove(&self, id: &Uuid) {
        // A one-shot job that already fired is gone; removing it again is harmless.
        let _ = self.inner.remove(id).await;
    }

    /// Stops the ticker. Running jobs are not waited for: the daemon tracks its
    /// own runs (tokio-cron-scheduler's `shutdown` neither waits nor cancels).
    pub async fn shutdown(&mut self) {
        if let Err(error) = self.inner.shutdown().await {
            tracing::warn!(%error, "scheduler shutdown failed");
        }
    }
}

/// The delay to hand tokio-cron-scheduler so that its one-shot fires at `at` and
/// never before. It stores due times in whole unix seconds, truncating `now +
/// delay`; rounding the delay up to whole seconds makes the stored second
/// exactly `at`'s (fire times are whole seconds).
fn delay_until(at: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let millis = (at - now).num_milliseconds().max(0) as u64;
    Duration::from_secs(millis.div_ceil(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn check(expression: &str, zone: Option<&str>, from: &str, expected: &[&str]) {
        let schedule = Schedule::parse(expression, zone).unwrap();
        let got: Vec<String> = schedule
            .upcoming(utc(from), expected.len())
            .iter()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .collect();
        assert_eq!(got, expected, "{expression} from {from}");
    }

    #[test]
    fn crontab_nicknames_fire_as_vixie_cron_defines_them() {
        // 2026-01-01 is a Thursday.
        let from = "2026-01-01T10:20:30Z";
        check("@hourly", None, from, &["2026-01-01T11:00:00Z"]);
        check("@daily", None, from, &["2026-01-02T00:00:00Z"]);
        check("@midnight", None, from, &["2026-01-02T00:00:00Z"]);
        check("@weekly", None, from, &["2026-01-04T00:00:00Z"]);
        check("@monthly", None, from, &["2026-02-01T00:00:00Z"]);
        check("@yearly", None, from, &["2027-01-01T00:00:00Z"]);
        check("@annually", None, from, &["2027-01-01T00:00:00Z"]);
        check(" @Daily ", None, from, &["2026-01-02T00:00:00Z"]);
        // In the job's zone, like any schedule.
        check(
            "@daily",
            Some("America/New_York"),
            from,
            &["2026-01-02T05:00:00Z"],
        );
        assert_eq!(
            Schedule::parse("@daily", None).unwrap().expression(),
            "@daily"
        );
        let error = Schedule::parse("@reboot", None).unwrap_err();
        assert!(error.contains("unknown nickname"), "{error}");
    }

    #[test]
    fn a_cron_tz_prefix_points_to_timezone() {
        for line in ["CRON_TZ=America/New_York 0 9 * * *", "TZ=UTC 0 9 * * *"] {
            let error = Schedule::parse(line, None).unwrap_err();
            assert!(error.contains("timezone = "), "{error}");
        }
    }

    #[test]
    fn six_fields_have_seconds_first() {
        check(
            "*/10 * * * * *",
            None,
            "2026-01-01T00:00:05Z",
            &[
                "2026-01-01T00:00:10Z",
                "2026-01-01T00:00:20Z",
                "2026-01-01T00:00:30Z",
            ],
        );
    }

    #[test]
    fn five_fields_are_crontab_with_seconds_zero() {
        check(
            "*/15 * * * *",
            None,
            "2026-01-01T00:00:05Z",
            &["2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"],
        );
    }

    #[test]
    fn fire_times_are_whole_seconds_whatever_the_instant() {
        check(
            "* * * * * *",
            None,
            "2026-01-01T00:00:05.366Z",
            &["2026-01-01T00:00:06Z", "2026-01-01T00:00:07Z"],
        );
        let schedule = Schedule::parse("* * * * * *", None).unwrap();
        let next = schedule
            .next_after(utc("2026-01-01T00:00:05.366Z"))
            .unwrap();
        assert_eq!(next, utc("2026-01-01T00:00:06Z"));
    }

    #[test]
    fn fire_times_are_strictly_after_the_instant() {
        check(
            "0 * * * * *",
            None,
            "2026-01-01T00:01:00Z",
            &["2026-01-01T00:02:00Z"],
        );
    }

    #[test]
    fn zone_is_honoured_across_the_march_dst_change() {
        // New York leaves EST (UTC-5) for EDT (UTC-4) on 2026-03-08.
        check(
            "0 30 9 * * *",
            Some("America/New_York"),
            "2026-03-06T00:00:00Z",
            &[
                "2026-03-06T14:30:00Z",
                "2026-03-07T14:30:00Z",
                "2026-03-08T13:30:00Z",
                "2026-03-09T13:30:00Z",
            ],
        );
    }

    #[test]
    fn zone_is_honoured_across_the_november_dst_change() {
        // New York returns to EST on 2026-11-01.
        check(
            "0 30 9 * * *",
            Some("America/New_York"),
            "2026-10-31T00:00:00Z",
            &[
                "2026-10-31T13:30:00Z",
                "2026-11-01T14:30:00Z",
                "2026-11-02T14:30:00Z",
            ],
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_are_anded() {
        // Friday the 13th only: 2026-02-13 and 2026-03-13 are Fridays.
        check(
            "0 0 0 13 * FRI",
            None,
            "2026-01-01T00:00:00Z",
            &["2026-02-13T00:00:00Z", "2026-03-13T00:00:00Z"],
        );
    }

    #[test]
    fn bad_expressions_are_errors() {
        for bad in [
            "",
            "* * * *",
            "* * * * * * * *",
            "61 * * * * *",
            "nonsense here now ok then",
        ] {
            assert!(Schedule::parse(bad, None).is_err(), "{bad:?} was accepted");
        }
        let error = Schedule::parse("* * * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(error.contains("Mars/Olympus"), "{error}");
    }

    #[test]
    fn delay_rounds_up_to_the_fire_second() {
        let at = utc("2026-01-01T12:00:00Z");
        let now = utc("2026-01-01T11:59:58.300Z");
        assert_eq!(delay_until(at, now), Duration::from_secs(2));
        assert_eq!(
            delay_until(at, utc("2026-01-01T11:59:58Z")),
            Duration::from_secs(2)
        );
        assert_eq!(delay_until(at, utc("2026-01-01T12:00:03Z")), Duration::ZERO);
    }
}
