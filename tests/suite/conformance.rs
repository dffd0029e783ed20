//! The store's contract, run on each engine from one body: every operation
//! the daemon asks of a database (`store::engine`), through the store's own
//! functions, with what each must answer. A new engine passes these first.

use crate::common;

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{Db, Engine};
use price_alertd::alert::Alert;
use price_alertd::evaluate::{Observed, Verdict, judge, trigger_of};
use price_alertd::store::alerts::{self, AlertFilter, AlertQuery, AlertRow, NewAlert, Trigger};
use price_alertd::store::changes::{self, Move, Reading};
use price_alertd::store::cluster::{self, Finish, Fire, Me};
use price_alertd::store::outbox::{
    self, Attempt, OutboxQuery, OutboxState, Outcome, Settled, Want,
};
use price_alertd::store::quotes::{self, NewQuote};
use price_alertd::store::{self, Connection, channels, observations, runs, schema, watermarks};
use price_alertd::time::QuoteTime;

fn stamp(at: DateTime<Utc>) -> String {
    store::timestamp(at)
}

fn alert<'a>(ticker: &'a str, condition: &'a str, target: f64) -> NewAlert<'a> {
    NewAlert {
        ticker,
        condition,
        target_price: target,
        reference_price: None,
        upper_price: None,
        note: Some("a note"),
        user_id: Some("u1"),
        expires_at: None,
        cooldown: None,
        max_triggers: None,
        rearm_band: None,
    }
}

/// A migrated database of `engine` (kept while it is held), a connection
/// to it, and the time by its clock.
fn opened(engine: Engine) -> (Db, Connection, DateTime<Utc>) {
    let db = Db::on(engine);
    let mut connection = db.pool(2).get().unwrap();
    let now = store::clock::now(&mut connection).unwrap();
    (db, connection, now)
}

/// The trigger of `ticker`'s enabled alert `id` at `price`.
fn trigger(
    connection: &mut Connection,
    ticker: &str,
    id: i64,
    price: f64,
    now: DateTime<Utc>,
) -> Trigger {
    let row = alerts::enabled_for_ticker(connection, ticker)
        .unwrap()
        .into_iter()
        .find(|row| row.id == id)
        .expect("the alert is enabled");
    let alert = Alert::parse(&row.written()).expect("a valid alert");
    let quoted = QuoteTime::parse(stamp(now)).expect("a time");
    trigger_of(row, &alert, price, quoted, now)
}

/// The ids a read of alerts gave, in order.
#[derive(Default)]
struct Ids(Vec<i64>);

impl Reading for Ids {
    fn row(&mut self, _: usize, alert: AlertRow) -> bool {
        self.0.push(alert.id);
        true
    }

    fn at_rest(&mut self) -> bool {
        true
    }
}

