//! PostgreSQL's own side of the contract: TLS as `sslmode` asks for it, or
//! no connection (against a server without TLS, and one whose certificate
//! is for another name and vouched for by no CA), and an application's
//! table with a boolean `enabled`.

use crate::common;

use std::path::Path;
use std::process::Output;

use common::{Daemon, Db, Engine, Receiver, binary, config_text, lib_config, postgresql, tick};

/// Runs the binary with `args` on a config whose `[database]` is `database_line`.
fn with_database(db: &Db, database_line: &str, args: &[&str]) -> Output {
    let text = config_text(db, "http://127.0.0.1:9/events", "0 0 0 1 1 *");
    let text = text.replace(&db.section(), &format!("[database]\n{database_line}\n"));
    let path = db.write_config(&text);
    binary()
        .args(["--config", path.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap()
}

/// The database line for `db` at `host`, as `user`, with `query`.
fn url(db: &Db, user: &str, host: &str, query: &str) -> String {
    format!(
        "url = \"postgresql://{user}@{host}:{}/{}?{query}\"",
        db.cluster().port,
        db.database_name()
    )
}

fn the_fixture_certificate() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/self-signed.crt")
        .display()
        .to_string()
}

/// Asserts that `output` is a refusal to connect (exit 74) whose message
/// holds each of `reasons`.
fn refused(output: &Output, reasons: &[&str], what: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(74), "{what}: {stderr}");
    for reason in reasons {
        assert!(stderr.contains(reason), "{what}: {reason:?} in {stderr}");
    }
}

fn connected(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_mode_that_asks_for_tls_refuses_a_server_without_it() {
    // The suite's plain cluster declines TLS, as a server with `ssl = off`
    // (or someone on the path stripping it) does.
    let db = Db::on(Engine::Postgresql);
    for mode in ["require", "verify-ca", "verify-full"] {
        let line = url(&db, "postgres", "127.0.0.1", &format!("sslmode={mode}"));
        for args in [
            &["check-config"][..],
            &["alerts", "list"],
            &["outbox", "list"],
            &["status"],
            &["run"],
        ] {
            let output = with_database(&db, &line, args);
            refused(
                &output,
                &["connecting to", "does not support TLS"],
                &format!("sslmode={mode} {args:?}"),
            );
        }
    }
    // The modes that do not ask for TLS go on without it, as libpq's do.
    for mode in ["disable", "allow", "prefer"] {
        let line = url(&db, "postgres", "127.0.0.1", &format!("sslmode={mode}"));
        connected(
            &with_database(&db, &line, &["check-config"]),
            &format!("sslmode={mode}"),
        );
    }
}

#[test]
fn tls_is_verified_as_the_mode_says() {
    let db = Db::on_tls_cluster();
    let ca = the_fixture_certificate();
    let check = |user: &str, host: &str, query: &str| {
        with_database(&db, &url(&db, user, host, query), &["check-config"])
    };

    // A certificate no trusted root vouches for: refused, whichever mode
    // asks for TLS, with the reason.
    for mode in ["require", "verify-ca", "verify-full"] {
        refused(
            &check("postgres", "127.0.0.1", &format!("sslmode={mode}")),
            &["certificate"],
            &format!("sslmode={mode} without its CA"),
        );
    }
    // Its CA trusted: every mode connects to the name it was issued for.
    for mode in ["require", "verify-ca", "verify-full"] {
        connected(
            &check(
                "postgres",
                "127.0.0.1",
                &format!("sslmode={mode}&sslrootcert={ca}"),
            ),
            &format!("sslmode={mode} at 127.0.0.1"),
        );
    }
    // The certificate is for 127.0.0.1, not for "localhost": verify-ca
    // checks only the chain; verify-full (and require, which is verify-full
    // here) the name too.
    connected(
        &check(
            "postgres",
            "localhost",
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        ),
        "verify-ca at another name",
    );
    for mode in ["require", "verify-full"] {
        refused(
            &check(
                "postgres",
                "localhost",
                &format!("sslmode={mode}&sslrootcert={ca}"),
            ),
            &["certificate", "not valid for name"],
            &format!("sslmode={mode} at another name"),
        );
    }
    // A server that insists on TLS (pg_hba.conf's hostnossl reject for this
    // role): refused without it, and `allow` then connects with it.
    let tls_only = postgresql::TLS_ONLY_USER;
    refused(
        &check(tls_only, "127.0.0.1", "sslmode=disable"),
        &["no encryption"],
        "sslmode=disable to a server that insists",
    );
    connected(
        &check(
            tls_only,
            "127.0.0.1",
            &format!("sslmode=allow&sslrootcert={ca}"),
        ),
        "sslmode=allow to a server that insists",
    );
    // `prefer` uses TLS where the server offers it, verified too.
    connected(
        &check(
            tls_only,
            "127.0.0.1",
            &format!("sslmode=prefer&sslrootcert={ca}"),
        ),
        "sslmode=prefer",
    );
    refused(
        &check(tls_only, "127.0.0.1", "sslmode=prefer"),
        &["certificate"],
        "sslmode=prefer without its CA",
    );
}

#[test]
fn every_connection_of_a_daemon_uses_the_tls_it_asked_for() {
    let db = Db::on_tls_cluster();
    let ca = the_fixture_certificate();
    let receiver = Receiver::start();
    let line = url(
        &db,
        "postgres",
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let text = config_text(&db, &receiver.url, "* * * * * *")
        .replace(&db.section(), &format!("[database]\n{line}\n"));
    let path = db.write_config(&text);
    let daemon = Daemon::start_quiet(&path);
    db.add_alert("AAPL", "above", 1.0);
    db.set_quote("AAPL", 2.0);
    receiver.wait_for(1);
    let mut admin = db.cluster().admin().unwrap();
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl)
             FROM pg_stat_activity AS a JOIN pg_stat_ssl AS s USING (pid)
             WHERE a.application_name = 'price-alertd' AND a.datname = $1",
            &[&db.database_name()],
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
