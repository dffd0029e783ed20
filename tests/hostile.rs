//! What a remote party sends never decides how much memory the daemon uses: a
//! webhook receiver or a quote source that answers with a huge or an endless
//! body. Real loopback servers stream those bodies; the real binary's
//! `run-job` reports its peak RSS.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{Db, Flood, QuoteServer, Receiver, Reply, cli, config_text, summary};

const MIB: u64 = 1 << 20;

fn run_job(config: &Path) -> HashMap<String, String> {
    let stdout = cli(config, &["run-job", "evaluate"]);
    eprintln!("{}", stdout.trim_end());
    summary(&stdout)
}

fn peak_rss_mib(summary: &HashMap<String, String>) -> u64 {
    summary["peak_rss_kib"].parse::<u64>().unwrap() / 1024
}

/// The run against the hostile party peaked at most `margin` MiB above the
/// same run against a polite one; prints both figures.
fn assert_peak_rss_within(
    polite: &HashMap<String, String>,
    hostile: &HashMap<String, String>,
    margin: u64,
) {
    let (calm, stormy) = (peak_rss_mib(polite), peak_rss_mib(hostile));
    eprintln!("peak RSS: {calm} MiB with usual answers, {stormy} MiB with huge and endless ones");
    assert!(
        stormy <= calm + margin,
        "peak RSS {stormy} MiB against {calm} MiB with usual answers"
    );
}

/// A database with `count` alerts that trigger on the next tick, and a config
/// delivering to `url` with 16 requests in flight.
fn triggering(count: usize, url: &str) -> (Db, std::path::PathBuf) {
    let db = Db::new();
    for n in 0..count {
        db.add_alert("AAPL", "above", n as f64);
    }
    db.set_quote("AAPL", 1_000_000.0);
    let text = config_text(&db.path, url, "0 0 0 1 1 *")
        .replace("timeout = \"5s\"", "timeout = \"5s\"\nconcurrency = 16");
    let path = db.write_config(&text);
    (db, path)
}

#[test]
fn a_receiver_answering_with_huge_or_endless_bodies_never_grows_memory() {
    // The same work against a receiver that answers 200 with an empty body.
    let polite = Receiver::start();
    let (_db, path) = triggering(52, &polite.url);
    let baseline = run_job(&path);
    assert_eq!(baseline["delivered"], "52");

    let hostile = Receiver::start();
    let mut replies = Vec::new();
    replies.extend([Reply::flood(200, Some(100 * MIB)); 16]);
    replies.extend([Reply::flood(200, None); 16]);
    replies.extend([Reply::flood(503, None); 16]);
    replies.extend([Reply::flood(400, None); 4]);
    hostile.reply_with(&replies);
    let (db, path) = triggering(52, &hostile.url);
    let attacked = run_job(&path);

    // The 503s were retried (and then answered politely); the 400s are dead
    // letters whose error quotes a bounded excerpt of the answer.
    assert_eq!(
        (
            attacked["delivered"].as_str(),
            attacked["dead"].as_str(),
            attacked["pending"].as_str()
        ),
        ("48", "4", "0"),
        "{attacked:?}"
    );
    let longest_error =
        db.scalar("SELECT max(length(last_error)) FROM outbox WHERE state = 'dead'");
    assert!(
        (1..=300).contains(&longest_error),
        "a dead letter's error holds {longest_error} characters"
    );
    // 16 requests in flight, each answered with 100 MB or more: read whole,
    // that is at least 1.6 GB. Only a small prefix of each may be read.
    assert_peak_rss_within(&baseline, &attacked, 32);
}

fn http_source(db: &Db, webhook: &str, quotes: &str) -> std::path::PathBuf {
    let text = config_text(&db.path, webhook, "0 0 0 1 1 *").replace(
        "[webhook]",
        &format!(
            "[prices]\nsource = \"http\"\nurl = \"{quotes}\"\nbatch_size = 2\ntimeout = \"3s\"\n[webhook]"
        ),
    );
    db.write_config(&text)
}

#[test]
fn a_quote_source_answering_with_huge_or_endless_bodies_is_a_failed_fetch() {
    let receiver = Receiver::start();
    let run = |floods: &[Flood]| {
        let db = Db::new();
        let source = QuoteServer::start();
        for ticker in ["A", "B", "C"] {
            db.add_alert(ticker, "above", 10.0);
            source.set(ticker, 20.0, Duration::from_secs(1));
        }
        for flood in floods {
            source.flood_next(*flood);
        }
        run_job(&http_source(&db, &receiver.url, &source.url))
    };
    let baseline = run(&[]);
    assert_eq!(baseline["triggered"], "3", "{baseline:?}");

    // Two batches ("A,B" and "C"): one answer is 100 MB with a
    // content-length, the other endless; both start as the expected JSON.
    let head = "{\"quotes\": [";
    let attacked = run(&[
        Flood {
            head,
            len: Some(100 * MIB),
        },
        Flood { head, len: None },
    ]);
    assert_eq!(
        (
            attacked["triggered"].as_str(),
            attacked["unavailable"].as_str(),
            attacked["quote_errors"].as_str()
        ),
        ("0", "3", "2"),
        "{attacked:?}"
    );
    // The documented bound is prices.max_response_bytes, 4 MiB by default.
    assert_peak_rss_within(&baseline, &attacked, 16);
}

