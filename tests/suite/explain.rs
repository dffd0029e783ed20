//! `alerts explain` and `alerts list` say what the tick does: on each
//! engine, every condition at a quote that fires it and one that does not,
//! and every state an alert can be in, explained and then ticked; an alert
//! fires exactly when its explanation said it would.

use crate::common;

use chrono::{Duration, Utc};
use common::{Db, cli, config_text};

/// An alert of the test: its ticker, condition, levels, the price of the
/// first tick (which fires nothing) and the price it is explained and
/// judged at.
struct Case {
    ticker: &'static str,
    condition: &'static str,
    target: f64,
    second: Option<f64>,
    first_price: f64,
    price: f64,
    fires: bool,
}

const fn case(
    ticker: &'static str,
    condition: &'static str,
    target: f64,
    second: Option<f64>,
    first_price: f64,
    price: f64,
    fires: bool,
) -> Case {
    Case {
        ticker,
        condition,
        target,
        second,
        first_price,
        price,
        fires,
    }
}

/// Each condition, at a price that fires it and one that does not; the
/// first price fires neither (and is the crossings' previous price).
const CASES: [Case; 20] = [
    case("AB1", "above", 100.0, None, 90.0, 110.0, true),
    case("AB2", "above", 100.0, None, 90.0, 95.0, false),
    case("BE1", "below", 100.0, None, 110.0, 90.0, true),
    case("BE2", "below", 100.0, None, 110.0, 105.0, false),
    case("CU1", "crossing_up", 100.0, None, 90.0, 110.0, true),
    case("CU2", "crossing_up", 100.0, None, 90.0, 95.0, false),
    case("CD1", "crossing_down", 100.0, None, 110.0, 90.0, true),
    case("CD2", "crossing_down", 100.0, None, 110.0, 105.0, false),
    case(
        "MU1",
        "moving_up_pct",
        10.0,
        Some(100.0),
        100.0,
        115.0,
        true,
    ),
    case(
        "MU2",
        "moving_up_pct",
        10.0,
        Some(100.0),
        100.0,
        105.0,
        false,
    ),
    case(
        "MD1",
        "moving_down_pct",
        10.0,
        Some(100.0),
        100.0,
        85.0,
        true,
    ),
    case(
        "MD2",
        "moving_down_pct",
        10.0,
        Some(100.0),
        100.0,
        95.0,
        false,
    ),
    case("IN1", "inside", 100.0, Some(110.0), 90.0, 105.0, true),
    case("IN2", "inside", 100.0, Some(110.0), 90.0, 120.0, false),
    case("OU1", "outside", 100.0, Some(110.0), 105.0, 120.0, true),
    case("OU2", "outside", 100.0, Some(110.0), 105.0, 108.0, false),
    case("EN1", "entering", 100.0, Some(110.0), 90.0, 105.0, true),
    case("EN2", "entering", 100.0, Some(110.0), 90.0, 95.0, false),
    case("EX1", "exiting", 100.0, Some(110.0), 105.0, 120.0, true),
    case("EX2", "exiting", 100.0, Some(110.0), 105.0, 108.0, false),
];

fn insert(
    db: &Db,
    ticker: &str,
    condition: &str,
    target: f64,
    second: Option<f64>,
    extra: &str,
) -> i64 {
    let (reference, upper) = match condition {
        "moving_up_pct" | "moving_down_pct" => (second, None),
        _ => (None, second),
    };
    db.execute(
        "INSERT INTO price_alerts (ticker, condition, target_price, reference_price, upper_price, created_at, user_id)
         VALUES ($1, $2, $3, $4, $5, '2026-01-01T00:00:00Z', 'u1')",
        values![ticker, condition, target, reference, upper],
    );
    let id = db.scalar(&format!(
        "SELECT max(id) FROM price_alerts WHERE ticker = '{ticker}'"
    ));
    if !extra.is_empty() {
        db.execute(
            &format!("UPDATE price_alerts SET {extra} WHERE id = $1"),
            values![id],
        );
    }
    id
}

