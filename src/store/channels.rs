//! Users' channels, for a relay that resumes a stream from the outbox
//! (`webhook.format = "pushpin"`). Each event published to its user's
//! channel takes the next place there when it is first leased, with the id
//! of the event before it: every publisher (several daemons on one
//! PostgreSQL included) and every resumed stream then agree on one order
//! per user, and the relay can tell a gap from the ids alone. The stream
//! origin reads a channel's events after a place (`crate::stream`).
//!
//! A channel's head (its last place and the id there) is kept in a table
//! of its own, so that the next event still names the one before it after
//! the outbox's rows were purged. On PostgreSQL the heads of the users a
//! lease places are locked, in user order, until it commits: two members
//! leasing one user's events place them one after the other.

use std::collections::HashMap;

use super::outbox::Leased;
use super::shared::{Row as _, Statements};

/// The id "before" a channel's first event: no event id reads so (they
/// start with `pa_`).
pub const START: &str = "start";

/// The outbox's places, and the channels' heads. `{bigint}` is each
/// engine's 64-bit integer.
pub(super) const SCHEMA: &str = "
ALTER TABLE outbox ADD COLUMN channel_seq {bigint};
ALTER TABLE outbox ADD COLUMN channel_prev TEXT;
CREATE INDEX outbox_channel ON outbox (user_id, channel_seq) WHERE channel_seq IS NOT NULL;
CREATE TABLE stream_channels (
    user_id TEXT PRIMARY KEY,
    last_seq {bigint} NOT NULL,
    last_event_id TEXT NOT NULL
);
";

/// The key that signs the links a stream origin gives Pushpin (`stream`),
/// one for every member: random, chosen when the table is made. `{key}`
/// is each engine's random hex text.
pub(super) const KEY_SCHEMA: &str = "
CREATE TABLE stream_key (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    key TEXT NOT NULL
);
INSERT INTO stream_key (id, key) VALUES (1, {key});
";

/// The key of [`KEY_SCHEMA`].
pub(super) const KEY: &str = "SELECT key FROM stream_key WHERE id = 1";

pub(super) fn key_on<C: Statements>(connection: &mut C) -> std::result::Result<String, C::Error> {
    Ok(connection
        .query_first(KEY, &[], |row| row.get::<String>(0))?
        .unwrap_or_default())
}

/// The key that signs a stream origin's links, the same for every member.
pub fn key(connection: &mut super::Connection) -> super::Result<String> {
    connection.engine().stream_key()
}

/// A channel's last place, and the event there ([`START`] at place 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub last: String,
}

impl Head {
    fn empty() -> Head {
        Head {
            seq: 0,
            last: START.to_owned(),
        }
    }
}

/// The place a leased row took: its channel's next, after `prev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Place {
    pub row_id: i64,
    pub seq: i64,
    pub prev: String,
}

/// Whether a row's user has a channel: an id that is not blank.
fn channel_of(event: &Leased) -> Option<&str> {
    event
        .user_id
        .as_deref()
        .filter(|user| !user.trim().is_empty())
}

/// The users of the leased rows that have no place yet, sorted (the order
/// their heads are locked in), each once.
pub(super) fn unplaced_users(leased: &[Leased]) -> Vec<String> {
    let mut users: Vec<String> = leased
        .iter()
        .filter(|event| event.channel_seq.is_none())
        .filter_map(channel_of)
        .map(str::to_owned)
        .collect();
    users.sort_unstable();
    users.dedup();
    users
}

/// Places each leased row without a place, in row order, after its
/// channel's head in `heads` (an empty channel's where there is none), and
/// moves the heads along: what to write to the rows, and the new heads.
/// Rows already placed keep theirs.
pub(super) fn place(
    leased: &mut [Leased],
    mut heads: HashMap<String, Head>,
) -> (Vec<Place>, Vec<(String, Head)>) {
    let mut places = Vec::new();
    let mut moved: Vec<String> = Vec::new();
    for event in leased
        .iter_mut()
        .filter(|event| event.channel_seq.is_none())
    {
        let Some(user) = channel_of(event).map(str::to_owned) else {
            continue;
        };
        let head = heads.entry(user.clone()).or_insert_with(Head::empty);
        let seq = head.seq + 1;
        let prev = std::mem::replace(&mut head.last, event.event_id.clone());
        head.seq = seq;
        event.channel_seq = Some(seq);
        event.prev_id = Some(prev.clone());
        places.push(Place {
            row_id: event.row_id,
            seq,
            prev,
        });
        moved.push(user);
    }
    moved.sort_unstable();
    moved.dedup();
    let heads = moved
        .into_iter()
        .map(|user| {
            let head = heads.remove(&user).expect("a moved head");
            (user, head)
        })
        .collect();
    (places, heads)
}

/// One event of a channel, as a stream resumes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEvent {
    pub seq: i64,
    pub event_id: String,
    pub body: String,
}