on_every_engine! {
    /// Quotes and alerts: stored, listed, claimed exactly once, re-armed,
    /// snoozed and woken, given a cooldown, disabled and expired.
    fn alerts_and_quotes_answer_alike(engine: Engine) {
        let (_db, mut c, now) = opened(engine);
        assert!(
            (store::clock::now_ms(&mut c).unwrap() - now.timestamp_millis()).abs() < 5_000,
            "the database's clock"
        );
        assert!(!store::installation_id(&mut c).unwrap().is_empty());

        quotes::upsert(
            &mut c,
            &[NewQuote { ticker: "AAPL".into(), price: 150.0, updated_at: stamp(now) }],
        )
        .unwrap();
        assert_eq!(quotes::get(&mut c, "AAPL").unwrap().unwrap().price, Some(150.0));
        assert_eq!(quotes::get(&mut c, "MSFT").unwrap(), None);
        assert_eq!(quotes::list(&mut c).unwrap().len(), 1);

        let id = alerts::add(&mut c, &alert("AAPL", "above", 100.0), &stamp(now)).unwrap();
        let enabled_aapl = AlertQuery {
            filter: AlertFilter::Enabled,
            ticker: Some("AAPL"),
            ..AlertQuery::all(10)
        };
        let listed = alerts::list(&mut c, &enabled_aapl).unwrap();
        assert_eq!(listed.iter().map(|entry| entry.id).collect::<Vec<_>>(), [id]);
        assert!(listed[0].change_seq.is_some());
        assert_eq!(alerts::get(&mut c, id).unwrap().map(|entry| entry.id), Some(id));
        assert!(alerts::get(&mut c, id + 1000).unwrap().is_none());
        let other = alerts::add(&mut c, &alert("AAPL", "below", 1.0), &stamp(now)).unwrap();
        let page = alerts::list(&mut c, &AlertQuery { limit: 1, ..enabled_aapl }).unwrap();
        assert_eq!(page.iter().map(|entry| entry.id).collect::<Vec<_>>(), [other]);
        assert_eq!(alerts::count_below(&mut c, &enabled_aapl, other).unwrap(), 1);
        let nobody = AlertQuery { user: Some("nobody"), ..enabled_aapl };
        assert!(alerts::list(&mut c, &nobody).unwrap().is_empty());
        assert!(alerts::disable(&mut c, other).unwrap());
        let disabled = AlertQuery { filter: AlertFilter::Disabled, ..AlertQuery::all(10) };
        assert_eq!(alerts::list(&mut c, &disabled).unwrap()[0].id, other);
        assert!(watermarks::latest_quote_change(&mut c, "AAPL").unwrap().is_some());
        assert_eq!(watermarks::latest_quote_change(&mut c, "MSFT").unwrap(), None);
        assert_eq!(alerts::tickers_to_fetch(&mut c, now).unwrap(), ["AAPL"]);
        assert!(alerts::enabled_without_ticker(&mut c, 10).unwrap().is_empty());

        // Claimed once: the same trigger again claims nothing.
        let fired = trigger(&mut c, "AAPL", id, 150.0, now);
        let claimed = alerts::claim(&mut c, std::slice::from_ref(&fired), now).unwrap();
        assert_eq!(claimed.ids, HashSet::from([id]));
        assert!(claimed.locked.is_empty());
        let again = alerts::claim(&mut c, &[fired], now).unwrap();
        assert!(again.ids.is_empty(), "claimed twice");
        assert_eq!(outbox::backlog(&mut c).unwrap(), (1, 0));
        assert!(outbox::oldest_pending(&mut c).unwrap().is_some());
        let triggered = AlertQuery { filter: AlertFilter::Triggered, ..AlertQuery::all(10) };
        let triggered = alerts::list(&mut c, &triggered).unwrap();
        assert_eq!(triggered[0].triggered_price, Some(150.0));
        let events = outbox::alert_events(&mut c, id, 10).unwrap();
        assert_eq!((events.len(), events[0].alert_id), (1, id));

        // Re-armed once; snoozed, then woken when its time has come.
        assert!(alerts::rearm(&mut c, id).unwrap());
        assert!(!alerts::rearm(&mut c, id).unwrap(), "re-armed an armed alert");
        let until = now + chrono::Duration::minutes(5);
        assert!(alerts::snooze(&mut c, id, Some(&stamp(until))).unwrap());
        assert_eq!(alerts::wake_snoozed(&mut c, now).unwrap(), 0);
        let woken_at = until + chrono::Duration::minutes(1);
        assert_eq!(alerts::wake_snoozed(&mut c, woken_at).unwrap(), 1);
        assert!(alerts::set_cooldown(&mut c, id, Some("15m")).unwrap());
        assert!(!alerts::set_cooldown(&mut c, id + 1000, Some("15m")).unwrap());
        assert!(alerts::disable(&mut c, id).unwrap());
        assert!(!alerts::disable(&mut c, id).unwrap(), "disabled twice");

        // An alert whose time has passed expires, without an event.
        let mut expiring = alert("MSFT", "below", 1.0);
        let past = stamp(now - chrono::Duration::minutes(1));
        expiring.expires_at = Some(&past);
        alerts::add(&mut c, &expiring, &stamp(now)).unwrap();
        assert_eq!(alerts::expire_due(&mut c, now).unwrap(), 1);
        assert_eq!(outbox::backlog(&mut c).unwrap(), (1, 0));

        // A repeating alert waits out its cooldown, then is re-armed.
        let mut repeating = alert("AAPL", "above", 100.0);
        repeating.cooldown = Some("1m");
        let id = alerts::add(&mut c, &repeating, &stamp(now)).unwrap();
        let fired = trigger(&mut c, "AAPL", id, 150.0, now);
        let before = alerts::due_signs(&mut c).unwrap();
        assert_eq!(before.signs.1, None, "no cooldown under way");
        assert_eq!(alerts::claim(&mut c, &[fired], now).unwrap().ids.len(), 1);
        // What came due reads with the clock: the cooldown's end shows.
        let cooling = alerts::due_signs(&mut c).unwrap();
        assert!((cooling.now_ms - now.timestamp_millis()).abs() < 5_000, "{cooling:?}");
        let minute = chrono::Duration::minutes(1).num_milliseconds();
        assert!(
            cooling.signs.1.is_some_and(|end| (end - now.timestamp_millis() - minute).abs() < 5_000),
            "{cooling:?}"
        );
        assert_eq!(alerts::rearm_cooled_down(&mut c, now).unwrap(), 0);
        let later = now + chrono::Duration::minutes(2);
        assert_eq!(alerts::rearm_cooled_down(&mut c, later).unwrap(), 1);
        let rearmed = alerts::due_signs(&mut c).unwrap();
        assert!(rearmed.signs.0 > cooling.signs.0, "a re-arm takes a change number");
        assert_eq!(rearmed.signs.1, None);
        assert!(alerts::waiting_tickers(&mut c).unwrap().is_empty());
        let returned = alerts::come_back(&mut c, &[("AAPL", 90.0)], later).unwrap();
        assert_eq!(returned.came_back, 0);

        let audit = schema::audit(&mut c).unwrap();
        assert!(audit.missing.is_empty() && audit.unrepairable.is_empty(), "{audit:?}");
        assert!(schema::repair(&mut c).unwrap().recreated.is_empty());
    }
}