fn quote_at(db: &Db, ticker: &str, price: f64, at: chrono::DateTime<Utc>) {
    db.execute(
        "INSERT INTO quotes (ticker, price, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (ticker) DO UPDATE SET price = excluded.price, updated_at = excluded.updated_at",
        values![ticker, price, at.to_rfc3339()],
    );
}

fn explain(path: &std::path::Path, id: i64) -> serde_json::Value {
    serde_json::from_str(&cli(
        path,
        &["alerts", "explain", &id.to_string(), "--json"],
    ))
    .unwrap()
}

fn events(db: &Db, id: i64) -> i64 {
    db.scalar(&format!(
        "SELECT count(*) FROM outbox WHERE alert_id = {id}"
    ))
}

on_every_engine! {
    fn an_alert_fires_exactly_when_its_explanation_says_it_would(engine: Engine) {
        let db = Db::on(engine);
        let path = db.write_config(&config_text(&db, "http://127.0.0.1:9/events", "0 0 0 1 1 *"));
        let now = Utc::now();
        let in_a_day = (now + Duration::days(1)).to_rfc3339();

        let ids: Vec<i64> = CASES
            .iter()
            .map(|case| insert(&db, case.ticker, case.condition, case.target, case.second, ""))
            .collect();
        // The states, each on its own ticker; a first tick at 110 fires the
        // four that then wait, cool, are spent or triggered.
        let state = |ticker: &str, extra: &str| insert(&db, ticker, "above", 100.0, None, extra);
        let snoozed = state("SNZ", &format!("snoozed_until = '{in_a_day}'"));
        let malformed = {
            let id = state("MAL", "");
            db.execute("UPDATE price_alerts SET condition = 'sideways' WHERE id = $1", values![id]);
            id
        };
        let stale = state("STL", "");
        let no_quote = state("NOQ", "");
        let future = state("FUT", "");
        let expired = state("EXP", "expires_at = '2026-01-01T00:00:00Z'");
        let cooling = state("COO", "cooldown = '1h'");
        let waiting = state("WAI", "cooldown = '1s', rearm_band = '5'");
        let spent = state("SPE", "cooldown = '1s', max_triggers = '1'");
        let triggered = state("TRI", "");
        let disabled = state("DIS", "");
        cli(&path, &["alerts", "disable", &disabled.to_string()]);

        for case in &CASES {
            quote_at(&db, case.ticker, case.first_price, now);
        }
        for ticker in ["SNZ", "MAL", "EXP", "COO", "WAI", "SPE", "TRI", "DIS"] {
            quote_at(&db, ticker, 110.0, now);
        }
        quote_at(&db, "STL", 90.0, now);
        quote_at(&db, "FUT", 90.0, now);
        cli(&path, &["run-job", "evaluate"]);
        for id in &ids {
            assert_eq!(events(&db, *id), 0, "alert {id} fired at its first price");
        }
        // A second, so that the 1 s cooldowns are over: still waiting for the
        // band, or spent.
        std::thread::sleep(std::time::Duration::from_millis(1100));

        let later = Utc::now();
        for case in &CASES {
            quote_at(&db, case.ticker, case.price, later);
        }
        quote_at(&db, "STL", 110.0, later - Duration::hours(7));
        quote_at(&db, "FUT", 110.0, later + Duration::days(1));

        let mut said = Vec::new();
        for (case, id) in CASES.iter().zip(&ids) {
            let explained = explain(&path, *id);
            assert_eq!(explained["state"], "armed", "{explained}");
            let fires = explained["decision"] == "fires";
            assert_eq!(fires, case.fires, "{} {}: {explained}", case.ticker, case.condition);
            said.push((*id, fires));
        }
        let expected_states = [
            (snoozed, "snoozed"),
            (malformed, "malformed"),
            (stale, "stale-quote"),
            (no_quote, "no-quote"),
            (future, "bad-quote"),
            (expired, "expired"),
            (cooling, "cooling"),
            (waiting, "waiting"),
            (spent, "spent"),
            (triggered, "triggered"),
            (disabled, "disabled"),
        ];
        let before: Vec<i64> = expected_states.iter().map(|(id, _)| events(&db, *id)).collect();
        for (id, state) in expected_states {
            let explained = explain(&path, id);
            assert_eq!(explained["state"], state, "{explained}");
            assert!(explained["why"].as_str().is_some_and(|why| !why.is_empty()), "{explained}");
            said.push((id, explained["decision"] == "fires"));
        }
        // `quotes list` marks the quotes as the tick takes them.
        let quotes: Vec<serde_json::Value> = cli(&path, &["quotes", "list", "--json"])
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let usable = |ticker: &str| {
            quotes.iter().find(|quote| quote["ticker"] == ticker).unwrap()["usable"].clone()
        };
        assert_eq!(
            (usable("STL"), usable("FUT"), usable("AB1")),
            ("stale".into(), "future".into(), "fresh".into())
        );
        // `alerts list` shows the same states, and filters by them.
        for (id, state) in expected_states {
            let listed = cli(&path, &["alerts", "list", "--state", state, "--json"]);
            let ids: Vec<i64> = listed
                .lines()
                .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["id"].as_i64().unwrap())
                .collect();
            assert!(ids.contains(&id), "{state}: {listed}");
        }

        cli(&path, &["run-job", "evaluate"]);
        for (at, (id, fires)) in said.iter().enumerate() {
            let already = at.checked_sub(CASES.len()).map_or(0, |state| before[state]);
            assert_eq!(
                events(&db, *id) > already,
                *fires,
                "alert {id}: explained as {}firing, the tick did otherwise",
                if *fires { "" } else { "not " }
            );
        }
        // What the tick did, explained: fired once, and by whom.
        let fired = explain(&path, ids[0]);
        assert_eq!(fired["state"], "triggered", "{fired}");
        assert_eq!(fired["events"].as_array().unwrap().len(), 1, "{fired}");
        assert_eq!(fired["jobs"][0]["job"], "evaluate", "{fired}");
        assert_eq!(fired["jobs"][0]["judged_latest_change"], true, "{fired}");
        let text = cli(&path, &["alerts", "explain", &ids[1].to_string()]);
        assert!(
            text.contains("state     armed")
                && text.contains("decision  holds at 95")
                && text.contains("evaluate: on schedule"),
            "{text}"
        );
    }
}

