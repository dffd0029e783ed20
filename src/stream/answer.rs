//! One answer to Pushpin: a browser's stream opened or resumed, or a link
//! this origin gave followed back. Each writes the user's events after
//! where the stream stands, at most a page of them, and either a link to
//! the next page or the hold on the user's channel, `prev-id` the last
//! event written, so that Pushpin can tell what comes next from a gap.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http_body_util::Full;
use hyper::body::Bytes;

use crate::event::sse;
use crate::store::{self, channels};

use super::auth::User;
use super::link::NEXT_PATH;
use super::{Origin, plain};

/// Events one answer writes, at most; more follow through its link.
const PAGE: usize = 100;

/// The longest `Last-Event-ID` (or `last-id`) looked up: longer ones name
/// no event.
const MAX_ID: usize = 256;

/// The SSE event that tells a page its stream could not resume where it
/// stood: what it had is no longer kept (or never was its own). The page
/// reloads its state; the stream goes on from now.
const RESET: &str = "event: reset\ndata: {\"type\":\"reset\",\"reason\":\"the stream cannot resume after the event it last had: reload\"}\n\n";

/// Sent by Pushpin on an idle stream, so that no proxy between it and the
/// browser closes it.
const KEEP_ALIVE: &str = ":\\n\\n; format=cstring; timeout=20";

/// The origin's own health: 200 while it serves.
const HEALTH_PATH: &str = "/healthz";

pub(super) async fn answer(
    origin: &Origin,
    request: http::request::Parts,
) -> hyper::Response<Full<Bytes>> {
    if request.method != http::Method::GET {
        return plain(405, "streams are read with GET");
    }
    // Alive, without asking the application (`check-config` asks it here).
    if request.uri.path() == HEALTH_PATH {
        return plain(200, "ok");
    }
    let asked = if request.uri.path() == NEXT_PATH {
        followed(origin, &request)
    } else {
        opened(origin, &request).await
    };
    let (user, after) = match asked {
        Ok(asked) => asked,
        Err((status, why)) => return plain(status, &why),
    };
    tracing::debug!(
        user = %user.segment,
        from = ?after,
        grip_last = ?request.headers.get("grip-last"),
        "a stream asks for its events"
    );
    match read(origin, &user, after).await {
        Ok(read) => stream(origin, &user, read),
        Err(error) => {
            origin.failed(&format!("a stream's events could not be read: {error:#}"));
            plain(503, "the database is not answering")
        }
    }
}

/// A stream refused: the status, and what the answer says.
type Refusal = (u16, String);

/// Pushpin, following a link this origin gave it: the link's user, from
/// what the stream last had (`Grip-Last`), else where the link's page
/// ended.
fn followed(origin: &Origin, request: &http::request::Parts) -> Result<(User, Resume), Refusal> {
    let Some(followed) = request
        .uri
        .query()
        .and_then(|query| origin.links.follow(query))
    else {
        return Err((403, "not a link this origin gave".to_owned()));
    };
    let Some(id) = crate::event::user_of_segment(&followed.segment) else {
        return Err((400, "not a channel".to_owned()));
    };
    let user = User {
        id,
        segment: followed.segment,
    };
    let after =
        last_had(&request.headers, &crate::event::user_channel(&user.id)).or(followed.after);
    let resume = match after {
        // A stream held before the channel's first event.
        Some(id) if id == channels::START => Resume::Start,
        Some(id) => Resume::After(id),
        None => Resume::Head,
    };
    Ok((user, resume))
}

/// A browser's stream, opened or resumed: who it is, as the application
/// says, and the last event it had, as it says (`Last-Event-ID`).
async fn opened(
    origin: &Origin,
    request: &http::request::Parts,
) -> Result<(User, Resume), Refusal> {
    let user = match origin.auth.who(&request.headers).await {
        Ok(user) => user,
        Err(refused) if refused.status >= 500 => {
            // Why, for the operator; the browser learns only that.
            origin.failed(&refused.why);
            return Err((
                refused.status,
                "the application could not say who this is".to_owned(),
            ));
        }
        Err(refused) => return Err((refused.status, refused.why)),
    };
    let after = request
        .headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map_or(Resume::Head, |id| Resume::After(id.to_owned()));
    Ok((user, after))
}