on_every_engine! {
    /// The tickers the feed must keep fresh (what `/metrics` reads each
    /// scrape): each ticker with an enabled alert once, with its quote's
    /// time or none; not a ticker whose alerts are all disabled, however
    /// many it has, wherever it sorts among the others. (In no promised
    /// order: sorted here.)
    fn the_tickers_with_enabled_alerts_answer_alike(engine: Engine) {
        let (_db, mut c, now) = opened(engine);
        assert!(quotes::alerted(&mut c).unwrap().is_empty());
        let mut add = |ticker, enabled: bool| {
            let id = alerts::add(&mut c, &alert(ticker, "above", 1.0), &stamp(now)).unwrap();
            if !enabled {
                assert!(alerts::disable(&mut c, id).unwrap());
            }
        };
        for (ticker, enabled) in [
            ("A", true), ("B", false), ("B", false), ("B", true), ("B", false),
            ("C", false), ("D", true), ("D", true), ("E", false), ("E", false),
        ] {
            add(ticker, enabled);
        }
        let quoted = ["A", "B", "C", "E"];
        let new_quotes: Vec<NewQuote> = quoted
            .iter()
            .enumerate()
            .map(|(n, ticker)| NewQuote {
                ticker: (*ticker).into(),
                price: 1.0,
                updated_at: format!("2026-12-0{}T00:00:00Z", n + 1),
            })
            .collect();
        quotes::upsert(&mut c, &new_quotes).unwrap();
        let mut alerted = quotes::alerted(&mut c).unwrap();
        alerted.sort();
        assert_eq!(
            alerted,
            [
                ("A".to_owned(), Some("2026-12-01T00:00:00Z".to_owned())),
                ("B".to_owned(), Some("2026-12-02T00:00:00Z".to_owned())),
                ("D".to_owned(), None),
            ]
        );
    }
}

on_every_engine! {
    /// Users' channels: each leased event takes its user's next place, after
    /// the one before it, across leases; a stream reads a channel after a
    /// place, and finds no place for an id that is not its user's.
    fn users_channels_answer_alike(engine: Engine) {
        let (_db, mut c, now) = opened(engine);
        let triggers: Vec<Trigger> = (0..3)
            .map(|n| {
                let ticker = format!("T{n}");
                let id = alerts::add(&mut c, &alert(&ticker, "above", 1.0), &stamp(now)).unwrap();
                trigger(&mut c, &ticker, id, 2.0, now)
            })
            .collect();
        assert_eq!(alerts::claim(&mut c, &triggers, now).unwrap().ids.len(), 3);
        assert_eq!(channels::head(&mut c, "u1").unwrap().last, channels::START);
        let want = |limit| {
            Some(Want { lease: Duration::from_secs(30), limit, spread: None, place: true })
        };
        let mut leased = outbox::exchange(&mut c, "one", &[], want(2)).unwrap().leased;
        leased.extend(outbox::exchange(&mut c, "one", &[], want(2)).unwrap().leased);
        let ids: Vec<String> = leased.iter().map(|event| event.event_id.clone()).collect();
        let places: Vec<(Option<i64>, Option<&str>)> = leased
            .iter()
            .map(|event| (event.channel_seq, event.prev_id.as_deref()))
            .collect();
        assert_eq!(
            places,
            [
                (Some(1), Some(channels::START)),
                (Some(2), Some(ids[0].as_str())),
                (Some(3), Some(ids[1].as_str())),
            ]
        );
        let head = channels::head(&mut c, "u1").unwrap();
        assert_eq!((head.seq, head.last.as_str()), (3, ids[2].as_str()));
        assert_eq!(channels::position(&mut c, "u1", &ids[1]).unwrap(), Some(2));
        assert_eq!(channels::position(&mut c, "u2", &ids[1]).unwrap(), None, "another user's");
        assert_eq!(channels::position(&mut c, "u1", "pa_nothing").unwrap(), None);
        let after: Vec<(i64, String)> = channels::after(&mut c, "u1", 1, 10)
            .unwrap()
            .into_iter()
            .map(|event| (event.seq, event.event_id))
            .collect();
        assert_eq!(after, [(2, ids[1].clone()), (3, ids[2].clone())]);
        assert_eq!(channels::after(&mut c, "u1", 1, 1).unwrap().len(), 1);
        assert!(channels::after(&mut c, "u1", 3, 10).unwrap().is_empty());
    }
}

on_every_engine! {
    /// A claim offered its tickers' observed prices records them in its own
    /// transaction where the engine takes them (SQLite, whose claims never
    /// find a row locked), and says so; each only over an older quote's,
    /// as a tick's end would. PostgreSQL leaves them to the tick's end.
    fn a_claim_records_the_observed_prices_it_takes(engine: Engine) {
        let (_db, mut c, now) = opened(engine);
        let earlier = now - chrono::TimeDelta::seconds(10);
        let later = now + chrono::TimeDelta::seconds(10);
        let seen = |ticker: &str, price: f64, at: DateTime<Utc>| observations::Observation {
            ticker: ticker.into(),
            price,
            quote_time: stamp(at),
        };
        observations::finish_tick(&mut c, &[seen("OLD", 1.0, earlier), seen("NEW", 1.0, later)], None, now)
            .unwrap();
        let triggers: Vec<Trigger> = ["OLD", "NEW"]
            .into_iter()
            .map(|ticker| {
                let id = alerts::add(&mut c, &alert(ticker, "above", 1.5), &stamp(now)).unwrap();
                trigger(&mut c, ticker, id, 2.0, now)
            })
            .collect();
        let offered = [seen("OLD", 2.0, now), seen("NEW", 2.0, now), seen("NONE", 2.0, now)];
        let claimed = alerts::claim_observing(&mut c, &triggers, now, None, &offered).unwrap();
        assert_eq!(claimed.ids.len(), 2);
        assert_eq!(claimed.observed, engine == Engine::Sqlite, "which engine records them");
        let recorded = |c: &mut Connection, ticker: &str| observations::get(c, ticker).unwrap();
        if claimed.observed {
            assert_eq!(recorded(&mut c, "OLD"), Some(2.0));
            assert_eq!(recorded(&mut c, "NONE"), Some(2.0));
        } else {
            assert_eq!(recorded(&mut c, "OLD"), Some(1.0));
            assert_eq!(recorded(&mut c, "NONE"), None);
        }
        assert_eq!(recorded(&mut c, "NEW"), Some(1.0), "never over a newer quote's");

        // Offered nothing, a claim records nothing, and says so.
        let id = alerts::add(&mut c, &alert("OLD", "above", 1.5), &stamp(now)).unwrap();
        let again = trigger(&mut c, "OLD", id, 3.0, now);
        let claimed = alerts::claim_observing(&mut c, &[again], later, None, &[]).unwrap();
        assert_eq!((claimed.ids.len(), claimed.observed), (1, false));
    }
}