on_every_engine! {
    /// A page says how many more alerts there are and where the next one
    /// starts; filters by user and ticker.
    fn alerts_list_pages_and_filters(engine: Engine) {
        let db = Db::on(engine);
        let path = db.write_config(&config_text(&db, "http://127.0.0.1:9/events", "0 0 0 1 1 *"));
        for n in 0..7 {
            let id = db.add_alert(if n % 2 == 0 { "AAPL" } else { "MSFT" }, "above", 100.0 + f64::from(n));
            if n == 6 {
                db.execute("UPDATE price_alerts SET user_id = 'u2' WHERE id = $1", values![id]);
            }
        }
        let page = cli(&path, &["alerts", "list", "--limit", "3"]);
        let lines: Vec<&str> = page.lines().collect();
        assert_eq!(lines.len(), 5, "{page}");
        let last_id: i64 = lines[3].split_whitespace().next().unwrap().parse().unwrap();
        assert_eq!(lines[4], format!("4 more; the next page: --before {last_id}"), "{page}");
        let next = cli(&path, &["alerts", "list", "--limit", "3", "--before", &last_id.to_string()]);
        assert!(next.lines().last().unwrap().starts_with("1 more;"), "{next}");
        // Every alert has no quote: one state, filtered, paged alike.
        let no_quote = cli(&path, &["alerts", "list", "--state", "no-quote", "--limit", "5"]);
        assert!(no_quote.lines().last().unwrap().starts_with("2 more;"), "{no_quote}");
        let mine = cli(&path, &["alerts", "list", "--user", "u2", "--json"]);
        assert_eq!(mine.lines().count(), 1, "{mine}");
        let aapl = cli(&path, &["alerts", "list", "--ticker", "AAPL", "--user", "u1", "--json"]);
        assert_eq!(aapl.lines().count(), 3, "{aapl}");
        let output = common::binary()
            .args(["--config", path.to_str().unwrap(), "alerts", "list", "--limit", "0"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "--limit 0 is refused");
    }
}
