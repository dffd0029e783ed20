//! The webhook event: the JSON contract consumers receive, its stable id,
//! and, for relays that stream it to each user, its user's channel and its
//! server-sent form.

use serde::Serialize;

/// One `price_alert` event, serialized once at the claim and stored as bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Stable for one arming of one alert of one database (invariant 3);
    /// consumers deduplicate on it.
    pub id: String,
    /// When the alert triggered (RFC 3339, UTC).
    pub timestamp: String,
    pub data: EventData,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventData {
    pub alert_id: i64,
    pub ticker: String,
    pub condition: String,
    pub target_price: f64,
    /// A channel's upper level (`target_price` is its lower one); null
    /// for the other conditions.
    pub upper_price: Option<f64>,
    pub price: f64,
    pub quote_time: String,
    pub triggered_at: String,
    pub user_id: Option<String>,
    pub note: Option<String>,
    /// Which trigger of the alert this is: 1 for its first (since its last
    /// `alerts rearm`), 2 for a repeating alert's second, ...
    pub trigger_count: i64,
    /// Of how many (`max_triggers`): the last one leaves the alert
    /// disabled. Null: no budget.
    pub max_triggers: Option<i64>,
    /// A repeating alert's re-arm band (a percent): how far its price must
    /// come back past its level before it fires again. Null: none.
    pub rearm_band: Option<f64>,
}

impl Event {
    pub fn price_alert(
        installation: &str,
        alert_id: i64,
        arming: i64,
        triggered_at: &str,
        data: EventData,
    ) -> Event {
        Event {
            kind: "price_alert",
            id: event_id(installation, alert_id, arming),
            timestamp: triggered_at.to_owned(),
            data,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an event always serializes")
    }
}

/// The id of the event for one arming of one alert of one database (its
/// installation id): a pure function of the three.
pub fn event_id(installation: &str, alert_id: i64, arming: i64) -> String {
    format!("pa_{installation}_{alert_id}_{arming}")
}

/// The SSE event name of every event (its `type`).
pub const SSE_NAME: &str = "price_alert";

/// An event as a subscriber's stream carries it: its id (what a browser
/// sends back as `Last-Event-ID`), its name, and its body, a `data:` line
/// for each of its lines.
pub fn sse(event_id: &str, body: &str) -> String {
    let mut text = format!("id: {event_id}\nevent: {SSE_NAME}\n");
    for line in body.split('\n') {
        text.push_str("data: ");
        text.push_str(line.strip_suffix('\r').unwrap_or(line));
        text.push('\n');
    }
    text.push('\n');
    text
}

/// Characters a user id keeps as they are in its channel's name and URL
/// segment: RFC 3986's unreserved ones; everything else is
/// percent-encoded, `/` included.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `user_id` as one path segment: RFC 3986's unreserved characters as they
/// are, everything else percent-encoded. A `{user_id}` URL, a relay's
/// channel and the application's `X-User-Channel` all spell it so.
pub fn user_segment(user_id: &str) -> String {
    percent_encoding::utf8_percent_encode(user_id, SEGMENT).to_string()
}

/// The user id a segment spells, if it spells one as [`user_segment`]
/// writes it (and no other way).
pub fn user_of_segment(segment: &str) -> Option<String> {
    let user = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?
        .into_owned();
    (!user.trim().is_empty() && user_segment(&user) == segment).then_some(user)
}

/// The channel of a user's events on a relay that names channels
/// (Pushpin): `user/` and the user's segment.
pub fn user_channel(user_id: &str) -> String {
    format!("user/{}", user_segment(user_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_follows_the_contract() {
        let event = Event::price_alert(
            "5d1c0e7a9b3f4c2d8e6a1b0f",
            42,
            7,
            "2026-01-02T03:04:05.000Z",
            EventData {
                alert_id: 42,
                ticker: "AAPL".into(),
                condition: "above".into(),
                target_price: 200.0,
                upper_price: None,
                price: 201.5,
                quote_time: "2026-01-02T03:04:00Z".into(),
                triggered_at: "2026-01-02T03:04:05.000Z".into(),
                user_id: Some("u1".into()),
                note: None,
                trigger_count: 2,
                max_triggers: Some(3),
                rearm_band: Some(1.5),
            },
        );
        assert_eq!(
            event.to_json(),
            r#"{"type":"price_alert","id":"pa_5d1c0e7a9b3f4c2d8e6a1b0f_42_7","timestamp":"2026-01-02T03:04:05.000Z","data":{"alert_id":42,"ticker":"AAPL","condition":"above","target_price":200.0,"upper_price":null,"price":201.5,"quote_time":"2026-01-02T03:04:00Z","triggered_at":"2026-01-02T03:04:05.000Z","user_id":"u1","note":null,"trigger_count":2,"max_triggers":3,"rearm_band":1.5}}"#
        );
    }
}
