//! The field types every section uses: durations within bounds, counts,
//! paths, URLs, headers, and files that hold a secret.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use toml::Spanned;
use url::Url;

use super::errors::{Report, logging_value};

/// A URL as it may be shown (check-config, logs): a password, or a query
/// (which may carry a token), is masked. Every URL the daemon prints goes
/// through here.
pub fn display_url(url: &Url) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        url.set_query(Some("***"));
    }
    url.to_string()
}

/// The most of a file holding a secret that is read: a secret is a line.
const SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The text of a file holding a secret (`database.password_file`,
/// `webhook.secret_file`): a regular file, of at most [`SECRET_FILE_BYTES`]
/// (a device or a pipe is never read without end). Warns when users other
/// than its owner and group can read it.
pub(super) fn secret_file(
    path: &Path,
    key: &str,
    span: Range<usize>,
    report: &mut impl Report,
    warn: &mut impl Report,
) -> Option<String> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let read = || -> Result<(String, u32), String> {
        let file = std::fs::File::open(path)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        let metadata = file
            .metadata()
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        if !metadata.is_file() {
            return Err(format!("{} is not a regular file", path.display()));
        }
        let mut text = String::new();
        file.take(SECRET_FILE_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        if text.len() as u64 > SECRET_FILE_BYTES {
            return Err(format!(
                "{} holds more than {} KiB; it should hold the secret alone",
                path.display(),
                SECRET_FILE_BYTES / 1024
            ));
        }
        Ok((text, metadata.permissions().mode()))
    };
    match read() {
        Ok((text, mode)) => {
            if mode & 0o004 != 0 {
                warn(
                    key,
                    span,
                    format!(
                        "{} can be read by every user of this host (mode {:o}): chmod o-r it",
                        path.display(),
                        mode & 0o777
                    ),
                );
            }
            Some(text)
        }
        Err(message) => {
            report(key, span, message);
            None
        }
    }
}

/// An http or https URL.
pub(super) fn http_url(
    value: &Spanned<String>,
    key: &str,
    report: &mut impl Report,
) -> Option<Url> {
    match Url::parse(value.get_ref()) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        Ok(url) => {
            report(
                key,
                value.span(),
                format!("scheme {:?} is not http or https", url.scheme()),
            );
            None
        }
        Err(error) => {
            report(key, value.span(), format!("not a URL: {error}"));
            None
        }
    }
}

/// Refuses credentials in a URL's userinfo next to an `Authorization`
/// header: the HTTP client would silently send only one of them.
pub(super) fn one_source_of_credentials(
    url: &Url,
    headers: &[(HeaderName, HeaderValue)],
    section: &str,
    raw: &BTreeMap<String, Spanned<String>>,
    report: &mut impl Report,
) {
    let has_userinfo = !url.username().is_empty() || url.password().is_some();
    let authorization = headers
        .iter()
        .any(|(name, _)| name == http::header::AUTHORIZATION);
    if has_userinfo && authorization {
        let (name, value) = raw
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .expect("a parsed Authorization header has its raw entry");
        report(
            &format!("{section}.headers.{name}"),
            value.span(),
            format!(
                "{section}.url carries credentials (user:password@) and {section}.headers sets Authorization: \
                 only one would be sent; keep one"
            ),
        );
    }
}

/// Headers the daemon sets itself on every request: the connection's own
/// (`Host`, and the body's framing).
pub(super) const CONNECTION_HEADERS: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// ...and on every webhook request, the Standard Webhooks headers, which a
/// consumer verifies.
pub(super) const WEBHOOK_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Static HTTP headers, their values marked sensitive (never printed by `Debug`).
pub(super) fn header_list(
    headers: &BTreeMap<String, Spanned<String>>,
    key: &str,
    reserved: &[&str],
    report: &mut impl Report,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut list = Vec::new();
    for (name, value) in headers {
        let key = format!("{key}.{name}");
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.get_ref()),
        ) {
            (Ok(name), Ok(_)) if reserved.contains(&name.as_str()) => report(
                &key,
                value.span(),
                format!("{name} is set by price-alertd itself; it cannot be configured"),
            ),
            (Ok(name), Ok(mut value)) => {
                value.set_sensitive(true);
                list.push((name, value));
            }
            (Err(_), _) => report(
                &key,
                value.span(),
                "not a valid HTTP header name".to_owned(),
            ),
            (_, Err(_)) => report(
                &key,
                value.span(),
                "not a valid HTTP header value".to_owned(),
            ),
        }
    }
    list
}

