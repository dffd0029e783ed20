//! Webhook delivery against a real loopback receiver that fails on demand: the
//! fault matrix, dead letters and replay, and signatures a receiver can verify
//! with the Standard Webhooks library from crates.io.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use base64::Engine as _;
use common::{Db, HeadOnly, Receiver, Reply, binary, deliver_pending, lib_config, tick};

/// A database with `count` triggered alerts, claimed; returns it with its config.
fn triggered(count: usize, url: &str) -> (Db, price_alertd::config::Config) {
    let db = Db::new();
    let config = lib_config(&db, url);
    for n in 0..count {
        db.add_alert("AAPL", "above", n as f64);
    }
    db.set_quote("AAPL", 1_000_000.0);
    assert_eq!(tick(&db, &config).triggered, count as u64);
    (db, config)
}

#[test]
fn server_errors_are_retried_until_a_2xx_under_one_id_with_the_same_bytes() {
    let receiver = Receiver::start();
    receiver.fail_with(&[503, 502]);
    let (db, config) = triggered(1, &receiver.url);
    let stored: String = db
        .app()
        .query_row("SELECT body FROM outbox", [], |row| row.get(0))
        .unwrap();
    let totals = deliver_pending(&db.pool(4), &config);
    assert_eq!((totals.delivered, totals.failed, totals.dead), (1, 2, 0));
    let arrivals = receiver.arrivals();
    assert_eq!(
        arrivals.iter().map(|a| a.status).collect::<Vec<_>>(),
        [503, 502, 200]
    );
    assert!(
        arrivals
            .iter()
            .all(|a| a.webhook_id == arrivals[0].webhook_id),
        "one webhook-id across attempts"
    );
    assert!(
        arrivals.iter().all(|a| a.body == stored),
        "the same bytes on every attempt"
    );
    assert_eq!(
        db.scalar("SELECT attempts FROM outbox WHERE state = 'delivered'"),
        3
    );
}

#[test]
fn an_event_still_failing_when_the_schedule_is_used_up_becomes_a_dead_letter() {
    // The test schedule has two waits: three attempts in all.
    let receiver = Receiver::start();
    receiver.fail_with(&[503, 503, 503]);
    let (db, config) = triggered(1, &receiver.url);
    let totals = deliver_pending(&db.pool(4), &config);
    assert_eq!((totals.delivered, totals.failed, totals.dead), (0, 2, 1));
    assert_eq!(receiver.arrivals().len(), 3);
    let error: String = db
        .app()
        .query_row(
            "SELECT last_error FROM outbox WHERE state = 'dead'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert!(
        error.contains("503") && error.contains("retry schedule is used up"),
        "{error}"
    );
}

#[test]
fn delivered_events_are_not_replayed() {
    let receiver = Receiver::start();
    let (db, config) = triggered(1, &receiver.url);
    deliver_pending(&db.pool(4), &config);
    let id = receiver.received()[0]
        .header("webhook-id")
        .unwrap()
        .to_owned();
    let output = binary()
        .args([
            "--config",
            &write_config(&db, &receiver.url),
            "outbox",
            "replay",
            &id,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("already delivered"));
}

#[test]
fn a_hanging_receiver_times_out_and_is_retried() {
    let receiver = Receiver::start();
    receiver.reply_with(&[Reply::hang(Duration::from_secs(30))]);
    let db = Db::new();
    let mut config = lib_config(&db, &receiver.url);
    config.webhook.timeout = Duration::from_millis(500);
    db.add_alert("AAPL", "above", 1.0);
    db.set_quote("AAPL", 2.0);
    tick(&db, &config);

    let totals = deliver_pending(&db.pool(4), &config);
    assert_eq!((totals.failed, totals.delivered), (1, 1));
    let last_error: String = db
        .app()
        .query_row("SELECT coalesce(last_error, '') FROM outbox", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(last_error, "", "cleared on delivery");
    let arrivals = receiver.arrivals();
    assert_eq!(arrivals.len(), 2);
    assert_eq!(arrivals[0].webhook_id, arrivals[1].webhook_id);
}

#[test]
fn a_2xx_is_delivered_when_its_head_arrives_though_its_body_never_does() {
    for head in [
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let receiver = HeadOnly::start(head);
        let db = Db::new();
        let mut config = lib_config(&db, &receiver.url);
        config.webhook.timeout = Duration::from_secs(5);
        db.add_alert("AAPL", "above", 1.0);
        db.add_alert("MSFT", "above", 1.0);
        db.set_quote("AAPL", 2.0);
        db.set_quote("MSFT", 2.0);
        tick(&db, &config);

        let started = std::time::Instant::now();
        let totals = deliver_pending(&db.pool(4), &config);
        assert_eq!(
            (totals.delivered, totals.failed, totals.dead),
            (2, 0, 0),
            "{head:?}"
        );
        let ids = receiver.ids();
        assert_eq!(ids.len(), 2, "one POST per event: {ids:?}");
        assert_ne!(ids[0], ids[1]);
        // Well within the 5 s timeout: the body was waited for briefly.
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'"),
            2
        );
    }
}

#[test]
fn retry_after_on_429_is_honoured() {
    let receiver = Receiver::start();
    receiver.reply_with(&[Reply {
        retry_after: Some(2),
        ..Reply::status(429)
    }]);
    // The schedule's first wait is 200ms: only Retry-After explains a longer one.
    let (db, config) = triggered(1, &receiver.url);
    let totals = deliver_pending(&db.pool(4), &config);
    assert_eq!(totals.delivered, 1);
    let arrivals = receiver.arrivals();
    assert_eq!(arrivals.len(), 2);
    let waited = arrivals[1].at - arrivals[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}"
    );
}

