//! PostgreSQL's own side of the contract: TLS verified on rustls (the
//! cluster of this binary presents a certificate no CA vouches for), and an
//! application's table with a boolean `enabled`. (A binary of its own: its
//! cluster runs with TLS on.)

mod common;

use std::path::Path;
use std::process::Output;

use common::{Daemon, Db, Engine, Receiver, binary, config_text, lib_config, postgresql, tick};

fn check_config(db: &Db, database_line: &str) -> Output {
    let text = config_text(db, "http://127.0.0.1:9/events", "* * * * * *");
    let text = text.replace(&db.section(), &format!("[database]\n{database_line}\n"));
    let path = db.write_config(&text);
    binary()
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .output()
        .unwrap()
}

#[test]
fn tls_to_the_server_is_verified_and_used() {
    let cluster = postgresql::cluster_with_tls();
    let db = Db::on(Engine::Postgresql);
    let name = db.database_name().to_owned();
    let url = |query: &str| {
        format!(
            "url = \"postgresql://postgres@127.0.0.1:{}/{name}?{query}\"",
            cluster.port
        )
    };

    // A certificate no trusted root vouches for: refused, whichever mode asks
    // for TLS, with the reason.
    for mode in ["require", "verify-full"] {
        let output = check_config(&db, &url(&format!("sslmode={mode}")));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(74), "sslmode={mode}: {stderr}");
        assert!(stderr.contains("certificate"), "sslmode={mode}: {stderr}");
    }

    // Trusting its CA (here the certificate itself): connected, over TLS.
    let ca = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/self-signed.crt");
    let trusted = url(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let output = check_config(&db, &trusted);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let receiver = Receiver::start();
    let text = config_text(&db, &receiver.url, "* * * * * *")
        .replace(&db.section(), &format!("[database]\n{trusted}\n"));
    let path = db.write_config(&text);
    let daemon = Daemon::start_quiet(&path);
    db.add_alert("AAPL", "above", 1.0);
    db.set_quote("AAPL", 2.0);
    receiver.wait_for(1);
    let mut admin = cluster.admin().unwrap();
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl)
             FROM pg_stat_activity AS a JOIN pg_stat_ssl AS s USING (pid)
             WHERE a.application_name = 'price-alertd' AND a.datname = $1",
            &[&name],
        )
        .unwrap();
    let (connections, encrypted): (i64, i64) = (row.get(0), row.get(1));
    assert!(connections > 0);
    assert_eq!(
        encrypted, connections,
        "every connection of the daemon uses TLS"
    );
    drop(daemon);
}

#[test]
fn an_application_table_with_a_boolean_enabled_is_claimed_and_rearmed() {
    postgresql::cluster_with_tls();
    let db = Db::empty(Engine::Postgresql);
    db.postgres_app()
        .batch_execute(
            "CREATE TABLE price_alerts (
                 id BIGSERIAL PRIMARY KEY, ticker TEXT NOT NULL, condition TEXT NOT NULL,
                 target_price DOUBLE PRECISION NOT NULL, reference_price DOUBLE PRECISION,
                 enabled BOOLEAN NOT NULL DEFAULT true, triggered_at TEXT,
                 triggered_price DOUBLE PRECISION, created_at TEXT NOT NULL, user_id TEXT, note TEXT);
             CREATE TABLE quotes (ticker TEXT PRIMARY KEY, price DOUBLE PRECISION NOT NULL, updated_at TEXT NOT NULL);
             INSERT INTO price_alerts (ticker, condition, target_price, created_at)
             VALUES ('AAPL', 'above', 100, '2026-01-01T00:00:00Z'),
                    ('AAPL', 'above', 500, '2026-01-01T00:00:00Z');",
        )
        .unwrap();
    let receiver = Receiver::start();
    let config = lib_config(&db, &receiver.url);
    drop(db.pool(1));
    db.set_quote("AAPL", 150.0);
    assert_eq!(tick(&db, &config).triggered, 1);
    assert_eq!(
        db.texts("SELECT enabled::text FROM price_alerts ORDER BY id"),
        ["false", "true"]
    );
    let first = db.texts("SELECT event_id FROM outbox");

    // Re-armed by the application: a new arming, a new event id.
    db.execute(
        "UPDATE price_alerts SET enabled = true WHERE id = 1",
        values![],
    );
    db.set_quote("AAPL", 151.0);
    assert_eq!(tick(&db, &config).triggered, 1);
    let both = db.texts("SELECT event_id FROM outbox ORDER BY id");
    assert_eq!(both.len(), 2);
    assert_eq!(both[0], first[0]);
    assert_ne!(both[1], both[0]);
    // The admin commands read and write it too.
    let path = db.write_config(&config_text(&db, &receiver.url, "0 0 0 1 1 *"));
    let listed = common::cli(&path, &["alerts", "list", "--json"]);
    assert!(listed.contains("\"enabled\":true"), "{listed}");
    assert!(listed.contains("\"enabled\":false"), "{listed}");
    common::cli(&path, &["alerts", "rearm", "1"]);
    assert_eq!(
        db.texts("SELECT enabled::text FROM price_alerts ORDER BY id"),
        ["true", "true"]
    );
}