on_every_engine! {
    /// A claim that leases its events (the daemon's hand-over to its
    /// deliverer): the rows its lease takes, a share of each user up to its
    /// limit, in queue order, come back leased to its owner and placed on
    /// their channels, as an exchange would have leased them; no other
    /// owner leases them, and their outcomes are recorded under that lease.
    fn a_claim_leases_its_events_alike(engine: Engine) {
        let (_db, mut c, now) = opened(engine);
        let triggers: Vec<Trigger> = ["u1", "u1", "u1", "u2"]
            .into_iter()
            .enumerate()
            .map(|(n, user)| {
                let ticker = format!("T{n}");
                let new = NewAlert { user_id: Some(user), ..alert(&ticker, "above", 1.0) };
                let id = alerts::add(&mut c, &new, &stamp(now)).unwrap();
                trigger(&mut c, &ticker, id, 2.0, now)
            })
            .collect();
        let lease = outbox::ClaimLease {
            owner: "one".into(),
            want: Want {
                lease: Duration::from_secs(30),
                limit: 3,
                spread: Some(outbox::Spread { per_user: 2, full: Vec::new() }),
                place: true,
            },
        };
        let claimed = alerts::claim_and_lease(&mut c, &triggers, now, Some(&lease)).unwrap();
        assert_eq!(claimed.ids.len(), 4);
        let leased = claimed.leased.leased;
        let users: Vec<&str> =
            leased.iter().map(|event| event.user_id.as_deref().unwrap()).collect();
        assert_eq!(users, ["u1", "u1", "u2"]);
        assert!(leased.windows(2).all(|pair| pair[0].row_id < pair[1].row_id));
        let lease_ms = claimed.leased.now_ms;
        assert!((lease_ms - now.timestamp_millis()).abs() < 60_000, "{lease_ms} vs {now}");
        for event in &leased {
            assert_eq!(event.lease_until, lease_ms + 30_000);
            assert_eq!(event.attempts, 0);
            let shown = outbox::show(&mut c, &event.event_id).unwrap().unwrap();
            assert_eq!(shown.body, event.body);
            assert_eq!(event.created_at.map(|at| at.timestamp()), Some(now.timestamp()));
        }
        let places: Vec<Option<i64>> = leased.iter().map(|event| event.channel_seq).collect();
        assert_eq!(places, [Some(1), Some(2), Some(1)]);
        assert_eq!(leased[1].prev_id.as_deref(), Some(leased[0].event_id.as_str()));

        // Another owner leases only the row the claim left.
        let want = Some(Want { limit: 10, spread: None, place: false, ..lease.want.clone() });
        let theirs = outbox::exchange(&mut c, "two", &[], want).unwrap().leased;
        assert_eq!(theirs.len(), 1);
        assert!(leased.iter().all(|event| event.row_id != theirs[0].row_id));

        // Delivered under the claim's lease, by its owner.
        let delivered = Settled {
            row_id: leased[0].row_id,
            lease_until: leased[0].lease_until,
            outcome: Outcome::Delivered,
            attempt: None,
        };
        outbox::exchange(&mut c, "two", std::slice::from_ref(&delivered), None).unwrap();
        assert_eq!(outbox::backlog(&mut c).unwrap(), (4, 0), "recorded by another owner");
        outbox::exchange(&mut c, "one", &[delivered], None).unwrap();
        assert_eq!(outbox::backlog(&mut c).unwrap(), (3, 0));
    }
}