#[test]
fn redirects_are_not_followed_and_count_as_failures() {
    let receiver = Receiver::start();
    receiver.reply_with(&[Reply::status(307)]);
    let (db, config) = triggered(1, &receiver.url);
    let totals = deliver_pending(&db.pool(4), &config);
    assert_eq!((totals.failed, totals.delivered), (1, 1));
    assert_eq!(
        receiver
            .arrivals()
            .iter()
            .map(|a| a.status)
            .collect::<Vec<_>>(),
        [307, 200]
    );
}

fn write_config(db: &Db, url: &str) -> String {
    db.write_config(&common::config_text(&db.path, url, "0 0 0 1 1 *"))
        .display()
        .to_string()
}

#[test]
fn a_400_is_a_dead_letter_that_replay_sends_again_under_the_same_id() {
    let receiver = Receiver::start();
    receiver.fail_with(&[400]);
    let (db, config) = triggered(2, &receiver.url);
    let totals = deliver_pending(&db.pool(4), &config);
    assert_eq!((totals.delivered, totals.dead), (1, 1));
    let dead_id: String = db
        .app()
        .query_row(
            "SELECT event_id FROM outbox WHERE state = 'dead'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    let config_path = write_config(&db, &receiver.url);

    let listing = binary()
        .args(["--config", &config_path, "outbox", "list", "--dead"])
        .output()
        .unwrap();
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(
        listing.contains(&dead_id) && listing.contains("400 Bad Request"),
        "{listing}"
    );
    assert!(listing.contains("0 pending, 1 dead"), "{listing}");
    let json = binary()
        .args(["--config", &config_path, "outbox", "list", "--json"])
        .output()
        .unwrap();
    let line: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(line["event_id"], dead_id.as_str());
    assert_eq!(line["state"], "dead");

    let replay = binary()
        .args(["--config", &config_path, "outbox", "replay", &dead_id])
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let totals = deliver_pending(&db.pool(4), &config);
    assert_eq!(totals.delivered, 1);
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    assert_eq!(received[1].header("webhook-id"), Some(dead_id.as_str()));
    assert_eq!(
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'"),
        2
    );
}

#[test]
fn replay_all_dead_replays_every_dead_letter_and_nothing_else() {
    let receiver = Receiver::start();
    receiver.fail_with(&[410, 410, 410]);
    let (db, config) = triggered(5, &receiver.url);
    deliver_pending(&db.pool(4), &config);
    assert_eq!(
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'dead'"),
        3
    );
    let config_path = write_config(&db, &receiver.url);
    let replay = binary()
        .args(["--config", &config_path, "outbox", "replay", "--all-dead"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(replay.stdout).unwrap().trim(),
        "replayed 3 dead letters"
    );
    deliver_pending(&db.pool(4), &config);
    assert_eq!(receiver.received().len(), 5);
    let ids: BTreeSet<String> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 5, "each event delivered once");
}

#[test]
fn purge_deletes_old_delivered_events_only() {
    let receiver = Receiver::start();
    receiver.fail_with(&[400]);
    let (db, config) = triggered(3, &receiver.url);
    deliver_pending(&db.pool(4), &config);
    db.app()
        .execute(
            "UPDATE outbox SET delivered_at = '2020-01-01T00:00:00.000Z' WHERE state = 'delivered'",
            [],
        )
        .unwrap();
    let alert = db.add_alert("AAPL", "above", 1.0);
    tick(&db, &config);
    receiver.set_default(Some(Reply::status(503)));
    let path = db.dir.path().join("purge.toml");
    let text = common::config_text(&db.path, &receiver.url, "0 0 0 1 1 *")
        + "\n[[jobs]]\nname = \"purge\"\nkind = \"purge\"\nschedule = \"0 0 3 * * *\"\nkeep = \"1d\"\n";
    std::fs::write(
        &path,
        text.replace("drain_timeout = \"10s\"", "drain_timeout = \"100ms\""),
    )
    .unwrap();
    let output = binary()
        .args(["--config", path.to_str().unwrap(), "run-job", "purge"])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("purged=2"), "{stdout}");
    // The dead letter and the new pending event stay.
    let states: Vec<String> = {
        let app = db.app();
        let mut statement = app.prepare("SELECT state FROM outbox ORDER BY id").unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(states, ["dead", "pending"], "alert {alert}");
}

#[test]
fn signatures_verify_with_the_standard_webhooks_library_during_rotation() {
    let receiver = Receiver::start();
    let encode = |byte: u8| {
        format!(
            "whsec_{}",
            base64::engine::general_purpose::STANDARD.encode([byte; 32])
        )
    };
    let (new, old) = (encode(1), encode(2));
    let db = Db::new();
    let text = common::config_text(&db.path, &receiver.url, "0 0 0 1 1 *")
        .replace("[webhook]", &format!("[webhook]\nsecret = \"{new} {old}\""));
    let config = price_alertd::config::parse(&text, db.dir.path(), None).unwrap();
    db.add_alert("AAPL", "above", 1.0);
    db.set_quote("AAPL", 2.0);
    tick(&db, &config);
    deliver_pending(&db.pool(4), &config);

    let request = &receiver.received()[0];
    let mut headers = http::HeaderMap::new();
    for (name, value) in &request.headers {
        headers.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
    }
    assert_eq!(
        request
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        2
    );
    for secret in [&new, &old] {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(request.body.as_bytes(), &headers)
            .unwrap();
    }
    let stranger = standardwebhooks::Webhook::new(&encode(3)).unwrap();
    assert!(stranger.verify(request.body.as_bytes(), &headers).is_err());
    let mut tampered = request.body.clone();
    tampered.push(' ');
    assert!(
        standardwebhooks::Webhook::new(&new)
            .unwrap()
            .verify(tampered.as_bytes(), &headers)
            .is_err()
    );
}

#[test]
fn the_secret_never_reaches_logs_or_help() {
    let receiver = Receiver::start();
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([9u8; 32])
    );
    let db = Db::new();
    let secret_file = db.dir.path().join("webhook.secret");
    std::fs::write(&secret_file, &secret).unwrap();
    receiver.fail_with(&[500, 400]);
    db.add_alert("AAPL", "above", 1.0);
    db.set_quote("AAPL", 2.0);
    let path = db.dir.path().join("signed.toml");
    let text = common::config_text(&db.path, &receiver.url, "0 0 0 1 1 *").replace(
        "[webhook]",
        &format!("[webhook]\nsecret_file = \"{}\"", secret_file.display()),
    );
    std::fs::write(&path, text).unwrap();
    let encoded = secret.trim_start_matches("whsec_");
    for args in [
        vec!["run-job", "evaluate"],
        vec!["check-config"],
        vec!["--help"],
        vec!["run-job", "--help"],
    ] {
        let output = binary()
            .env("RUST_LOG", "trace")
            .args(["--config", path.to_str().unwrap()])
            .args(&args)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!all.contains(encoded), "{args:?} printed the secret");
    }
    assert_eq!(receiver.arrivals().len(), 2);
}

