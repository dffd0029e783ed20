//! `[[jobs]]`: each job's kind, schedule and scope of tickers.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use crate::schedule::Schedule;

use super::errors::Report;
use super::fields::{KEEP, duration};
use super::raw;

#[derive(Debug, Clone)]
pub struct JobConfig {
    pub name: String,
    pub kind: JobKind,
    pub schedule: Schedule,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobKind {
    /// Read enabled alerts and quotes, claim the triggered alerts, queue
    /// their events; on its schedule, and with `on_change` also as soon as a
    /// quote or an alert it covers changes.
    Evaluate { scope: Scope, on_change: bool },
    /// Delete delivered outbox rows delivered longer than `keep` ago. Pending
    /// events and dead letters are never deleted.
    Purge { keep: Duration },
}

/// The tickers an `evaluate` job covers: glob patterns such as `BTC-*`
/// (`*`, `?` and `[...]`, case-sensitive); empty means every ticker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Vec<glob::Pattern>);

impl Scope {
    pub fn all() -> Scope {
        Scope(Vec::new())
    }

    pub fn parse(patterns: &[&str]) -> Result<Scope, String> {
        patterns
            .iter()
            .map(|pattern| {
                glob::Pattern::new(pattern)
                    .map_err(|error| format!("{pattern:?} is not a ticker pattern: {error}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Scope)
    }

    pub fn covers(&self, ticker: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|pattern| pattern.matches(ticker))
    }

    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            "all tickers".to_owned()
        } else {
            self.0
                .iter()
                .map(|pattern| pattern.as_str())
                .collect::<Vec<_>>()
                .join(",")
        }
    }
}

impl JobConfig {
    /// Whether the job also runs when what it covers changes (`on_change`).
    pub fn reacts(&self) -> bool {
        matches!(
            self.kind,
            JobKind::Evaluate {
                on_change: true,
                ..
            }
        )
    }

