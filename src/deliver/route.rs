//! Where an event goes: the webhook URL, or with `{user_id}` in it, its
//! user's URL (the user id percent-encoded as one path segment); the URL's
//! credentials, sent as an `Authorization` header.

use anyhow::Context as _;
use base64::Engine as _;
use http::header::HeaderValue;

use crate::config::{USER_ID_PLACEHOLDER, WebhookConfig};

/// Where events go.
pub(super) enum Target {
    /// Every event to one URL.
    One(Destination),
    /// Each event to its user's URL: `template` (the URL's text without its
    /// credentials, which go in `authorization`) with the user's segment;
    /// the events of alerts without a user to `without_user`, if set.
    PerUser {
        template: String,
        authorization: Option<HeaderValue>,
        without_user: Option<Destination>,
    },
}

/// A URL to POST to: without its credentials, which go in `authorization`.
pub(super) struct Destination {
    uri: http::Uri,
    authorization: Option<HeaderValue>,
}

impl Destination {
    fn new(url: &url::Url) -> anyhow::Result<Destination> {
        let (text, authorization) = without_credentials(url);
        Ok(Destination {
            uri: text
                .parse()
                .context("the webhook URL is not a valid request target")?,
            authorization,
        })
    }
}

/// A URL's text without its userinfo, and the `Authorization` header that
/// carries it instead.
fn without_credentials(url: &url::Url) -> (String, Option<HeaderValue>) {
    let authorization = credentials(url);
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    (url.into(), authorization)
}

/// The `Authorization: Basic` header for credentials in a URL, as browsers
/// and reqwest send them.
fn credentials(url: &url::Url) -> Option<HeaderValue> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let decode = |part: &str| {
        percent_encoding::percent_decode_str(part)
            .decode_utf8_lossy()
            .into_owned()
    };
    let pair = format!(
        "{}:{}",
        decode(url.username()),
        decode(url.password().unwrap_or(""))
    );
    let mut value = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
    .ok()?;
    value.set_sensitive(true);
    Some(value)
}

impl Target {
    pub(super) fn new(config: &WebhookConfig) -> anyhow::Result<Target> {
        Ok(if config.url.per_user() {
            let (template, authorization) = without_credentials(config.url.url());
            Target::PerUser {
                template,
                authorization,
                without_user: config
                    .url_without_user_id
                    .as_ref()
                    .map(Destination::new)
                    .transpose()?,
            }
        } else {
            Target::One(Destination::new(config.url.url())?)
        })
    }

    /// Whether each user's events go to a URL of their own.
    pub(super) fn per_user(&self) -> bool {
        matches!(self, Target::PerUser { .. })
    }

    /// Where `user_id`'s event goes, and its credentials; or why it cannot
    /// go anywhere (it becomes a dead letter that says so).
    pub(super) fn destination(
        &self,
        user_id: Option<&str>,
    ) -> Result<(http::Uri, Option<HeaderValue>), String> {
        match self {
            Target::One(one) => Ok((one.uri.clone(), one.authorization.clone())),
            Target::PerUser {
                template,
                authorization,
                without_user,
            } => match (user_id.filter(|user| !user.trim().is_empty()), without_user) {
                (Some(user), _) => {
                    let text = user_url(template, user)?;
                    let uri = text.parse().map_err(|_| {
                        format!(
                            "the alert's user_id {:?} makes no valid webhook URL",
                            crate::logging::bounded(user)
                        )
                    })?;
                    Ok((uri, authorization.clone()))
                }
                (None, Some(other)) => Ok((other.uri.clone(), other.authorization.clone())),
                (None, None) => Err(
                    "the alert has no user_id, and webhook.url routes each event by {user_id} \
                     (webhook.url_without_user_id can name a URL for such events)"
                        .to_owned(),
                ),
            },
        }
    }
}

/// The URL text of `user_id`'s events: `template` with the user's segment
/// for the placeholder. A user id that cannot be one segment (empty, `.` or
/// `..`, which a server would resolve as a path step) is refused with why.
fn user_url(template: &str, user_id: &str) -> Result<String, String> {
    if matches!(user_id, "" | "." | "..") {
        return Err(format!(
            "the alert's user_id {user_id:?} cannot be a path segment of webhook.url"
        ));
    }
    Ok(template.replacen(USER_ID_PLACEHOLDER, &crate::event::user_segment(user_id), 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[webhook]
url = "http://127.0.0.1:8080/events"
"#;

    fn with_webhook_url(lines: &str) -> String {
        MINIMAL.replace("url = \"http://127.0.0.1:8080/events\"", lines)
    }

    #[test]
    fn a_url_with_user_id_routes_each_event_to_its_users_segment() {
        let config = crate::config::parse(
            &with_webhook_url("url = \"http://127.0.0.1:8080/events/{user_id}?k=secret\""),
            std::path::Path::new("/etc/x"),
            None,
        )
        .unwrap();
        let url = &config.webhook.url;
        assert!(url.per_user());
        assert_eq!(url.display(), "http://127.0.0.1:8080/events/{user_id}?***");
        let text = url.url().as_str();
        let check = |user: &str, expected: &str| {
            assert_eq!(
                user_url(text, user).unwrap(),
                format!("http://127.0.0.1:8080/events/{expected}?k=secret"),
                "{user:?}"
            )
        };
        check("alice", "alice");
        check("u-1.b_c~d", "u-1.b_c~d");
        check("a/b", "a%2Fb");
        check("a b%c", "a%20b%25c");
        check("../x", "..%2Fx");
        check("ünï", "%C3%BCn%C3%AF");
        check("?q#f", "%3Fq%23f");
        for refused in ["", ".", ".."] {
            assert!(
                user_url(text, refused)
                    .unwrap_err()
                    .contains("cannot be a path segment"),
                "{refused:?}"
            );
        }
        // Part of a segment is fine too.
        let config = crate::config::parse(
            &with_webhook_url("url = \"http://relay/events/user-{user_id}.json\""),
            std::path::Path::new("/etc/x"),
            None,
        )
        .unwrap();
        let url = &config.webhook.url;
        assert_eq!(
            user_url(url.url().as_str(), "a/b").unwrap(),
            "http://relay/events/user-a%2Fb.json"
        );
    }

    #[test]
    fn a_url_without_user_id_sends_everything_to_one_url() {
        let config = crate::config::parse(MINIMAL, std::path::Path::new("/etc/x"), None).unwrap();
        let url = &config.webhook.url;
        assert!(!url.per_user());
        let target = Target::new(&config.webhook).unwrap();
        assert!(!target.per_user());
        assert_eq!(
            target.destination(Some("a/b")).unwrap().0.to_string(),
            "http://127.0.0.1:8080/events"
        );
    }
}
