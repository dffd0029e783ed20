//! Prometheus metrics (`price_alertd_*`) and the HTTP endpoint that serves
//! them with `/healthz` and `/readyz`. The series are always kept; they are served only when
//! `[metrics] listen` is set.

mod endpoint;
mod exposition;
mod labels;
mod pace;
mod process;
mod readiness;
mod record;
mod series;

pub use endpoint::{METRICS, serve};
pub use exposition::{Format, Readings};
pub use labels::{Cause, Delivery, Response};
pub use pace::Reading as Pace;
pub use readiness::{BEATING_WITHIN, CLOCK_WITHIN};
pub use series::Metrics;