/// Where a stream resumes.
#[derive(Debug)]
enum Resume {
    /// After this event (a browser's `Last-Event-ID`, Pushpin's `last-id`).
    After(String),
    /// From the channel's first event: Pushpin's stream that was held
    /// before there was one (`last-id` [`channels::START`]).
    Start,
    /// From now: the channel's head.
    Head,
}

/// What an answer writes.
struct Read {
    /// The stream could not resume where it stood: it is told so first.
    reset: bool,
    events: Vec<channels::ChannelEvent>,
    /// The id of the last event the stream will have had, once it read
    /// these: the hold's `prev-id`.
    last: String,
    /// More events follow the page.
    more: bool,
}

/// `user`'s events after `after`, a page of them.
async fn read(origin: &Origin, user: &User, after: Resume) -> anyhow::Result<Read> {
    let user_id = user.id.clone();
    store::blocking(
        &origin.pool,
        "reading a stream's events",
        move |connection| {
            let start = match &after {
                Resume::After(id) if id.len() <= MAX_ID => {
                    channels::position(connection, &user_id, id)?.map(|seq| (seq, id.clone()))
                }
                Resume::Start => Some((0, channels::START.to_owned())),
                Resume::After(_) | Resume::Head => None,
            };
            let (reset, (seq, last)) = match start {
                Some(start) => (false, start),
                None => {
                    let head = channels::head(connection, &user_id)?;
                    (matches!(after, Resume::After(_)), (head.seq, head.last))
                }
            };
            let mut events = channels::after(connection, &user_id, seq, PAGE + 1)?;
            let more = events.len() > PAGE;
            events.truncate(PAGE);
            let last = events.last().map_or(last, |event| event.event_id.clone());
            Ok(Read {
                reset,
                events,
                last,
                more,
            })
        },
    )
    .await
}

/// The answer: the events as the stream carries them, then a link to the
/// next page, or the hold on the user's channel with a link to come back
/// by when Pushpin finds an event missing.
fn stream(origin: &Origin, user: &User, read: Read) -> hyper::Response<Full<Bytes>> {
    let mut body = String::new();
    if read.reset {
        body.push_str(RESET);
    }
    for event in &read.events {
        body.push_str(&sse(&event.event_id, &event.body));
    }
    let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let header =
        |text: String| HeaderValue::from_str(&text).expect("segments and ids are header text");
    if read.more {
        let link = origin.links.next(&user.segment, Some(&read.last));
        headers.insert("grip-link", header(format!("<{link}>; rel=next")));
        return response;
    }
    let link = origin.links.next(&user.segment, None);
    headers.insert("grip-hold", HeaderValue::from_static("stream"));
    headers.insert(
        "grip-channel",
        header(format!(
            "{}; prev-id={}",
            crate::event::user_channel(&user.id),
            read.last
        )),
    );
    headers.insert("grip-link", header(format!("<{link}>; rel=next")));
    headers.insert("grip-keep-alive", HeaderValue::from_static(KEEP_ALIVE));
    response
}

/// The `last-id` Pushpin gives for `channel` (`Grip-Last: <channel>;
/// last-id=<id>`), if it gives one.
fn last_had(headers: &http::HeaderMap, channel: &str) -> Option<String> {
    headers
        .get_all("grip-last")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            if parts.next()? != channel {
                return None;
            }
            parts.find_map(|part| part.strip_prefix("last-id=").map(str::to_owned))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushpins_last_id_is_read_for_the_channel_asked_about() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            "grip-last",
            HeaderValue::from_static("user/bob; last-id=b1, user/a%2Fb; last-id=pa_x_2_1"),
        );
        assert_eq!(
            last_had(&headers, "user/a%2Fb").as_deref(),
            Some("pa_x_2_1")
        );
        assert_eq!(last_had(&headers, "user/bob").as_deref(), Some("b1"));
        assert_eq!(last_had(&headers, "user/carol"), None);
    }
}