on_every_engine! {
    /// The outbox: leased to one owner at a time, its outcomes recorded
    /// under the lease, dead letters replayed, delivered events purged.
    fn the_outbox_answers_alike(engine: Engine) {
        let (_db, mut c, now) = opened(engine);
        let triggers: Vec<Trigger> = (0..3)
            .map(|n| {
                let ticker = format!("T{n}");
                let id = alerts::add(&mut c, &alert(&ticker, "above", 1.0), &stamp(now)).unwrap();
                trigger(&mut c, &ticker, id, 2.0, now)
            })
            .collect();
        assert_eq!(alerts::claim(&mut c, &triggers, now).unwrap().ids.len(), 3);
        assert_eq!(outbox::next_due(&mut c).unwrap(), Some(Duration::ZERO));

        let want = || {
            Some(Want { lease: Duration::from_secs(30), limit: 10, spread: None, place: false })
        };
        let leased = outbox::exchange(&mut c, "one", &[], want()).unwrap().leased;
        assert_eq!(leased.len(), 3);
        assert!(leased.iter().all(|event| event.user_id.as_deref() == Some("u1")));
        assert!(
            outbox::exchange(&mut c, "two", &[], want()).unwrap().leased.is_empty(),
            "leased to two owners"
        );
        let settled: Vec<Settled> = leased
            .iter()
            .zip([
                Outcome::Delivered,
                Outcome::Dead { error: "410 Gone".into() },
                Outcome::Retry { after: Duration::from_secs(60), error: "503".into() },
            ])
            .map(|(event, outcome)| Settled {
                row_id: event.row_id,
                lease_until: event.lease_until,
                attempt: Some(Attempt {
                    number: event.attempts + 1,
                    at_ms: now.timestamp_millis(),
                    at: String::new(),
                    url: "http://relay/events/u1".into(),
                    status: match &outcome {
                        Outcome::Delivered => Some(204),
                        _ => Some(503),
                    },
                    error: match &outcome {
                        Outcome::Delivered => None,
                        _ => Some("the webhook answered 503".into()),
                    },
                    duration_ms: 12,
                }),
                outcome,
            })
            .collect();
        // Under another owner's name, no outcome is recorded; the attempts
        // are (they were sent), once, whoever records them.
        outbox::exchange(&mut c, "two", &settled, None).unwrap();
        assert_eq!(outbox::backlog(&mut c).unwrap(), (3, 0));
        let shown = outbox::show(&mut c, &leased[0].event_id).unwrap().unwrap();
        assert_eq!(shown.attempts_made.len(), 1, "{shown:?}");
        outbox::exchange(&mut c, "one", &settled, None).unwrap();
        assert_eq!(outbox::backlog(&mut c).unwrap(), (1, 1));
        let due = outbox::next_due(&mut c).unwrap().unwrap();
        assert!(due > Duration::from_secs(50), "{due:?}");
        let dead = outbox::list(&mut c, &OutboxQuery::of(OutboxState::Dead, 10)).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].last_error.as_deref(), Some("410 Gone"));
        let undelivered = OutboxQuery::of(OutboxState::Undelivered, 10);
        assert_eq!(outbox::list(&mut c, &undelivered).unwrap().len(), 2);
        // Each attempt recorded with the outcome, in the same exchange.
        let shown = outbox::show(&mut c, &leased[0].event_id).unwrap().unwrap();
        assert_eq!(shown.entry.state, "delivered");
        assert!(shown.body.contains(&leased[0].event_id), "{}", shown.body);
        assert_eq!(shown.attempts_made.len(), 1);
        let attempt = &shown.attempts_made[0];
        assert_eq!(
            (attempt.url.as_str(), attempt.status, attempt.error.as_deref(), attempt.duration_ms),
            ("http://relay/events/u1", Some(204), None, 12)
        );
        assert_eq!(attempt.at, stamp(now));
        assert!(outbox::show(&mut c, "pa_nothing").unwrap().is_none());

        // The filters: by state, user, alert and time.
        let all = OutboxQuery::of(OutboxState::All, 10);
        assert_eq!(outbox::count(&mut c, &all).unwrap(), 3);
        let delivered = OutboxQuery::of(OutboxState::Delivered, 10);
        assert_eq!(outbox::list(&mut c, &delivered).unwrap()[0].event_id, leased[0].event_id);
        let nobody = OutboxQuery { user: Some("u2"), ..all };
        assert_eq!(outbox::count(&mut c, &nobody).unwrap(), 0);
        let one_alert = OutboxQuery { alert: Some(shown.entry.alert_id), ..all };
        assert_eq!(outbox::count(&mut c, &one_alert).unwrap(), 1);
        let (before, after) = (stamp(now - chrono::Duration::minutes(1)), stamp(now + chrono::Duration::minutes(1)));
        let within = OutboxQuery { since: Some(&before), until: Some(&after), ..all };
        assert_eq!(outbox::count(&mut c, &within).unwrap(), 3);
        let later = OutboxQuery { since: Some(&after), ..all };
        assert_eq!(outbox::count(&mut c, &later).unwrap(), 0);
        assert_eq!(outbox::list(&mut c, &OutboxQuery { limit: 1, ..all }).unwrap().len(), 1);

        let dead_ones = OutboxQuery::of(OutboxState::Dead, 0);
        assert_eq!(outbox::replay_matching(&mut c, &dead_ones).unwrap(), 1);
        assert_eq!(outbox::backlog(&mut c).unwrap(), (2, 0));
        let pending = outbox::list(&mut c, &undelivered).unwrap();
        let ids: Vec<String> = pending.iter().map(|entry| entry.event_id.clone()).collect();
        assert_eq!(outbox::replay(&mut c, &ids).unwrap().len(), 2);
        // However often an event is tried, its last attempts are kept, no more.
        for _ in 0..(outbox::ATTEMPTS_KEPT + 2) {
            let leased = outbox::exchange(&mut c, "one", &[], want()).unwrap().leased;
            let retried: Vec<Settled> = leased
                .iter()
                .map(|event| Settled {
                    row_id: event.row_id,
                    lease_until: event.lease_until,
                    outcome: Outcome::Retry { after: Duration::ZERO, error: "503".into() },
                    attempt: Some(Attempt {
                        number: event.attempts + 1,
                        at_ms: now.timestamp_millis() + i64::from(event.attempts),
                        at: String::new(),
                        url: format!("http://relay/{}", event.attempts + 1),
                        status: Some(503),
                        error: Some("503".into()),
                        duration_ms: 1,
                    }),
                })
                .collect();
            assert_eq!(retried.len(), 2);
            outbox::exchange(&mut c, "one", &retried, None).unwrap();
        }
        let tried = outbox::show(&mut c, &leased[1].event_id).unwrap().unwrap();
        assert_eq!(tried.attempts_made.len(), outbox::ATTEMPTS_KEPT as usize);
        assert_eq!(
            tried.attempts_made.last().unwrap().url,
            format!("http://relay/{}", outbox::ATTEMPTS_KEPT + 2)
        );
        let far = stamp(now + chrono::Duration::days(1));
        assert_eq!(outbox::purge_delivered(&mut c, &far).unwrap(), 1);
        assert_eq!(outbox::backlog(&mut c).unwrap(), (2, 0));
        // Its attempts went with it; the others' stay.
        assert!(outbox::show(&mut c, &leased[0].event_id).unwrap().is_none());
        let kept = outbox::show(&mut c, &leased[1].event_id).unwrap().unwrap();
        assert_eq!(kept.attempts_made.len(), outbox::ATTEMPTS_KEPT as usize);
    }
}

