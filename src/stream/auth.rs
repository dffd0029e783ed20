//! Who a browser is: the application says, asked with the browser's own
//! `Cookie` and `Authorization` (nothing else of its request), as nginx's
//! `auth_request` asks it for the nchan relay. A 2xx names the user's
//! channel in `X-User-Channel` (the user id percent-encoded as
//! `event::user_segment` writes it); anything else refuses the stream.

use http::header::{AUTHORIZATION, COOKIE, HeaderMap};

use crate::config::StreamConfig;
use crate::http_client;

/// The header of the application's answer that names the user's channel.
const USER_CHANNEL: &str = "x-user-channel";

pub(super) struct Auth {
    client: reqwest::Client,
    url: url::Url,
}

/// A browser the application recognised: its user, and the segment that
/// names their channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct User {
    pub id: String,
    pub segment: String,
}

/// Why a stream is refused: the status the browser gets, and why, for the
/// log and the answer.
#[derive(Debug)]
pub(super) struct Refused {
    pub status: u16,
    pub why: String,
}

impl Auth {
    pub(super) fn new(config: &StreamConfig) -> anyhow::Result<Auth> {
        // The browser's cookies go to the application's URL and nowhere
        // else.
        let client = http_client::reqwest_client(config.auth_timeout, "the stream origin")?;
        Ok(Auth {
            client,
            url: config.auth_url.clone(),
        })
    }

    /// Asks the application who sent a request with `headers`.
    pub(super) async fn who(&self, headers: &HeaderMap) -> Result<User, Refused> {
        let mut request = self.client.get(self.url.clone());
        for name in [COOKIE, AUTHORIZATION] {
            for value in headers.get_all(&name) {
                request = request.header(&name, value);
            }
        }
        let answer = request.send().await.map_err(|error| Refused {
            status: 503,
            why: format!(
                "the application's stream.auth_url did not answer: {}",
                crate::logging::error_chain(&error.without_url())
            ),
        })?;
        let status = answer.status();
        if !status.is_success() {
            // Its refusal, passed on; any other answer is the origin's failure.
            return Err(match status.as_u16() {
                401 | 403 => Refused {
                    status: status.as_u16(),
                    why: "the application does not let this browser stream".to_owned(),
                },
                other => Refused {
                    status: 502,
                    why: format!("the application's stream.auth_url answered {other}"),
                },
            });
        }
        let segment = answer
            .headers()
            .get(USER_CHANNEL)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        // The body is never read: dropping the answer drops it.
        drop(answer);
        match crate::event::user_of_segment(&segment) {
            Some(id) => Ok(User { id, segment }),
            None => Err(Refused {
                status: 502,
                why: format!(
                    "the application's answer named no channel: X-User-Channel {:?} is not a user id percent-encoded as one path segment",
                    crate::logging::bounded(&segment)
                ),
            }),
        }
    }
}
