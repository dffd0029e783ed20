//! Tests of judging and of whole ticks on a real SQLite file.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;

use crate::alert::Alert;
use crate::store::alerts::AlertRow;
use crate::time::parse_time;

use super::judge::usable_quote;
use super::*;

fn alert(condition: &str, target: Option<f64>, reference: Option<f64>) -> AlertRow {
    AlertRow {
        id: 1,
        arming: 1,
        ticker: "AAPL".into(),
        condition: condition.into(),
        target_price: target,
        reference_price: reference,
        expires_at: None,
        user_id: None,
        note: None,
        cooldown: None,
        snoozed_until: None,
        max_triggers: None,
        upper_price: None,
        rearm_band: None,
    }
}

/// The cooldown `Alert::parse` reads in `row`, or why the row is malformed.
fn cooldown_of(row: &AlertRow) -> Result<Option<Duration>, String> {
    Alert::parse(&row.written())
        .map(|alert| alert.cooldown)
        .map_err(|malformed| malformed.reason)
}

/// Where the price of the alert in `row` must come back to; none for a
/// malformed row.
fn return_levels(row: &AlertRow) -> (Option<f64>, Option<f64>) {
    Alert::parse(&row.written()).map_or((None, None), |alert| alert.return_levels())
}

fn now() -> DateTime<Utc> {
    parse_time("2026-03-02T14:30:00Z").unwrap()
}

fn at(price: f64, previous: Option<f64>) -> Observed {
    Observed { price, previous }
}

fn check(
    condition: &str,
    target: f64,
    reference: Option<f64>,
    observed: Observed,
    expected: Verdict,
) {
    assert_eq!(
        judge(&alert(condition, Some(target), reference), observed, now()),
        expected,
        "{condition} {target} {reference:?} at {observed:?}"
    );
}

#[test]
fn above_and_below_include_the_target() {
    check("above", 200.0, None, at(200.0, None), Verdict::Fire);
    check("above", 200.0, None, at(199.99, None), Verdict::Hold);
    check("below", 200.0, None, at(200.0, None), Verdict::Fire);
    check("below", 200.0, None, at(200.01, None), Verdict::Hold);
}

#[test]
fn crossings_need_a_previous_price_on_the_other_side() {
    check(
        "crossing_up",
        100.0,
        None,
        at(101.0, Some(99.0)),
        Verdict::Fire,
    );
    check(
        "crossing_up",
        100.0,
        None,
        at(100.0, Some(99.0)),
        Verdict::Fire,
    );
    check(
        "crossing_up",
        100.0,
        None,
        at(101.0, Some(100.0)),
        Verdict::Hold,
    );
    check(
        "crossing_up",
        100.0,
        None,
        at(101.0, Some(102.0)),
        Verdict::Hold,
    );
    check("crossing_up", 100.0, None, at(101.0, None), Verdict::Hold);
    check(
        "crossing_down",
        100.0,
        None,
        at(99.0, Some(101.0)),
        Verdict::Fire,
    );
    check(
        "crossing_down",
        100.0,
        None,
        at(100.0, Some(101.0)),
        Verdict::Fire,
    );
    check(
        "crossing_down",
        100.0,
        None,
        at(99.0, Some(100.0)),
        Verdict::Hold,
    );
    check("crossing_down", 100.0, None, at(99.0, None), Verdict::Hold);
}

#[test]
fn moving_percent_is_measured_from_the_reference() {
    check(
        "moving_up_pct",
        5.0,
        Some(100.0),
        at(105.0, None),
        Verdict::Fire,
    );
    check(
        "moving_up_pct",
        5.0,
        Some(100.0),
        at(104.9, None),
        Verdict::Hold,
    );
    check(
        "moving_down_pct",
        5.0,
        Some(100.0),
        at(95.0, None),
        Verdict::Fire,
    );
    check(
        "moving_down_pct",
        5.0,
        Some(100.0),
        at(95.1, None),
        Verdict::Hold,
    );
    check(
        "moving_down_pct",
        5.0,
        Some(100.0),
        at(110.0, None),
        Verdict::Hold,
    );
}