    /// The tickers it covers, for an `evaluate` job.
    pub fn scope(&self) -> Option<&Scope> {
        match &self.kind {
            JobKind::Evaluate { scope, .. } => Some(scope),
            JobKind::Purge { .. } => None,
        }
    }
}

/// The `[[jobs]]` entries; a job with an error is left out (and reported).
/// `fetched`: the daemon fetches the quotes itself (`prices.source =
/// "http"`), so they are no change a job could react to.
pub(super) fn jobs(
    raw: &[Spanned<raw::RawJob>],
    fetched: bool,
    report: &mut impl Report,
) -> Vec<JobConfig> {
    let mut jobs = Vec::new();
    let mut names = BTreeMap::new();
    for (index, spanned) in raw.iter().enumerate() {
        if let Some(job) = job(index, spanned, fetched, &mut names, report) {
            jobs.push(job);
        }
    }
    jobs
}

/// One `[[jobs]]` entry; `names` holds the names taken by earlier entries.
fn job(
    index: usize,
    spanned: &Spanned<raw::RawJob>,
    fetched: bool,
    names: &mut BTreeMap<String, usize>,
    report: &mut impl Report,
) -> Option<JobConfig> {
    let job = spanned.get_ref();
    let key = |field: &str| format!("jobs[{index}].{field}");
    for (field, value) in [
        ("name", &job.name),
        ("kind", &job.kind),
        ("schedule", &job.schedule),
    ] {
        if value.is_none() {
            report(
                &key(field),
                spanned.span(),
                format!("missing field `{field}`"),
            );
        }
    }
    let (Some(name), Some(kind), Some(schedule)) = (&job.name, &job.kind, &job.schedule) else {
        return None;
    };
    let name = job_name(name, index, names, &key, report);
    let kind = job_kind(job, kind, fetched, &key, report);
    let schedule = job_schedule(job, schedule, &key, report);
    Some(JobConfig {
        name,
        kind: kind?,
        schedule: schedule?,
    })
}

/// A job's name: not empty, and not an earlier job's (`names`).
fn job_name(
    name: &Spanned<String>,
    index: usize,
    names: &mut BTreeMap<String, usize>,
    key: &dyn Fn(&str) -> String,
    report: &mut impl Report,
) -> String {
    let text = name.get_ref().trim().to_owned();
    if text.is_empty() {
        report(&key("name"), name.span(), "must not be empty".to_owned());
    } else if let Some(first) = names.insert(text.clone(), index) {
        report(
            &key("name"),
            name.span(),
            format!("{text:?} is already the name of jobs[{first}]"),
        );
    }
    text
}

/// A job's kind and the keys only that kind takes: an `evaluate` job's
/// `tickers` and `on_change`, a `purge` job's `keep`.
fn job_kind(
    job: &raw::RawJob,
    kind: &Spanned<String>,
    fetched: bool,
    key: &dyn Fn(&str) -> String,
    report: &mut impl Report,
) -> Option<JobKind> {
    let scope = scope(&job.tickers, &key("tickers"), report);
    let on_change = on_change(job, kind, fetched, key, report);
    if let (Some(tickers), "purge") = (&job.tickers, kind.get_ref().as_str()) {
        report(
            &key("tickers"),
            tickers.span(),
            "only an \"evaluate\" job takes `tickers`".to_owned(),
        );
    }
    match (kind.get_ref().as_str(), &job.keep) {
        ("evaluate", None) => Some(JobKind::Evaluate { scope, on_change }),
        ("evaluate", Some(keep)) => {
            report(
                &key("keep"),
                keep.span(),
                "only a \"purge\" job takes `keep`".to_owned(),
            );
            None
        }
        ("purge", Some(_)) => Some(JobKind::Purge {
            keep: duration(&job.keep, &key("keep"), "7d", KEEP, report),
        }),
        ("purge", None) => {
            report(
                &key("keep"),
                kind.span(),
                "a \"purge\" job needs `keep`, e.g. \"7d\"".to_owned(),
            );
            None
        }
        (other, _) => {
            report(
                &key("kind"),
                kind.span(),
                format!("unknown kind {other:?}; expected \"evaluate\" or \"purge\""),
            );
            None
        }
    }
}

/// A job's `on_change`: false if unset. Only an `evaluate` job reacts, and
/// only to quotes the application writes.
fn on_change(
    job: &raw::RawJob,
    kind: &Spanned<String>,
    fetched: bool,
    key: &dyn Fn(&str) -> String,
    report: &mut impl Report,
) -> bool {
    let Some(on_change) = &job.on_change else {
        return false;
    };
    if kind.get_ref() != "evaluate" {
        report(
            &key("on_change"),
            on_change.span(),
            "only an \"evaluate\" job takes `on_change`".to_owned(),
        );
        return false;
    }
    if *on_change.get_ref() && fetched {
        report(
            &key("on_change"),
            on_change.span(),
            "a job cannot react to changes when the daemon fetches the quotes itself \
             (prices.source = \"http\"): each tick's own quotes would wake it again; \
             use the schedule"
                .to_owned(),
        );
        return false;
    }
    *on_change.get_ref()
}

/// A job's schedule in its `timezone`; a problem with the zone is reported
/// at the zone.
fn job_schedule(
    job: &raw::RawJob,
    schedule: &Spanned<String>,
    key: &dyn Fn(&str) -> String,
    report: &mut impl Report,
) -> Option<Schedule> {
    let zone = job.timezone.as_ref().map(|zone| zone.get_ref().as_str());
    match Schedule::parse(schedule.get_ref(), zone) {
        Ok(parsed) => Some(parsed),
        Err(message) => {
            let (field, span) = match &job.timezone {
                Some(zone) if message.contains("time zone") => ("timezone", zone.span()),
                _ => ("schedule", schedule.span()),
            };
            report(&key(field), span, message);
            None
        }
    }
}

/// A job's `tickers`: every ticker if unset.
fn scope(
    tickers: &Option<Spanned<Vec<Spanned<String>>>>,
    key: &str,
    report: &mut impl Report,
) -> Scope {
    match tickers {
        None => Scope::all(),
        Some(list) if list.get_ref().is_empty() => {
            report(
                key,
                list.span(),
                "must list at least one pattern (leave it out to cover every ticker)".to_owned(),
            );
            Scope::all()
        }
        Some(list) => {
            let patterns: Vec<&str> = list
                .get_ref()
                .iter()
                .map(|pattern| pattern.get_ref().as_str())
                .collect();
            Scope::parse(&patterns).unwrap_or_else(|message| {
                report(key, list.span(), message);
                Scope::all()
            })
        }
    }
}
