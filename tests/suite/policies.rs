//! Trigger policies beyond the cooldown: a repeating alert's trigger budget
//! (`max_triggers`), counted by the claim; snoozes (`snoozed_until`,
//! `alerts snooze`), which hold an armed alert and let the first tick after
//! judge it at the price of then; channels between two levels. On each engine, with the ticks' clock
//! injected, through the admin CLI as an operator uses it.

use crate::common;

use chrono::Utc;
use common::{Db, Engine, aapl_quote_at, day_fresh_config, minutes, tick_at};

/// The `alerts` command of the admin CLI on `db`.
fn alerts_cli(db: &Db) -> impl Fn(&[&str]) -> String {
    let path = db.write_config(&common::config_text(
        db,
        "http://127.0.0.1:9/",
        "0 0 0 1 1 *",
    ));
    move |args: &[&str]| common::cli(&path, &[&["alerts"], args].concat())
}

/// Runs the admin CLI on `db`, which must refuse `args`; what it said.
fn refused(db: &Db, args: &[&str]) -> String {
    let path = db.write_config(&common::config_text(
        db,
        "http://127.0.0.1:9/",
        "0 0 0 1 1 *",
    ));
    let output = common::binary()
        .args(["--config", path.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert!(!output.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The line of `alerts list` that shows alert `id`.
fn listed(list: &str, id: i64) -> String {
    list.lines()
        .find(|line| line.split_whitespace().next() == Some(&id.to_string()))
        .unwrap_or_else(|| panic!("no alert {id} in\n{list}"))
        .to_owned()
}

/// The events queued for alert `id`, oldest first: (event id, which
/// trigger, of how many).
fn events_of(db: &Db, id: i64) -> Vec<(String, i64, Option<i64>)> {
    db.rows(&format!(
        "SELECT event_id, body FROM outbox WHERE alert_id = {id} ORDER BY id"
    ))
    .iter()
    .map(|row| {
        let body: serde_json::Value = serde_json::from_str(&row[1].text()).unwrap();
        let data = &body["data"];
        (
            row[0].text(),
            data["trigger_count"].as_i64().unwrap(),
            data["max_triggers"].as_i64(),
        )
    })
    .collect()
}

on_every_engine! {
    fn a_trigger_budget_is_spent_by_the_claims_then_the_alert_stays_disabled(engine: Engine) {
        let db = Db::on(engine);
        let config = day_fresh_config(&db);
        let cli = alerts_cli(&db);
        let budgeted: i64 = cli(&["add", "AAPL", "above", "100", "--cooldown", "15m", "--max-triggers", "2"])
            .trim()
            .parse()
            .unwrap();
        let endless: i64 = cli(&["add", "AAPL", "above", "100", "--cooldown", "15m"])
            .trim()
            .parse()
            .unwrap();
        let t0 = Utc::now();
        aapl_quote_at(&db, 101.0, t0);

        assert_eq!(tick_at(&db, &config, t0).triggered, 2);
        assert!(listed(&cli(&["list"]), budgeted).contains(" cooling "));
        // The second trigger spends the budget: no re-arm is due.
        assert_eq!(tick_at(&db, &config, minutes(t0, 16)).triggered, 2);
        assert_eq!(
            db.scalar(&format!(
                "SELECT count(*) FROM price_alerts WHERE id = {budgeted} AND enabled = 0 AND rearm_at IS NULL"
            )),
            1
        );
        for minute in [32, 48] {
            let later = tick_at(&db, &config, minutes(t0, minute));
            assert_eq!((later.triggered, later.rearmed), (1, 1), "minute {minute}: the endless one only");
        }
        let list = cli(&["list"]);
        assert!(
            listed(&list, budgeted).contains(" spent ") && listed(&list, budgeted).contains(" 2 of 2 "),
            "{list}"
        );
        assert!(listed(&list, endless).contains(" 4 "), "{list}");
        let events = events_of(&db, budgeted);
        assert_eq!(
            events.iter().map(|(_, n, max)| (*n, *max)).collect::<Vec<_>>(),
            [(1, Some(2)), (2, Some(2))],
            "each event says which trigger of how many"
        );
        assert_ne!(events[0].0, events[1].0, "each trigger a new arming");
        assert_eq!(
            events_of(&db, endless).iter().map(|(_, n, max)| (*n, *max)).collect::<Vec<_>>(),
            [(1, None), (2, None), (3, None), (4, None)]
        );

        // Re-armed by hand, the budget is whole again.
        assert!(cli(&["rearm", &budgeted.to_string()]).contains("re-armed"));
        assert_eq!(tick_at(&db, &config, minutes(t0, 50)).triggered, 1);
        assert_eq!(events_of(&db, budgeted).last().unwrap().1, 1);

        // A budget that is not a whole number of at least 1 is malformed:
        // the alert never fires. (PostgreSQL's column holds integers only.)
        let bad_budgets: &[&str] = match engine {
            Engine::Sqlite => &["0", "-1", "2.5", "'many'"],
            Engine::Postgresql => &["0", "-1"],
        };
        for (n, bad) in bad_budgets.iter().enumerate() {
            let id = db.add_alert("AAPL", "above", 100.0);
            db.execute(
                &format!("UPDATE price_alerts SET cooldown = '1m', max_triggers = {bad} WHERE id = $1"),
                values![id],
            );
            let report = tick_at(&db, &config, minutes(t0, 51 + n as i64));
            assert_eq!(report.triggered, 0, "max_triggers {bad}");
            // On PostgreSQL another test's open transaction may keep the
            // closed horizon below the earlier bad budgets' changes: the
            // window reads them again.
            let malformed = report.malformed_alerts;
            match engine {
                Engine::Sqlite => assert_eq!(malformed, 1, "max_triggers {bad}"),
                Engine::Postgresql => {
                    assert!((1..=n as u64 + 1).contains(&malformed), "max_triggers {bad}: {malformed}")
                }
            }
        }
    }
}

on_every_engine! {
    fn a_snoozed_alert_keeps_its_arming_and_the_tick_after_judges_it_at_the_price_of_then(engine: Engine) {
        let db = Db::on(engine);
        let config = day_fresh_config(&db);
        let cli = alerts_cli(&db);
        let add = |condition: &str| -> i64 {
            cli(&["add", "AAPL", condition, "100"]).trim().parse().unwrap()
        };
        let (above, crossing, awake) = (add("above"), add("crossing_up"), add("above"));
        let t0 = Utc::now();
        aapl_quote_at(&db, 99.0, t0);
        assert_eq!(tick_at(&db, &config, t0).triggered, 0);
        let arming = |id: i64| db.scalar(&format!("SELECT arming FROM price_alerts WHERE id = {id}"));
        let armings = (arming(above), arming(crossing));

        for id in [above, crossing] {
            assert!(cli(&["snooze", &id.to_string(), "30m"]).contains("snoozed until"));
        }
        let list = cli(&["list"]);
        assert!(listed(&list, above).contains(" snoozed "), "{list}");
        assert!(listed(&list, awake).contains(" armed "), "{list}");

        // The price crosses 100 during the snooze: only the alert awake fires.
        aapl_quote_at(&db, 101.0, minutes(t0, 5));
        let during = tick_at(&db, &config, minutes(t0, 5));
        assert_eq!((during.triggered, during.snoozed), (1, 2));
        assert_eq!(events_of(&db, awake).len(), 1);
        assert_eq!((arming(above), arming(crossing)), armings, "a snooze keeps the arming");

        // The first tick after the snooze, the price unchanged: `above`
        // holds at 101 and fires, in the arming it had; the crossing was
        // observed during the snooze, so there is none to fire on.
        let after = tick_at(&db, &config, minutes(t0, 31));
        assert_eq!((after.woken, after.triggered), (2, 1));
        let events = events_of(&db, above);
        assert_eq!(events.len(), 1);
        assert!(events[0].0.ends_with(&format!("_{}", armings.0)), "{events:?}");
        assert!(events_of(&db, crossing).is_empty());
        // No longer snoozed. (Its state reads its quote by the database's
        // clock, which this test's injected ticks run ahead of: the quote
        // of minute 5 is dated in its future.)
        let list = cli(&["list"]);
        assert!(listed(&list, crossing).contains(" bad-quote "), "{list}");
        let explained = cli(&["explain", &crossing.to_string(), "--json"]);
        assert!(explained.contains("\"snoozed_until\":null"), "{explained}");

        // A crossing after the snooze fires.
        aapl_quote_at(&db, 99.0, minutes(t0, 32));
        assert_eq!(tick_at(&db, &config, minutes(t0, 32)).triggered, 0);
        aapl_quote_at(&db, 101.0, minutes(t0, 33));
        assert_eq!(tick_at(&db, &config, minutes(t0, 33)).triggered, 1);
        assert_eq!(events_of(&db, crossing).len(), 1);

        // A snooze ended by hand, and one the application wrote that is not
        // a time (malformed: never fires until fixed). A one-shot alert that
        // fired cannot be snoozed.
        let again = add("below");
        assert!(cli(&["snooze", &again.to_string(), "1h"]).contains("snoozed until"));
        assert!(cli(&["snooze", &again.to_string(), "--off"]).contains("no longer snoozed"));
        db.execute(
            "UPDATE price_alerts SET snoozed_until = 'after lunch' WHERE id = $1",
            values![again],
        );
        aapl_quote_at(&db, 90.0, minutes(t0, 34));
        let malformed = tick_at(&db, &config, minutes(t0, 34));
        assert_eq!((malformed.triggered, malformed.malformed_alerts), (0, 1));
        let said = refused(&db, &["alerts", "snooze", &above.to_string(), "1h"]);
        assert!(said.contains("neither armed nor waiting out a cooldown"), "{said}");
    }
}

on_every_engine! {
    fn channels_fire_inside_outside_entering_and_exiting_between_two_levels(engine: Engine) {
        let db = Db::on(engine);
        let config = day_fresh_config(&db);
        let cli = alerts_cli(&db);
        let add = |condition: &str| -> i64 {
            cli(&["add", "AAPL", condition, "100", "--upper", "110", "--cooldown", "1s"])
                .trim()
                .parse()
                .unwrap()
        };
        let ids = ["inside", "outside", "entering", "exiting"].map(add);
        let t0 = Utc::now();
        // (minute, price, which fire): every re-arm is due a minute later.
        let steps: [(i64, f64, [bool; 4]); 6] = [
            (0, 95.0, [false, true, false, false]),
            (1, 100.0, [true, false, true, false]),
            (2, 110.0, [true, false, false, false]),
            (3, 110.5, [false, true, false, true]),
            (4, 105.0, [true, false, true, false]),
            (5, 99.0, [false, true, false, true]),
        ];
        for (minute, price, fires) in steps {
            let at = minutes(t0, minute);
            aapl_quote_at(&db, price, at);
            tick_at(&db, &config, at);
            for (id, fires) in ids.iter().zip(fires) {
                let fired_now = db.scalar(&format!(
                    "SELECT count(*) FROM outbox WHERE alert_id = {id} AND body LIKE '%\"price\":{price:?}%'"
                ));
                assert_eq!(fired_now > 0, fires, "minute {minute} at {price}: alert {id}");
            }
        }
        let body: serde_json::Value = serde_json::from_str(
            &db.texts(&format!("SELECT body FROM outbox WHERE alert_id = {} LIMIT 1", ids[0]))[0],
        )
        .unwrap();
        assert_eq!(
            (&body["data"]["target_price"], &body["data"]["upper_price"]),
            (&serde_json::json!(100.0), &serde_json::json!(110.0))
        );
        assert!(cli(&["list"]).contains("100..110"));

        // Missing or reversed levels are malformed; the CLI refuses them.
        db.execute("UPDATE price_alerts SET enabled = 0, rearm_at = NULL", &[]);
        for (upper, why) in [(None, "missing"), (Some(90.0), "reversed")] {
            let id = db.add_alert("AAPL", "inside", 100.0);
            db.execute(
                "UPDATE price_alerts SET upper_price = $1 WHERE id = $2",
                values![upper, id],
            );
            let report = tick_at(&db, &config, minutes(t0, 9));
            assert_eq!((report.triggered, report.malformed_alerts), (0, 1), "{why}");
            // Armed, yet never judged until mended: the list says so.
            let list = cli(&["list"]);
            assert!(listed(&list, id).contains(" malformed "), "{why}: {list}");
            // Out of the next count: another test's open transaction on the
            // cluster may hold PostgreSQL's horizon back, and the next tick
            // then reads this change again, as it must.
            db.execute("UPDATE price_alerts SET enabled = 0 WHERE id = $1", values![id]);
        }
        for args in [
            &["alerts", "add", "AAPL", "inside", "100"][..],
            &["alerts", "add", "AAPL", "exiting", "100", "--upper", "100"][..],
            &["alerts", "add", "AAPL", "above", "100", "--upper", "110"][..],
        ] {
            let said = refused(&db, args);
            assert!(said.contains("--upper"), "{args:?}: {said}");
        }
    }
}

on_every_engine! {
    fn a_banded_alert_re_arms_only_once_its_price_came_back_and_its_cooldown_passed(engine: Engine) {
        let db = Db::on(engine);
        let config = day_fresh_config(&db);
        let cli = alerts_cli(&db);
        let add = |args: &[&str]| -> i64 {
            cli(&[&["add", "AAPL"], args].concat()).trim().parse().unwrap()
        };
        let band = ["--cooldown", "15m", "--rearm-band"];
        // Back at or below 198; back at or below 190 * 1.03 = 195.7; back
        // inside 193.8..205.8; and one without a band.
        let above = add(&[&["above", "200"], &band[..], &["1"]].concat());
        let crossing = add(&[&["crossing_up", "200"], &band[..], &["1"]].concat());
        let moving = add(&[&["moving_up_pct", "5", "--reference", "190"], &band[..], &["2"]].concat());
        let outside = add(&[&["outside", "190", "--upper", "210"], &band[..], &["2"]].concat());
        let plain = add(&["above", "200", "--cooldown", "15m"]);
        let ids = [above, crossing, moving, outside, plain];
        let t0 = Utc::now();
        // (minute, price, events so far of each alert above).
        let steps: [(i64, f64, [usize; 5]); 9] = [
            (0, 199.0, [0, 0, 0, 0, 0]),
            (1, 211.0, [1, 1, 1, 1, 1]),
            // Cooldowns passed; only `outside`'s price came back (inside by
            // 2%): re-armed at once. The plain alert fires again.
            (17, 201.0, [1, 1, 1, 1, 2]),
            (18, 198.5, [1, 1, 1, 1, 2]),
            // Back at 198: `above` and the crossing re-armed at once.
            (19, 198.0, [1, 1, 1, 1, 2]),
            (20, 201.0, [2, 2, 1, 1, 2]),
            // Back within their cooldown: re-armed only when it passes;
            // the moving alert, back within 3%, at once.
            (21, 195.0, [2, 2, 1, 1, 2]),
            (30, 199.0, [2, 2, 1, 1, 2]),
            (37, 211.0, [3, 3, 2, 2, 3]),
        ];
        let mut returned = 0;
        for (minute, price, expected) in steps {
            let at = minutes(t0, minute);
            aapl_quote_at(&db, price, at);
            returned += tick_at(&db, &config, at).returned;
            let events = ids.map(|id| events_of(&db, id).len());
            assert_eq!(events, expected, "minute {minute} at {price}");
            if minute == 18 {
                let list = cli(&["list"]);
                assert!(listed(&list, above).contains(" waiting "), "{list}");
                assert!(listed(&list, above).contains(" 15m ±1% "), "{list}");
            }
        }
        assert!(returned >= 6, "{returned} returns");
        // Each trigger a new arming; the event tells the band.
        let events = events_of(&db, above);
        assert_eq!(
            events.iter().map(|(id, ..)| id).collect::<std::collections::BTreeSet<_>>().len(),
            3
        );
        let body: serde_json::Value = serde_json::from_str(
            &db.texts(&format!("SELECT body FROM outbox WHERE alert_id = {moving} LIMIT 1"))[0],
        )
        .unwrap();
        assert_eq!(body["data"]["rearm_band"], serde_json::json!(2.0));

        // A band that is not a percent, or too wide for its channel, is
        // malformed; the CLI refuses it.
        for args in [
            &["alerts", "add", "AAPL", "above", "100", "--cooldown", "1m", "--rearm-band", "0"][..],
            &["alerts", "add", "AAPL", "outside", "100", "--upper", "103", "--cooldown", "1m", "--rearm-band", "2"][..],
            &["alerts", "add", "AAPL", "above", "100", "--rearm-band", "1"][..],
        ] {
            refused(&db, args);
        }
        for bad in ["-1", "100"] {
            let id = db.add_alert("AAPL", "above", 100.0);
            db.execute(
                &format!("UPDATE price_alerts SET cooldown = '1m', rearm_band = {bad} WHERE id = $1"),
                values![id],
            );
            let report = tick_at(&db, &config, minutes(t0, 40));
            assert_eq!((report.triggered, report.malformed_alerts), (0, 1), "rearm_band {bad}");
            // Out of the next count (see the channels' test).
            db.execute("UPDATE price_alerts SET enabled = 0 WHERE id = $1", values![id]);
        }
    }
}
