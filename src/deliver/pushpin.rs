//! Pushpin's publish API (`webhook.format = "pushpin"`): several events in
//! one request, each an item on its user's channel, written as the
//! server-sent event its subscribers receive, and signed one by one.

use crate::config::{Secret, WebhookConfig};
use crate::store::outbox::Leased;

use crate::event::{sse, user_channel};

use super::attempt::sign;

/// The channel of `user_id`'s events: `user/` and the user id
/// percent-encoded as one path segment, as a `{user_id}` URL routes them;
/// or why the event has none (it becomes a dead letter that says so).
pub(super) fn channel(user_id: Option<&str>) -> Result<String, String> {
    match user_id.filter(|user| !user.trim().is_empty()) {
        Some(user) => Ok(user_channel(user)),
        None => Err(
            "the alert has no user_id, and format = \"pushpin\" publishes each event to its user's channel"
                .to_owned(),
        ),
    }
}

/// Why an event cannot be an SSE event: its id would end the `id:` line.
pub(super) fn unfit(event: &Leased) -> Option<String> {
    event
        .event_id
        .contains(['\r', '\n', '\0'])
        .then(|| "the event's id holds a line break, which no SSE id may".to_owned())
}

/// The body of one publish request: an item for each event, in order, on
/// its `channel`, with its id (Pushpin drops an id it published in the last
/// minute, `id_cache_ttl`: a retried batch repeats nothing a subscriber
/// already got), the id of the event before it on its channel (`prev-id`:
/// Pushpin holds an item back until the one before it came, and a stream
/// that finds one missing asks the origin for what it missed), and its
/// Standard Webhooks signature at `timestamp` in the item's `meta`, so that
/// each event verifies on its own.
pub(super) fn body(config: &WebhookConfig, events: &[(&Leased, String)], timestamp: i64) -> String {
    let timestamp_text = timestamp.to_string();
    let contents: Vec<(String, Option<String>)> = events
        .iter()
        .map(|(event, _)| {
            let signature =
                (!config.secrets.is_empty()).then(|| signatures(&config.secrets, event, timestamp));
            (sse(&event.event_id, &event.body), signature)
        })
        .collect();
    let items = events
        .iter()
        .zip(&contents)
        .map(|((event, channel), (content, signature))| Item {
            channel,
            id: &event.event_id,
            prev_id: event.prev_id.as_deref(),
            formats: Formats {
                http_stream: Content { content },
            },
            meta: Meta {
                id: &event.event_id,
                timestamp: &timestamp_text,
                signature: signature.as_deref(),
            },
        })
        .collect();
    serde_json::to_string(&Publish { items }).expect("a publish request serializes")
}

/// Pushpin's publish request, written as it is read: no map is built.
#[derive(serde::Serialize)]
struct Publish<'a> {
    items: Vec<Item<'a>>,
}

#[derive(serde::Serialize)]
struct Item<'a> {
    channel: &'a str,
    id: &'a str,
    #[serde(rename = "prev-id", skip_serializing_if = "Option::is_none")]
    prev_id: Option<&'a str>,
    formats: Formats<'a>,
    meta: Meta<'a>,
}

#[derive(serde::Serialize)]
struct Formats<'a> {
    #[serde(rename = "http-stream")]
    http_stream: Content<'a>,
}

#[derive(serde::Serialize)]
struct Content<'a> {
    content: &'a str,
}

/// The event's own Standard Webhooks headers, in the item's `meta`.
#[derive(serde::Serialize)]
struct Meta<'a> {
    #[serde(rename = "webhook-id")]
    id: &'a str,
    #[serde(rename = "webhook-timestamp")]
    timestamp: &'a str,
    #[serde(rename = "webhook-signature", skip_serializing_if = "Option::is_none")]
    signature: Option<&'a str>,
}

fn signatures(secrets: &[Secret], event: &Leased, timestamp: i64) -> String {
    secrets
        .iter()
        .map(|secret| sign(secret, &event.event_id, timestamp, &event.body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A batch's `webhook-id`: its first event's, and how many more it carries.
pub(super) fn batch_id(events: &[(&Leased, String)]) -> String {
    match events {
        [] => String::new(),
        [one] => one.0.event_id.clone(),
        [first, rest @ ..] => format!("{}+{}", first.0.event_id, rest.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leased(event_id: &str, user: Option<&str>, body: &str) -> Leased {
        Leased {
            row_id: 1,
            event_id: event_id.to_owned(),
            body: body.to_owned(),
            attempts: 0,
            user_id: user.map(str::to_owned),
            lease_until: 0,
            created_at: None,
            channel_seq: None,
            prev_id: None,
        }
    }

    #[test]
    fn each_event_is_an_item_on_its_users_channel_signed_on_its_own() {
        let config = crate::config::parse(
            "[webhook]\nurl = \"http://127.0.0.1:5561/publish/\"\nformat = \"pushpin\"\n\
             secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n",
            std::path::Path::new("."),
            None,
        )
        .unwrap()
        .webhook;
        assert_eq!(config.batch, 100);
        let mut a = leased("pa_x_1_1", Some("a/b"), r#"{"n":1}"#);
        a.prev_id = Some("start".to_owned());
        let b = leased("pa_x_2_1", Some("bob"), "{\"n\":\n2}");
        let events = [
            (&a, channel(a.user_id.as_deref()).unwrap()),
            (&b, channel(b.user_id.as_deref()).unwrap()),
        ];
        let body: serde_json::Value =
            serde_json::from_str(&super::body(&config, &events, 1_614_265_330)).unwrap();
        let items = body["items"].as_array().unwrap();
        assert_eq!(items[0]["channel"], "user/a%2Fb");
        assert_eq!(items[0]["id"], "pa_x_1_1");
        assert_eq!(items[0]["prev-id"], "start");
        assert!(items[1].get("prev-id").is_none());
        assert_eq!(
            items[0]["formats"]["http-stream"]["content"],
            "id: pa_x_1_1\nevent: price_alert\ndata: {\"n\":1}\n\n"
        );
        assert_eq!(
            items[1]["formats"]["http-stream"]["content"],
            "id: pa_x_2_1\nevent: price_alert\ndata: {\"n\":\ndata: 2}\n\n"
        );
        assert_eq!(
            items[0]["meta"]["webhook-signature"],
            sign(&config.secrets[0], "pa_x_1_1", 1_614_265_330, r#"{"n":1}"#)
        );
        assert_eq!(items[1]["meta"]["webhook-timestamp"], "1614265330");
        assert_eq!(batch_id(&events), "pa_x_1_1+1");
        assert!(channel(None).is_err());
        assert!(channel(Some(" ")).is_err());
        assert!(unfit(&leased("a\nid: b", Some("u"), "{}")).is_some());
    }
}