#[test]
fn credentials_in_the_url_go_as_basic_authorization_and_the_rest_of_the_url_as_given() {
    let receiver = Receiver::start();
    let url = format!(
        "{}/in?token=abc&x=1",
        receiver
            .url
            .replace("http://", "http://ops%40desk:p%C3%A4ss%3A1@")
    );
    let (db, config) = triggered(1, &url);
    let totals = deliver_pending(&db.pool(4), &config);
    assert_eq!(totals.delivered, 1);
    let received = receiver.received();
    let request = &received[0];
    let expected = base64::engine::general_purpose::STANDARD.encode("ops@desk:päss:1");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Basic {expected}").as_str())
    );
    assert_eq!(request.uri, "/events/in?token=abc&x=1");
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    assert_eq!(
        request.header("host"),
        Some(format!("127.0.0.1:{port}").as_str())
    );
    assert!(
        request
            .header("user-agent")
            .is_some_and(|agent| agent.starts_with("price-alertd/")),
        "{:?}",
        request.headers
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
}

/// A TLS server on loopback with a self-signed certificate for 127.0.0.1
/// (`tests/fixtures/self-signed.*`, made for this test only), which no root
/// the daemon trusts vouches for. Returns its port, and whether a handshake
/// ever completed (then a request could have been read).
fn untrusted_tls_server() -> (u16, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let certs = CertificateDer::pem_file_iter(fixtures.join("self-signed.crt"))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixtures.join("self-signed.key")).unwrap();
    let config = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshaken = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = handshaken.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut connection = rustls::ServerConnection::new(config.clone()).unwrap();
            while connection.is_handshaking() {
                if connection.complete_io(&mut stream).is_err() {
                    break;
                }
            }
            if !connection.is_handshaking() {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    (port, handshaken)
}