#[test]
fn rows_that_cannot_be_evaluated_are_malformed() {
    let malformed = |alert: AlertRow| {
        matches!(
            judge(&alert, at(1.0, Some(0.5)), now()),
            Verdict::Malformed(_)
        )
    };
    assert!(malformed(alert("sideways", Some(1.0), None)));
    assert!(malformed(alert("above", None, None)));
    assert!(malformed(alert("above", Some(f64::INFINITY), None)));
    assert!(malformed(alert("above", Some(f64::NAN), None)));
    assert!(malformed(alert("moving_up_pct", Some(5.0), None)));
    assert!(malformed(alert("moving_up_pct", Some(5.0), Some(0.0))));
    assert!(malformed(AlertRow {
        expires_at: Some("next tuesday".into()),
        ..alert("above", Some(1.0), None)
    }));
}

#[test]
fn a_quote_is_usable_with_a_positive_price_a_time_not_too_old_nor_ahead() {
    let check = |price: Option<f64>, updated_at: &str, expected: Result<f64, QuoteProblem>| {
        assert_eq!(
            usable_quote(price, updated_at, Duration::from_secs(900), now()).map(
                |(price, time)| {
                    assert_eq!(Some(time), parse_time(updated_at));
                    price
                }
            ),
            expected,
            "{price:?} {updated_at}"
        );
    };
    check(Some(5.0), "2026-03-02T14:29:00Z", Ok(5.0));
    check(Some(5.0), "2026-03-02 14:15:00", Ok(5.0));
    check(Some(5.0), "2026-03-02T14:14:59Z", Err(QuoteProblem::Stale));
    // Up to a minute ahead of the clock is skew; more is a wrong clock.
    check(Some(5.0), "2026-03-02T14:31:00Z", Ok(5.0));
    check(Some(5.0), "2026-03-02T14:31:01Z", Err(QuoteProblem::Future));
    check(Some(5.0), "2030-01-01T00:00:00Z", Err(QuoteProblem::Future));
    check(
        Some(0.0),
        "2026-03-02T14:29:00Z",
        Err(QuoteProblem::BadPrice),
    );
    check(None, "2026-03-02T14:29:00Z", Err(QuoteProblem::BadPrice));
    check(
        Some(f64::NAN),
        "2026-03-02T14:29:00Z",
        Err(QuoteProblem::BadPrice),
    );
    check(Some(5.0), "yesterday", Err(QuoteProblem::BadTime));
}

#[test]
fn a_cooldown_is_a_duration_of_a_second_or_more_and_a_bad_one_is_malformed() {
    let with = |cooldown: &str| AlertRow {
        cooldown: Some(cooldown.into()),
        ..alert("above", Some(1.0), None)
    };
    let check = |cooldown: &str, expected: Result<Option<Duration>, &str>| {
        assert_eq!(
            cooldown_of(&with(cooldown)).map_err(|reason| {
                assert!(reason.contains(expected.unwrap_err()), "{reason}");
                expected.unwrap_err()
            }),
            expected,
            "{cooldown:?}"
        )
    };
    check("15m", Ok(Some(Duration::from_secs(900))));
    check(" 1h 30m ", Ok(Some(Duration::from_secs(5400))));
    check("1s", Ok(Some(Duration::from_secs(1))));
    check("", Ok(None));
    check("  ", Ok(None));
    check("999ms", Err("is shorter than 1s"));
    check("0s", Err("is shorter than 1s"));
    check("soon", Err("is not a duration such as \"15m\""));
    check("-5m", Err("is not a duration"));
    assert_eq!(cooldown_of(&alert("above", Some(1.0), None)), Ok(None));
    // A repeating alert fires as any other; a bad cooldown never fires.
    assert_eq!(judge(&with("15m"), at(5.0, None), now()), Verdict::Fire);
    assert!(matches!(
        judge(&with("soon"), at(5.0, None), now()),
        Verdict::Malformed(_)
    ));
}

