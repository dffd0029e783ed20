//! The series' labels, and every value a label with a fixed set of values
//! takes, typed: each is created at zero before it occurs.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// A job's series are labelled `job_name`: `job` is Prometheus's own target
/// label, and a scrape would rename ours to `exported_job`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct JobLabels {
    pub(super) job_name: String,
}

impl JobLabels {
    pub(super) fn of(job: &str) -> JobLabels {
        JobLabels {
            job_name: job.to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TickLabels {
    pub(super) job_name: String,
    pub(super) result: TickResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CauseLabels {
    pub(super) job_name: String,
    pub(super) cause: Cause,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SkipLabels {
    /// A tick's count of alerts skipped (`evaluate::Count::name`).
    pub(super) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct MemberLabels {
    pub(super) state: MemberState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DeliveryLabels {
    pub(super) outcome: Delivery,
    /// What the receiver answered ([`Response::label`]).
    pub(super) response: &'static str,
}

/// How a run of a job ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) enum TickResult {
    Ok,
    Failed,
    /// The previous run was still going.
    Skipped,
    /// Another daemon sharing the database took the fire time.
    Elsewhere,
}

impl TickResult {
    pub(super) const ALL: [TickResult; 4] = [
        TickResult::Ok,
        TickResult::Failed,
        TickResult::Skipped,
        TickResult::Elsewhere,
    ];

    fn label(self) -> &'static str {
        match self {
            TickResult::Ok => "ok",
            TickResult::Failed => "failed",
            TickResult::Skipped => "skipped",
            TickResult::Elsewhere => "elsewhere",
        }
    }
}

/// What starts a run of a job.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Cause {
    /// A fire time.
    Schedule,
    /// A change the job reacts to.
    Change,
}

impl Cause {
    pub(super) const ALL: [Cause; 2] = [Cause::Schedule, Cause::Change];

    fn label(self) -> &'static str {
        match self {
            Cause::Schedule => "schedule",
            Cause::Change => "change",
        }
    }
}

/// A member of the daemons sharing the database, as it says at a scrape.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(super) enum MemberState {
    /// Beat within the fire lease.
    Live,
    /// Stopped beating within the last hour without leaving: crashed,
    /// killed, or cut off.
    Lost,
}

impl MemberState {
    pub(super) const ALL: [MemberState; 2] = [MemberState::Live, MemberState::Lost];

    fn label(self) -> &'static str {
        match self {
            MemberState::Live => "live",
            MemberState::Lost => "lost",
        }
    }
}

/// How one delivery attempt ended, for the `deliveries_total` series.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Delivery {
    Delivered,
    Failed,
    Dead,
    Released,
}

impl Delivery {
    /// Every outcome, with every response it can come with.
    pub(super) const ALL: [(Delivery, &'static [&'static str]); 4] = [
        (Delivery::Delivered, &["2xx"]),
        (
            Delivery::Failed,
            &["3xx", "4xx", "5xx", "timeout", "connection", "error"],
        ),
        (
            Delivery::Dead,
            &["3xx", "4xx", "5xx", "timeout", "connection", "error"],
        ),
        (Delivery::Released, &["none"]),
    ];

    fn label(self) -> &'static str {
        match self {
            Delivery::Delivered => "delivered",
            Delivery::Failed => "failed",
            Delivery::Dead => "dead",
            Delivery::Released => "released",
        }
    }
}

/// What the receiver answered to one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    Status(u16),
    Timeout,
    /// No connection.
    Connection,
    /// Another failure.
    Error,
    /// Not sent to the end: the daemon stopped.
    None,
}

impl Response {
    pub(super) fn label(self) -> &'static str {
        match self {
            Response::Status(200..=299) => "2xx",
            Response::Status(300..=399) => "3xx",
            Response::Status(400..=499) => "4xx",
            Response::Status(500..=599) => "5xx",
            Response::Status(_) | Response::Error => "error",
            Response::Timeout => "timeout",
            Response::Connection => "connection",
            Response::None => "none",
        }
    }
}

impl EncodeLabelValue for TickResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        self.label().encode(encoder)
    }
}

impl EncodeLabelValue for Cause {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        self.label().encode(encoder)
    }
}

impl EncodeLabelValue for MemberState {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        self.label().encode(encoder)
    }
}

impl EncodeLabelValue for Delivery {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        self.label().encode(encoder)
    }
}