#[test]
fn tls_is_verified_a_certificate_no_root_vouches_for_gets_nothing() {
    let (port, handshaken) = untrusted_tls_server();
    let (db, config) = triggered(1, &format!("https://127.0.0.1:{port}/events"));
    let totals = deliver_pending(&db.pool(4), &config);
    // Retried as any failure to connect, then a dead letter (the test
    // schedule is short): never delivered.
    assert_eq!(
        (totals.delivered, totals.failed, totals.dead),
        (0, 2, 1),
        "{totals:?}"
    );
    assert!(
        !handshaken.load(std::sync::atomic::Ordering::SeqCst),
        "the client finished a handshake with an untrusted server"
    );
    let last_error: String = db
        .app()
        .query_row("SELECT last_error FROM outbox", [], |row| row.get(0))
        .unwrap();
    assert!(
        last_error.contains("invalid peer certificate: UnknownIssuer"),
        "{last_error}"
    );
}

#[test]
fn a_refused_certificate_is_the_daemons_one_line_not_the_tls_librarys_per_request() {
    const EVENTS: usize = 300;
    let (port, handshaken) = untrusted_tls_server();
    let db = Db::new();
    for n in 0..EVENTS {
        db.add_alert("AAPL", "above", n as f64);
    }
    db.set_quote("AAPL", 1_000_000.0);
    let text = common::config_text(
        &db,
        &format!("https://127.0.0.1:{port}/events"),
        "0 0 0 1 1 *",
    )
    .replace("timeout = \"5s\"", "timeout = \"5s\"\nconcurrency = 16");
    let path = db.write_config(&text);
    let output = binary()
        .args(["--config", path.to_str().unwrap(), "run-job", "evaluate"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = common::summary(&stdout);
    assert_eq!(summary["dead"], EVENTS.to_string(), "{stdout}\n{stderr}");
    assert!(!handshaken.load(std::sync::atomic::Ordering::SeqCst));
    // Every attempt failed on the certificate (3 per event): the daemon
    // says so once, and names the first 20 dead letters.
    let lines: Vec<&str> = stderr.lines().collect();
    let certificate = lines
        .iter()
        .filter(|line| line.contains("UnknownIssuer"))
        .count();
    let dead = lines
        .iter()
        .filter(|line| line.contains("event moved to the dead letters"))
        .count();
    eprintln!("{} lines for {EVENTS} events:\n{stderr}", lines.len());
    assert_eq!(dead, 20, "{stderr}");
    assert!(
        certificate <= 21,
        "{certificate} lines name the certificate"
    );
    assert!(lines.len() <= 30, "{} lines", lines.len());
}

/// The quote source's client verifies TLS as the webhook's does (one TLS
/// configuration for both): a source whose certificate no trusted root
/// vouches for is a failed fetch, and nothing is judged on it.
#[test]
fn tls_is_verified_for_the_quote_source_too() {
    let (port, handshaken) = untrusted_tls_server();
    let db = Db::new();
    let receiver = Receiver::start();
    db.add_alert("AAPL", "above", 1.0);
    db.set_quote("AAPL", 2.0);
    let text = common::config_text(&db, &receiver.url, "* * * * * *").replace(
        "[webhook]",
        &format!(
            "[prices]\nsource = \"http\"\nurl = \"https://127.0.0.1:{port}/quotes\"\n\n[webhook]"
        ),
    );
    let path = db.write_config(&text);
    let output = binary()
        .args(["--config", path.to_str().unwrap(), "run-job", "evaluate"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary = common::summary(&stdout);
    assert_eq!(summary["quote_errors"], "1", "{stdout}\n{stderr}");
    assert_eq!(summary["triggered"], "0", "{stdout}\n{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");
    assert!(
        !handshaken.load(std::sync::atomic::Ordering::SeqCst),
        "the quote source's client finished a handshake with an untrusted server"
    );
    assert!(receiver.received().is_empty());
}