on_every_engine! {
    /// Members: fire times taken by one, finished once; heartbeats; the
    /// reacting lease held by one; a member that leaves gives it back.
    fn members_answer_alike(engine: Engine) {
        let (_db, mut c, now) = opened(engine);
        let member = |name: &str| Me {
            member: name.to_owned(),
            host: "host".into(),
            pid: 1,
            version: "0".into(),
            started_at: stamp(now),
        };
        let (one, two) = (member("one"), member("two"));
        for me in [&one, &two] {
            assert!(cluster::heartbeat(&mut c, me, 30_000).unwrap().is_empty());
        }
        let names: HashSet<String> = cluster::members(&mut c)
            .unwrap()
            .into_iter()
            .map(|member| member.member)
            .collect();
        assert_eq!(names, HashSet::from(["one".to_owned(), "two".to_owned()]));

        let fire = Fire { job: "evaluate".into(), at_ms: now.timestamp_millis() };
        assert_eq!(cluster::take_fire(&mut c, &fire, "one", 30_000).unwrap(), Some(1));
        assert_eq!(cluster::take_fire(&mut c, &fire, "two", 30_000).unwrap(), None);
        cluster::finish_fire(&mut c, &fire, "one", Finish::Done).unwrap();
        assert_eq!(cluster::take_fire(&mut c, &fire, "two", 30_000).unwrap(), None);

        let jobs = ["react".to_owned()];
        assert_eq!(cluster::take_reacting(&mut c, &jobs, &[], "one", 30_000).unwrap(), jobs);
        assert!(cluster::take_reacting(&mut c, &jobs, &[], "two", 30_000).unwrap().is_empty());
        assert_eq!(
            cluster::reactors(&mut c).unwrap(),
            [("react".to_owned(), "one".to_owned())]
        );
        cluster::leave(&mut c, "one").unwrap();
        assert_eq!(cluster::take_reacting(&mut c, &jobs, &[], "two", 30_000).unwrap(), jobs);

        let run = runs::Run {
            job: "evaluate".into(),
            started_at: stamp(now),
            duration_ms: 12,
            result: "ok".into(),
            detail: "triggered=0".into(),
            last_success_at: Some(stamp(now)),
            member: Some("two".into()),
        };
        runs::record(&mut c, &run).unwrap();
        let recorded = runs::list(&mut c).unwrap();
        assert_eq!(recorded.len(), 1);
        assert_eq!(recorded[0].member.as_deref(), Some("two"));
    }
}