#[test]
fn an_expired_alert_never_fires() {
    let expiring = |expires_at: &str| AlertRow {
        expires_at: Some(expires_at.into()),
        ..alert("above", Some(1.0), None)
    };
    assert_eq!(
        judge(&expiring("2026-03-02T14:29:59Z"), at(5.0, None), now()),
        Verdict::Expired
    );
    assert_eq!(
        judge(&expiring("2026-03-02 14:30:00"), at(5.0, None), now()),
        Verdict::Expired
    );
    assert_eq!(
        judge(&expiring("2026-03-02T15:30:00+02:00"), at(5.0, None), now()),
        Verdict::Expired
    );
    assert_eq!(
        judge(&expiring("2026-03-02T14:30:01Z"), at(5.0, None), now()),
        Verdict::Fire
    );
}

fn price() -> impl Strategy<Value = f64> {
    0.01f64..1_000_000.0
}

proptest! {
    /// The level the index holds for a moving-% alert (computed as SQLite
    /// computes it) is within the read's rounding margin whenever
    /// `judge` fires: the range read never misses a move.
    #[test]
    fn a_moving_alert_that_fires_is_within_its_levels_range(percent in -50.0f64..500.0, reference in price(), price in price()) {
        let up = reference * (1.0 + percent / 100.0);
        if judge(&alert("moving_up_pct", Some(percent), Some(reference)), at(price, None), now()) == Verdict::Fire {
            prop_assert!(up <= price * (1.0 + 1e-9), "{up} > {price}");
        }
        let down = reference * (1.0 - percent / 100.0);
        if judge(&alert("moving_down_pct", Some(percent), Some(reference)), at(price, None), now()) == Verdict::Fire {
            prop_assert!(down >= price * (1.0 - 1e-9), "{down} < {price}");
        }
    }

    #[test]
    fn above_fires_exactly_at_or_over_the_target(target in price(), price in price()) {
        prop_assert_eq!(judge(&alert("above", Some(target), None), at(price, None), now()) == Verdict::Fire, price >= target);
        prop_assert_eq!(judge(&alert("below", Some(target), None), at(price, None), now()) == Verdict::Fire, price <= target);
    }

    #[test]
    fn a_crossing_fires_only_when_the_target_lies_between_the_two_prices(target in price(), previous in price(), price in price()) {
        let up = judge(&alert("crossing_up", Some(target), None), at(price, Some(previous)), now()) == Verdict::Fire;
        let down = judge(&alert("crossing_down", Some(target), None), at(price, Some(previous)), now()) == Verdict::Fire;
        prop_assert!(!(up && down), "both directions fired");
        if up { prop_assert!(previous < target && target <= price); }
        if down { prop_assert!(previous > target && target >= price); }
        // Without a previous observation nothing crosses.
        prop_assert_ne!(judge(&alert("crossing_up", Some(target), None), at(price, None), now()), Verdict::Fire);
        prop_assert_ne!(judge(&alert("crossing_down", Some(target), None), at(price, None), now()), Verdict::Fire);
        // A crossing is an above/below that was not so before.
        if up { prop_assert_eq!(judge(&alert("above", Some(target), None), at(price, None), now()), Verdict::Fire); }
    }

    #[test]
    fn moves_up_and_down_never_both_fire(percent in 0.001f64..500.0, reference in price(), price in price()) {
        let up = judge(&alert("moving_up_pct", Some(percent), Some(reference)), at(price, None), now()) == Verdict::Fire;
        let down = judge(&alert("moving_down_pct", Some(percent), Some(reference)), at(price, None), now()) == Verdict::Fire;
        prop_assert!(!(up && down));
        if up { prop_assert!(price > reference); }
        if down { prop_assert!(price < reference); }
    }

    #[test]
    fn a_higher_price_keeps_an_above_alert_firing(target in price(), price in price(), rise in 0.0f64..1000.0) {
        if judge(&alert("above", Some(target), None), at(price, None), now()) == Verdict::Fire {
            prop_assert_eq!(judge(&alert("above", Some(target), None), at(price + rise, None), now()), Verdict::Fire);
        }
    }
}

