//! What the daemon's HTTP clients share (the webhook's, hyper's pool over
//! rustls; the quote source's and the stream origin's, reqwest): who they
//! say they are, TLS as the daemon verifies it, redirects never followed,
//! reading at most a prefix of an answer, and `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Buf as _;
use http::header::{DATE, HeaderMap, RETRY_AFTER};
use http_body_util::BodyExt as _;

/// The `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("price-alertd/", env!("CARGO_PKG_VERSION"));

/// TLS as every outbound connection makes it: ring's primitives, the safe
/// protocol versions, and the platform's roots (verification always on).
pub fn tls_config() -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(provider.clone())
        .context("loading the platform's TLS roots")?;
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("configuring TLS")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// A reqwest client as the daemon's are: its user agent, its TLS, each
/// request bounded by `timeout`, and no redirect followed nor Referer sent:
/// what a request carries (an API key, a browser's cookies, the URL's
/// query) goes to the configured URL and nowhere else; a 3xx is a failure.
/// `what` names it in the error.
pub fn reqwest_client(timeout: Duration, what: &str) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .tls_backend_preconfigured(tls_config()?)
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .referer(false)
        .build()
        .with_context(|| format!("building {what}'s HTTP client"))
}

/// Reads `body` into `prefix` up to `limit` bytes in all; true if that was
/// all of it. The rest of a longer body is never read (dropping it drops its
/// connection); a body that ends within the limit leaves the connection
/// reusable. On an error, `prefix` holds what came before it.
pub async fn read_prefix<B>(
    mut body: B,
    limit: usize,
    prefix: &mut Vec<u8>,
) -> Result<bool, B::Error>
where
    B: hyper::body::Body + Unpin,
{
    while let Some(frame) = body.frame().await {
        let Ok(mut chunk) = frame?.into_data() else {
            continue;
        };
        let room = limit - prefix.len();
        if chunk.remaining() > room {
            prefix.extend_from_slice(&chunk.copy_to_bytes(room));
            return Ok(false);
        }
        prefix.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    Ok(true)
}

/// A `Retry-After`, in seconds or as an HTTP date. A date is read against
/// the answer's own `Date`, so that the wait never depends on how this
/// host's clock and the server's agree; without one, against this host's.
/// A date already past is no wait. Each caller caps it by its own policy.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let until = httpdate::parse_http_date(value).ok()?;
    let now = headers
        .get(DATE)
        .and_then(|date| date.to_str().ok())
        .and_then(|date| httpdate::parse_http_date(date.trim()).ok())
        .unwrap_or_else(std::time::SystemTime::now);
    Some(until.duration_since(now).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(value: Option<&'static str>, expected: Option<u64>) {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(RETRY_AFTER, value.parse().unwrap());
        }
        assert_eq!(
            retry_after(&headers),
            expected.map(Duration::from_secs),
            "{value:?}"
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        check(None, None);
        check(Some("120"), Some(120));
        check(Some(" 7 "), Some(7));
        check(Some("-1"), None);
        check(Some("1.5"), None);
        check(Some("soon"), None);
        // A date long past: no wait.
        check(Some("Wed, 21 Oct 2015 07:28:00 GMT"), Some(0));
    }

    #[test]
    fn a_retry_after_date_is_read_against_the_answers_own_date() {
        let mut headers = HeaderMap::new();
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:30:00 GMT".parse().unwrap(),
        );
        headers.insert(DATE, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
        // Without a `Date`, against this host's clock.
        let later = std::time::SystemTime::now() + Duration::from_secs(3600);
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, httpdate::fmt_http_date(later).parse().unwrap());
        let wait = retry_after(&headers).unwrap();
        assert!(
            wait > Duration::from_secs(3590) && wait <= Duration::from_secs(3600),
            "{wait:?}"
        );
    }

    #[test]
    fn a_prefix_stops_at_its_limit() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let body = http_body_util::Full::new(bytes::Bytes::from_static(b"0123456789"));
            let mut prefix = Vec::new();
            assert!(!read_prefix(body.clone(), 4, &mut prefix).await.unwrap());
            assert_eq!(prefix, b"0123");
            let mut prefix = Vec::new();
            assert!(read_prefix(body, 10, &mut prefix).await.unwrap());
            assert_eq!(prefix, b"0123456789");
        });
    }
}