on_every_engine! {
    /// What a tick reads: the horizon, changed tickers and quotes, each
    /// ticker's state, the alerts a move can reach, and a tick's end.
    fn the_reads_of_a_tick_answer_alike(engine: Engine) {
        let (_db, mut c, now) = opened(engine);
        let start = changes::horizon(&mut c).unwrap();
        assert!(start.closed <= start.visible);
        let above = alerts::add(&mut c, &alert("AAPL", "above", 100.0), &stamp(now)).unwrap();
        let below = alerts::add(&mut c, &alert("AAPL", "below", 50.0), &stamp(now)).unwrap();
        quotes::upsert(
            &mut c,
            &[
                NewQuote { ticker: "AAPL".into(), price: 120.0, updated_at: stamp(now) },
                NewQuote { ticker: "MSFT".into(), price: 10.0, updated_at: stamp(now) },
            ],
        )
        .unwrap();
        let horizon = changes::horizon(&mut c).unwrap();
        assert!(horizon.visible > start.visible);
        let until = horizon.visible;

        let changed = changes::changed_tickers(&mut c, -1, until, None, 10).unwrap();
        let tickers: Vec<&str> = changed.iter().map(|ticker| ticker.ticker.as_str()).collect();
        assert_eq!(tickers, ["AAPL", "MSFT"]);
        assert!(changed.iter().all(|ticker| ticker.moved));
        assert_eq!(changed[0].changed_alerts, 2);
        let after = changes::changed_tickers(&mut c, -1, until, Some("AAPL"), 10).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(changes::changed_alert_count(&mut c, -1, until).unwrap(), 2);
        assert_eq!(changes::first_changed_quotes(&mut c, -1, until, 1).unwrap(), ["AAPL"]);

        let mut read = Ids::default();
        changes::each_changed_alert(&mut c, -1, until, &mut read).unwrap();
        assert_eq!(read.0, [above, below]);
        let mut read = Ids::default();
        changes::each_changed_alert_of(&mut c, &["AAPL"], -1, until, &mut read).unwrap();
        assert_eq!(read.0.len(), 2);

        let all = changes::Ask { alerts: true, quote: true };
        let states = changes::ticker_states(&mut c, &[("AAPL", all), ("NONE", all)]).unwrap();
        assert_eq!(states[0].quote.as_ref().map(|(price, _)| *price), Some(Some(120.0)));
        assert!(states[0].has_alerts && states[0].previous.is_none());
        assert!(states[1].quote.is_none() && !states[1].has_alerts);
        // A quote the log gave with its write (SQLite's does) is the one
        // stored; a state asked without its quote has none.
        if let Some(logged) = changed[0].logged.as_ref().and_then(|logged| logged.quote.as_ref()) {
            assert_eq!(Some(logged), states[0].quote.as_ref());
        }
        let unquoted = changes::Ask { alerts: true, quote: false };
        let states_unquoted = changes::ticker_states(&mut c, &[("AAPL", unquoted)]).unwrap();
        assert!(states_unquoted[0].quote.is_none() && states_unquoted[0].has_alerts);

        // A move to 120 reaches the alert above 100, not the one below 50.
        let mut reached = Ids::default();
        let moved = Move { price: 120.0, previous: Some(90.0) };
        changes::each_reachable_alert_of(&mut c, &[("AAPL", moved)], until, &mut reached)
            .unwrap();
        assert_eq!(reached.0, [above]);

        observations::finish_tick(
            &mut c,
            &[observations::Observation {
                ticker: "AAPL".into(),
                price: 120.0,
                quote_time: stamp(now),
            }],
            Some(&watermarks::Advance::only("job", until)),
            now,
        )
        .unwrap();
        assert_eq!(observations::get(&mut c, "AAPL").unwrap(), Some(120.0));
        assert_eq!(watermarks::get(&mut c, "job").unwrap(), Some(until));
        assert_eq!(watermarks::get(&mut c, "other").unwrap(), None);
        let states = changes::ticker_states(&mut c, &[("AAPL", changes::Ask::QUOTE)]).unwrap();
        assert_eq!(states[0].previous, Some(120.0));
        // The log is pruned up to the only job's watermark, once, when no
        // transaction that began before it is open (on PostgreSQL, one in
        // any database of the shared server holds the horizon back).
        common::wait_until("the transactions older than the watermark to end", || {
            changes::horizon(&mut c).unwrap().closed >= until
        });
        assert!(changes::prune_change_log(&mut c, now).unwrap() > 0);
        assert_eq!(changes::prune_change_log(&mut c, now).unwrap(), 0);
        store::read_transaction(&mut c, |c| Ok(changes::horizon(c)?)).unwrap();
        store::checkpoint(&mut c).unwrap();
    }
}

on_every_engine! {
    /// The level index's ranges reach every row `judge` fires: over a grid
    /// of conditions, targets (numbers on both sides, infinities, and on
    /// SQLite, whose columns take anything, text), references, upper levels
    /// and expiries, and moves up, down and from nowhere, every row that
    /// fires is read, and many that cannot are not.
    fn the_level_ranges_reach_every_row_judge_fires(engine: Engine) {
        let db = Db::empty(engine);
        let (conditions, targets, references, uppers): (Vec<&str>, Vec<&str>, Vec<&str>, Vec<&str>) =
            match engine {
                Engine::Sqlite => {
                    // The application's table, which may allow a NULL condition.
                    db.script(
                        "CREATE TABLE price_alerts (id INTEGER PRIMARY KEY, ticker TEXT, condition TEXT,
                             target_price REAL, reference_price REAL, enabled INTEGER NOT NULL DEFAULT 1,
                             triggered_at TEXT, triggered_price REAL, created_at TEXT NOT NULL,
                             user_id TEXT, note TEXT)",
                    );
                    (
                        vec!["'sideways'", "''", "NULL"],
                        vec!["'lots'", "9e999", "-9e999"],
                        vec!["'x'"],
                        vec!["'x'"],
                    )
                }
                Engine::Postgresql => (
                    vec!["'sideways'", "''"],
                    vec!["'Infinity'", "'-Infinity'"],
                    vec![],
                    vec![],
                ),
            };
        let pool = db.pool(2);
        let mut c = pool.get().unwrap();
        let now = store::clock::now(&mut c).unwrap();
        let names = price_alertd::condition::Condition::ALL.map(|(_, name)| format!("'{name}'"));
        let conditions: Vec<&str> = names.iter().map(String::as_str).chain(conditions).collect();
        let targets: Vec<&str> = [
            "50.0", "95", "99.99", "100.0", "100", "100.01", "105", "150.0", "0", "-5", "5",
        ]
        .into_iter()
        .chain(targets)
        .collect();
        let references: Vec<&str> =
            ["NULL", "100.0", "95.238095238095", "105"].into_iter().chain(references).collect();
        // A channel's upper level, or none (the others have none).
        let uppers: Vec<&str> = ["NULL", "100", "105", "97"].into_iter().chain(uppers).collect();
        let expiries = [
            "NULL".to_owned(),
            format!("'{}'", stamp(now - chrono::Duration::hours(1))),
            format!("'{}'", stamp(now + chrono::Duration::hours(1))),
            "'soon'".to_owned(),
        ];
        for condition in &conditions {
            let mut rows = Vec::new();
            for target in &targets {
                for expiry in &expiries {
                    for reference in &references {
                        for upper in &uppers {
                            rows.push(format!(
                                "('T', {condition}, {target}, {reference}, {upper}, {expiry}, 'x')"
                            ));
                        }
                    }
                }
            }
            db.script(&format!(
                "INSERT INTO price_alerts
                     (ticker, condition, target_price, reference_price, upper_price, expires_at, created_at)
                 VALUES {}",
                rows.join(", ")
            ));
        }
        let all = alerts::enabled_for_ticker(&mut c, "T").unwrap();
        assert_eq!(
            all.len(),
            conditions.len() * targets.len() * expiries.len() * references.len() * uppers.len()
        );
        for previous in [Some(90.0), Some(110.0), Some(100.0), None] {
            let observed = Observed { price: 100.0, previous };
            let moved = Move { price: observed.price, previous };
            let mut reached = Ids::default();
            changes::each_reachable_alert_of(&mut c, &[("T", moved)], i64::MAX, &mut reached)
                .unwrap();
            let reached: HashSet<i64> = reached.0.into_iter().collect();
            let mut fired = 0;
            for alert in &all {
                if judge(alert, observed, now) == Verdict::Fire {
                    fired += 1;
                    assert!(
                        reached.contains(&alert.id),
                        "not reached: {alert:?} after {previous:?}"
                    );
                }
            }
            assert!(fired > 0);
            assert!(
                reached.len() < all.len() / 2,
                "the ranges read {} of {} rows: they narrow nothing",
                reached.len(),
                all.len()
            );
        }
    }
}