/// The place of `event_id` on `user_id`'s channel: none for an event of
/// another user, one never published, or one purged.
pub(super) const POSITION: &str = "SELECT channel_seq FROM outbox
     WHERE event_id = $1 AND user_id = $2 AND channel_seq IS NOT NULL";

/// Up to `$3` events of `$1`'s channel after place `$2`, in order.
pub(super) const AFTER: &str = "SELECT channel_seq, event_id, body FROM outbox
     WHERE user_id = $1 AND channel_seq > $2 AND channel_seq IS NOT NULL
     ORDER BY channel_seq LIMIT $3";

/// A channel's head.
pub(super) const HEAD: &str =
    "SELECT last_seq, last_event_id FROM stream_channels WHERE user_id = $1";

pub(super) fn position_on<C: Statements>(
    connection: &mut C,
    user_id: &str,
    event_id: &str,
) -> std::result::Result<Option<i64>, C::Error> {
    connection.query_first(POSITION, &[&event_id, &user_id], |row| row.get::<i64>(0))
}

pub(super) fn after_on<C: Statements>(
    connection: &mut C,
    user_id: &str,
    seq: i64,
    limit: usize,
) -> std::result::Result<Vec<ChannelEvent>, C::Error> {
    let limit = limit as i64;
    connection.query(AFTER, &[&user_id, &seq, &limit], |row| {
        Ok(ChannelEvent {
            seq: row.get(0)?,
            event_id: row.get(1)?,
            body: row.get(2)?,
        })
    })
}

pub(super) fn head_on<C: Statements>(
    connection: &mut C,
    user_id: &str,
) -> std::result::Result<Head, C::Error> {
    Ok(connection
        .query_first(HEAD, &[&user_id], |row| {
            Ok(Head {
                seq: row.get(0)?,
                last: row.get(1)?,
            })
        })?
        .unwrap_or_else(Head::empty))
}

/// Where `user_id`'s stream resumes after the event `event_id`: its place,
/// or none where the channel holds no such event of theirs.
pub fn position(
    connection: &mut super::Connection,
    user_id: &str,
    event_id: &str,
) -> super::Result<Option<i64>> {
    connection.engine().channel_position(user_id, event_id)
}

/// Up to `limit` events of `user_id`'s channel after place `seq`, in order.
pub fn after(
    connection: &mut super::Connection,
    user_id: &str,
    seq: i64,
    limit: usize,
) -> super::Result<Vec<ChannelEvent>> {
    connection.engine().channel_after(user_id, seq, limit)
}

/// `user_id`'s channel's head: where a new stream starts.
pub fn head(connection: &mut super::Connection, user_id: &str) -> super::Result<Head> {
    connection.engine().channel_head(user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leased(row_id: i64, user: Option<&str>, placed: Option<(i64, &str)>) -> Leased {
        Leased {
            row_id,
            event_id: format!("pa_x_{row_id}_1"),
            body: String::new(),
            attempts: 0,
            user_id: user.map(str::to_owned),
            lease_until: 0,
            created_at: None,
            channel_seq: placed.map(|(seq, _)| seq),
            prev_id: placed.map(|(_, prev)| prev.to_owned()),
        }
    }

    #[test]
    fn rows_take_their_channels_next_places_in_row_order_after_the_head() {
        let mut rows = vec![
            leased(1, Some("alice"), None),
            leased(2, Some("bob"), None),
            leased(3, Some("alice"), Some((7, "pa_x_0_1"))),
            leased(4, Some("alice"), None),
            leased(5, None, None),
            leased(6, Some(" "), None),
        ];
        assert_eq!(unplaced_users(&rows), ["alice", "bob"]);
        let heads = HashMap::from([(
            "alice".to_owned(),
            Head {
                seq: 7,
                last: "pa_x_0_1".to_owned(),
            },
        )]);
        let (places, heads) = place(&mut rows, heads);
        let placed: Vec<(i64, i64, &str)> = places
            .iter()
            .map(|place| (place.row_id, place.seq, place.prev.as_str()))
            .collect();
        assert_eq!(
            placed,
            [(1, 8, "pa_x_0_1"), (2, 1, START), (4, 9, "pa_x_1_1")]
        );
        assert_eq!(rows[2].channel_seq, Some(7), "a placed row keeps its place");
        assert_eq!(rows[3].prev_id.as_deref(), Some("pa_x_1_1"));
        assert_eq!((rows[4].channel_seq, rows[5].channel_seq), (None, None));
        assert_eq!(
            heads,
            [
                (
                    "alice".to_owned(),
                    Head {
                        seq: 9,
                        last: "pa_x_4_1".to_owned()
                    }
                ),
                (
                    "bob".to_owned(),
                    Head {
                        seq: 1,
                        last: "pa_x_2_1".to_owned()
                    }
                ),
            ]
        );
    }
}
