//! `[stream]`: the stream origin a Pushpin relay asks for its subscribers'
//! streams (`crate::stream`): where it listens, and how it learns who a
//! browser is.

use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::errors::Report;
use super::fields::{REQUEST_TIMEOUT, duration, http_url};
use super::raw;

#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Where Pushpin's routes send the browsers' stream requests.
    pub listen: std::net::SocketAddr,
    /// Asked, with the browser's `Cookie` and `Authorization`, who the
    /// browser is: a 2xx names the user's channel in `X-User-Channel`.
    pub auth_url: Url,
    /// Bound on one question to `auth_url`.
    pub auth_timeout: Duration,
}

/// The `[stream]` section; `None` when it is absent. `pushpin` says whether
/// the webhook publishes to Pushpin, the only relay that asks it.
pub(super) fn stream(
    section: Option<&Spanned<raw::RawStream>>,
    pushpin: bool,
    report: &mut impl Report,
) -> Option<StreamConfig> {
    let section = section?;
    let raw = section.get_ref();
    if !pushpin {
        report(
            "stream",
            section.span(),
            "is for webhook.format = \"pushpin\": only Pushpin asks for streams".to_owned(),
        );
    }
    let listen = match &raw.listen {
        None => {
            report(
                "stream.listen",
                section.span(),
                "missing field `listen`".to_owned(),
            );
            None
        }
        Some(listen) => match listen.get_ref().parse() {
            Ok(address) => Some(address),
            Err(_) => {
                report(
                    "stream.listen",
                    listen.span(),
                    format!(
                        "{:?} is not an address such as \"127.0.0.1:7998\"",
                        listen.get_ref()
                    ),
                );
                None
            }
        },
    };
    let auth_url = match &raw.auth_url {
        None => {
            report(
                "stream.auth_url",
                section.span(),
                "missing field `auth_url`: the application says who each browser is".to_owned(),
            );
            None
        }
        Some(url) => http_url(url, "stream.auth_url", report),
    };
    let auth_timeout = duration(
        &raw.auth_timeout,
        "stream.auth_timeout",
        "5s",
        REQUEST_TIMEOUT,
        report,
    );
    Some(StreamConfig {
        listen: listen?,
        auth_url: auth_url?,
        auth_timeout,
    })
}