on_every_engine! {
    /// A ticker's nearest levels around a price are those of its enabled
    /// alerts, over every condition and every channel's upper level (not a
    /// disabled alert's, nor another ticker's); and where a move to the
    /// price read no alert, no move between two prices strictly between
    /// them reads one, while a move past them may.
    fn the_nearest_levels_bound_what_a_move_can_reach(engine: Engine) {
        let (db, mut c, now) = opened(engine);
        let now = stamp(now);
        // A level that is not a number sorts above every number (SQLite's
        // text, PostgreSQL's NaN): no move changes its side, and it is no
        // nearest level (V has only such).
        let not_a_number = match engine {
            Engine::Sqlite => "'lots'",
            Engine::Postgresql => "'NaN'",
        };
        db.script(&format!(
            "INSERT INTO price_alerts (ticker, condition, target_price, created_at)
             VALUES ('T', 'above', {not_a_number}, 'x'), ('V', 'above', {not_a_number}, 'x'),
                    ('V', 'crossing_up', {not_a_number}, 'x')"
        ));
        // Levels on both sides of 100: the nearest are 97 (exiting's upper
        // level) and 102 (entering's lower one).
        let alerts = [
            ("above", 120.0, None, None),
            ("below", 80.0, None, None),
            ("crossing_up", 104.0, None, None),
            ("crossing_down", 96.0, None, None),
            ("moving_up_pct", 10.0, Some(100.0), None),
            ("moving_down_pct", 10.0, Some(100.0), None),
            ("inside", 103.0, None, Some(115.0)),
            ("outside", 70.0, None, Some(130.0)),
            ("entering", 102.0, None, Some(108.0)),
            ("exiting", 93.0, None, Some(97.0)),
        ];
        for (condition, target, reference, upper) in alerts {
            let new = NewAlert {
                reference_price: reference,
                upper_price: upper,
                ..alert("T", condition, target)
            };
            alerts::add(&mut c, &new, &now).unwrap();
        }
        let disabled = alerts::add(&mut c, &alert("T", "above", 100.5), &now).unwrap();
        assert!(alerts::disable(&mut c, disabled).unwrap());
        alerts::add(&mut c, &alert("U", "above", 100.2), &now).unwrap();

        let nearest = changes::nearest_levels(&mut c, &[("T", 100.0), ("T", 97.0), ("V", 1.0)])
            .unwrap();
        let expected = |below, above| changes::Nearest { below, above };
        assert_eq!(nearest[0], expected(Some(97.0), Some(102.0)));
        assert_eq!(nearest[1], expected(Some(97.0), Some(97.0)), "on a level");
        assert_eq!(nearest[2], expected(None, None), "no level that is a number");

        let reads = |c: &mut Connection, previous: f64, price: f64| {
            let moved = Move { price, previous: Some(previous) };
            let mut reached = Ids::default();
            changes::each_reachable_alert_of(c, &[("T", moved)], i64::MAX, &mut reached).unwrap();
            reached.0.len()
        };
        assert_eq!(reads(&mut c, 100.0, 100.0), 0);
        let inside = [97.001, 98.0, 100.0, 101.0, 101.999];
        for previous in inside {
            for price in inside {
                assert_eq!(reads(&mut c, previous, price), 0, "{previous} → {price}");
            }
        }
        assert!(reads(&mut c, 100.0, 102.0) > 0, "onto the upper level");
        // Down onto 97 leaves no channel (exiting's is left down through
        // 93), onto 96 crosses down.
        assert_eq!(reads(&mut c, 100.0, 97.0), 0);
        assert!(reads(&mut c, 100.0, 96.0) > 0, "past the lower level");
    }
}