#[test]
fn a_tick_report_renders_each_count_once_under_its_own_name() {
    let report = TickReport {
        evaluated: 7,
        stale_alerts: 3,
        locked: 2,
        duration: Duration::from_millis(41),
        ..TickReport::default()
    };
    let summary: Vec<(String, String)> = report
        .summary()
        .split(' ')
        .map(|pair| {
            let (key, value) = pair.split_once('=').expect("key=value");
            (key.to_owned(), value.to_owned())
        })
        .collect();
    let mut expected: Vec<(String, String)> = report
        .counts()
        .iter()
        .map(|count| (count.name.to_owned(), count.value.to_string()))
        .collect();
    expected.push(("duration_ms".into(), "41".into()));
    expected.push(("fetch_ms".into(), "0".into()));
    assert_eq!(summary, expected);
    let names: HashSet<&str> = report.counts().iter().map(|count| count.name).collect();
    assert_eq!(names.len(), COUNTS, "a name used twice");
    assert!(summary.contains(&("stale_alerts".into(), "3".into())));
    assert!(summary.contains(&("locked".into(), "2".into())));
}

#[test]
fn a_band_sets_where_the_price_must_come_back_to() {
    let banded = |condition: &str, target: f64, reference: Option<f64>, upper: Option<f64>| {
        let mut alert = alert(condition, Some(target), reference);
        alert.upper_price = upper;
        alert.cooldown = Some("15m".into());
        alert.rearm_band = Some("2".into());
        alert
    };
    let close = |(below, above): (Option<f64>, Option<f64>),
                 expected: (Option<f64>, Option<f64>)| {
        let near = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() < 1e-9,
            (a, b) => a == b,
        };
        assert!(
            near(below, expected.0) && near(above, expected.1),
            "{:?} != {expected:?}",
            (below, above)
        );
    };
    close(
        return_levels(&banded("above", 200.0, None, None)),
        (Some(196.0), None),
    );
    close(
        return_levels(&banded("crossing_down", 200.0, None, None)),
        (None, Some(204.0)),
    );
    // 5% from 190 fires at 199.5; back within 3%: at or below 195.7.
    close(
        return_levels(&banded("moving_up_pct", 5.0, Some(190.0), None)),
        (Some(195.7), None),
    );
    close(
        return_levels(&banded("moving_down_pct", 5.0, Some(200.0), None)),
        (None, Some(194.0)),
    );
    // Out of the channel by 2%, or back inside it by 2%.
    close(
        return_levels(&banded("entering", 100.0, None, Some(110.0))),
        (Some(98.0), Some(112.2)),
    );
    close(
        return_levels(&banded("outside", 100.0, None, Some(110.0))),
        (Some(107.8), Some(102.0)),
    );
    // No cooldown: it does not repeat, and the band says nothing.
    let mut once = banded("above", 200.0, None, None);
    once.cooldown = None;
    assert_eq!(return_levels(&once), (None, None));

    // A band that is not a percent, or too wide for its channel: malformed.
    for band in ["0", "-1", "100", "wide"] {
        let mut bad = banded("above", 100.0, None, None);
        bad.rearm_band = Some(band.into());
        assert!(
            matches!(judge(&bad, at(101.0, None), now()), Verdict::Malformed(_)),
            "{band}"
        );
    }
    let too_wide = banded("outside", 100.0, None, Some(103.0));
    assert!(matches!(
        judge(&too_wide, at(99.0, None), now()),
        Verdict::Malformed(reason) if reason.contains("too wide")
    ));
    assert_eq!(
        judge(
            &banded("outside", 100.0, None, Some(110.0)),
            at(99.0, None),
            now()
        ),
        Verdict::Fire
    );
}