pub(super) fn resolve(path: &Path, base: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// The bounds of a duration key: from `0`, at most `1`. Beyond them a value
/// would overflow where it is used (an instant, a C `int` of milliseconds)
/// or makes no sense; the error gives them.
type Bounds = (Duration, Duration);

const MILLISECOND: Duration = Duration::from_millis(1);

const SECOND: Duration = Duration::from_secs(1);

const MINUTE: Duration = Duration::from_secs(60);

const HOUR: Duration = Duration::from_secs(3600);

const DAY: Duration = Duration::from_secs(86_400);

/// `database.busy_timeout`: SQLite and PostgreSQL take it in milliseconds.
pub(super) const BUSY_TIMEOUT: Bounds = (MILLISECOND, HOUR);

/// `webhook.timeout`, `webhook.connect_timeout`, `prices.timeout`.
pub(super) const REQUEST_TIMEOUT: Bounds =
    (MILLISECOND, Duration::from_secs(10 * MINUTE.as_secs()));

/// `webhook.drain_timeout`: the unit's `TimeoutStopSec` must be longer.
pub(super) const DRAIN_TIMEOUT: Bounds = (MILLISECOND, HOUR);

/// Each wait of `webhook.retry_schedule`.
pub(super) const RETRY_WAIT: Bounds = (MILLISECOND, Duration::from_secs(7 * DAY.as_secs()));

/// A purge job's `keep`.
pub(super) const KEEP: Bounds = (SECOND, Duration::from_secs(3650 * DAY.as_secs()));

/// `prices.max_age`.
pub(super) const MAX_AGE: Bounds = (SECOND, Duration::from_secs(365 * DAY.as_secs()));

pub(super) fn duration(
    value: &Option<Spanned<String>>,
    key: &str,
    default: &str,
    (least, most): Bounds,
    report: &mut impl Report,
) -> Duration {
    let Some(value) = value else {
        return humantime::parse_duration(default).expect("a valid default");
    };
    match humantime::parse_duration(value.get_ref()) {
        Ok(parsed) if (least..=most).contains(&parsed) => parsed,
        Ok(_) => {
            report(
                key,
                value.span(),
                format!(
                    "{:?} is out of bounds: from {} to {}",
                    logging_value(value.get_ref()),
                    show_duration(least),
                    show_duration(most)
                ),
            );
            least
        }
        Err(error) => {
            report(
                key,
                value.span(),
                format!(
                    "{:?} is not a duration such as \"250ms\", \"5s\", \"15m\" or \"2h\" ({error})",
                    logging_value(value.get_ref())
                ),
            );
            least
        }
    }
}

/// A duration as people write it in this file: `30d`, `1h 30m`, `5s`,
/// `250ms` (humantime would say `30days`, and 3650 days in months and years).
pub fn show_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut parts = Vec::new();
    let mut rest = millis;
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ] {
        if rest >= size {
            parts.push(format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    parts.join(" ")
}

pub(super) fn count(
    value: &Option<Spanned<i64>>,
    key: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
    report: &mut impl Report,
) -> usize {
    let Some(value) = value else { return default };
    match usize::try_from(*value.get_ref()) {
        Ok(n) if range.contains(&n) => n,
        _ => {
            report(
                key,
                value.span(),
                format!("must be between {} and {}", range.start(), range.end()),
            );
            default
        }
    }
}