/// Every secret a configuration can hold: in URLs (a password, a token in the
/// query), in static headers of the webhook and of the quote source, and the
/// signing secret, inline or in a file.
const SECRETS: [&str; 7] = [
    "webhook-pass-7f3a",
    "webhook-token-c21d",
    "webhook-header-9e4b",
    "quotes-pass-55d0",
    "quotes-token-a8e6",
    "quotes-header-3b17",
    "database-pass-1c9e",
];

/// Where the database's password goes in a test config.
#[derive(Debug, Clone, Copy, PartialEq)]
enum DatabasePassword {
    /// SQLite: none.
    None,
    /// PostgreSQL, in the URL.
    InUrl,
    /// PostgreSQL, in `database.password_file`.
    InFile,
}

#[test]
fn no_secret_a_config_can_hold_reaches_any_output_at_any_log_level() {
    use base64::Engine as _;
    let signing = base64::engine::general_purpose::STANDARD.encode([0x5au8; 32]);
    let receiver = Receiver::start();
    let source = QuoteServer::start();
    let webhook_url = receiver
        .url
        .replace("http://", &format!("http://user:{}@", SECRETS[0]))
        + &format!("?token={}", SECRETS[1]);
    let quotes_url = source
        .url
        .replace("http://", &format!("http://key:{}@", SECRETS[3]))
        + &format!("?apikey={}", SECRETS[4]);

    for (inline, password) in [
        (true, DatabasePassword::None),
        (false, DatabasePassword::InFile),
        (true, DatabasePassword::InUrl),
    ] {
        receiver.fail_with(&[500, 400]);
        source.fail_next(503, None);
        let db = match password {
            DatabasePassword::None => Db::new(),
            _ => Db::on(common::Engine::Postgresql),
        };
        db.add_alert("AAPL", "above", 1.0);
        db.add_alert("MSFT", "above", 1.0);
        source.set("AAPL", 2.0, Duration::from_secs(1));
        source.set("MSFT", 2.0, Duration::from_secs(1));
        let signing_key = if inline {
            format!("secret = \"whsec_{signing}\"")
        } else {
            let file = db.dir.path().join("webhook.secret");
            std::fs::write(&file, format!("whsec_{signing}\n")).unwrap();
            format!("secret_file = \"{}\"", file.display())
        };
        // The test cluster trusts loopback: the password is never asked for,
        // and must never be shown either.
        let database = match password {
            DatabasePassword::None => db.section(),
            DatabasePassword::InUrl => db.section().replace(
                "postgresql://postgres@",
                &format!("postgresql://postgres:{}@", SECRETS[6]),
            ),
            DatabasePassword::InFile => {
                let file = db.dir.path().join("database.password");
                std::fs::write(&file, format!("{}\n", SECRETS[6])).unwrap();
                format!("{}password_file = \"{}\"\n", db.section(), file.display())
            }
        };
        let text = config_text(&db, &webhook_url, "* * * * * *")
            .replace(&db.section(), &database)
            .replace(
                "headers = { \"X-EventSource-Event\" = \"price_alert\" }",
                &format!("headers = {{ \"X-Relay-Key\" = \"{}\" }}\n{signing_key}", SECRETS[2]),
            )
            .replace(
                "[webhook]",
                &format!(
                    "[prices]\nsource = \"http\"\nurl = \"{quotes_url}\"\nbatch_size = 1\nheaders = {{ \"X-Api-Key\" = \"{}\" }}\n\n[log]\nlevel = \"trace\"\nformat = \"{}\"\n\n[webhook]",
                    SECRETS[5],
                    if inline { "text" } else { "json" },
                ),
            );
        let path = db.write_config(&text);
        let mut outputs = Vec::new();
        for args in [
            &["check-config"][..],
            &["run-job", "evaluate"],
            &["outbox", "list"],
            &["outbox", "list", "--dead", "--json"],
            &["status"],
            &["status", "--json"],
            &["alerts", "list", "--json"],
            &["quotes", "list"],
            &["--help"],
        ] {
            let output = common::binary()
                .env("RUST_LOG", "trace")
                .args(["--config", path.to_str().unwrap()])
                .args(args)
                .output()
                .unwrap();
            outputs.push((
                format!("{args:?}"),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
            ));
        }
        // The daemon itself, at trace level, over a few ticks and a stop.
        let mut daemon = common::Daemon::start_logging(&path, "trace");
        common::wait_until("two ticks", || {
            daemon.log().matches("tick finished").count() >= 2
        });
        daemon.signal("TERM");
        assert_eq!(daemon.wait_exit(), Some(0));
        outputs.push(("run".to_owned(), daemon.log()));

        let dead = db.scalar("SELECT count(*) FROM outbox WHERE state = 'dead'");
        assert_eq!(dead, 1, "the 400 made a dead letter");
        for (command, output) in &outputs {
            assert!(!output.is_empty(), "{command} printed nothing");
            for secret in SECRETS.iter().copied().chain([signing.as_str()]) {
                assert!(
                    !output.contains(secret),
                    "{command} printed {secret:?}:\n{output}"
                );
            }
        }
        // The masked forms are what an operator sees.
        assert!(
            outputs[0].1.contains("user:***@127.0.0.1"),
            "{}",
            outputs[0].1
        );
        assert!(
            outputs[0].1.contains("key:***@127.0.0.1"),
            "{}",
            outputs[0].1
        );
        if password == DatabasePassword::InUrl {
            assert!(
                outputs[0].1.contains("postgres:***@127.0.0.1"),
                "{}",
                outputs[0].1
            );
        }
    }
}
