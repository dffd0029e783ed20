//! What a remote party sends never decides how much memory the daemon uses: a
//! webhook receiver or a quote source that answers with a huge or an endless
//! body. Real loopback servers stream those bodies; the real binary's
//! `run-job` reports its peak RSS.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::{
    Daemon, Db, Flood, QuoteServer, Receiver, Reply, cli, config_text, free_port, scrape, summary,
};

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

/// A process's resident memory, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

/// Lets this process open `files` descriptors, if its hard limit allows.
fn allow_open_files(files: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(files.max(limit.rlim_cur));
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= files,
        "at most {} open files",
        limit.rlim_cur
    );
}

/// Whether `/healthz` answers 200 within 2 s, on a connection of its own.
fn healthz_answers(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

#[test]
fn thousands_of_unfinished_metrics_requests_hold_bounded_memory() {
    use std::io::Write as _;
    const CONNECTIONS: usize = 4_000;
    allow_open_files(CONNECTIONS as u64 + 512);
    let db = Db::new();
    let receiver = Receiver::start();
    let port = free_port();
    let text = config_text(&db.path, &receiver.url, "0 0 0 1 1 *")
        + &format!("\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    let daemon = Daemon::start_quiet(&db.write_config(&text));
    assert_eq!(scrape(port, "/metrics").0, 200);
    let before = rss_mib(daemon.child.id());

    // Each connection starts a request whose header never ends: up to
    // 400 KB of it, as much as the daemon takes before it answers or closes.
    let head = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}",
        "a".repeat(400_000)
    );
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            continue;
        };
        stream.set_nonblocking(true).unwrap();
        let _ = stream.write(head.as_bytes());
        held.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_mib(daemon.child.id());
    eprintln!(
        "daemon RSS: {before} MiB before, {during} MiB with {} unfinished requests",
        held.len()
    );
    assert!(
        held.len() >= CONNECTIONS / 2,
        "{} connections made",
        held.len()
    );
    // The documented bound: 256 connections of at most 16 KiB each.
    assert!(during <= before + 16, "{before} MiB → {during} MiB");

    // The endpoint serves again once the unfinished ones time out (5 s),
    // though the attacker keeps its side of every connection open.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let served = healthz_answers(port);
        if served {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the endpoint never served again"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held);
    assert!(rss_mib(daemon.child.id()) <= before + 16);
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

/// Which end of its bounds a key takes.
#[derive(Debug, Clone, Copy)]
enum End {
    Least,
    Most,
}

/// A configuration with every key that takes a duration or a count at one
/// end of its bounds, the HTTP quote source on.
fn every_key(db: &Db, webhook: &str, quotes: &str, end: End) -> String {
    let value = |least: &str, most: &str| match end {
        End::Least => least.to_owned(),
        End::Most => most.to_owned(),
    };
    format!(
        r#"
[database]
path = "{path}"
busy_timeout = "{busy_timeout}"
max_connections = {max_connections}

[evaluator]
threads = {threads}
claim_batch = {claim_batch}

[prices]
source = "http"
url = "{quotes}"
max_age = "{max_age}"
batch_size = {batch_size}
concurrency = {prices_concurrency}
timeout = "{prices_timeout}"
max_response_bytes = {max_response_bytes}

[webhook]
url = "{webhook}"
timeout = "{timeout}"
connect_timeout = "{connect_timeout}"
concurrency = {concurrency}
retry_schedule = ["{retry}"]
drain_timeout = "{drain_timeout}"

[[jobs]]
name = "evaluate"
kind = "evaluate"
schedule = "0 0 0 1 1 *"

[[jobs]]
name = "purge"
kind = "purge"
schedule = "0 0 0 1 1 *"
keep = "{keep}"
"#,
        path = db.path.display(),
        busy_timeout = value("1ms", "1h"),
        max_connections = value("6", "1000"),
        threads = value("1", "256"),
        claim_batch = value("1", "100000"),
        max_age = value("1s", "365d"),
        batch_size = value("1", "10000"),
        prices_concurrency = value("1", "64"),
        prices_timeout = value("1ms", "10m"),
        max_response_bytes = value("1024", "268435456"),
        timeout = value("1ms", "10m"),
        connect_timeout = value("1ms", "10m"),
        concurrency = value("1", "1024"),
        retry = value("1ms", "7d"),
        drain_timeout = value("1ms", "1h"),
        keep = value("1s", "3650d"),
    )
}

/// Each key at its least and its most: check-config accepts it, and every
/// command that uses it runs (a tick and its delivery, a purge, the daemon
/// started and stopped by SIGTERM) without a panic. Beyond its bounds each
/// key is refused by check-config, with the bounds: a value that passes the
/// check never fails the run.
#[test]
fn every_key_at_its_extremes_is_refused_at_check_time_or_runs() {
    let receiver = Receiver::start();
    let source = QuoteServer::start();
    source.set("AAPL", 201.0, Duration::ZERO);
    for name in [End::Least, End::Most] {
        let db = Db::new();
        db.add_alert("AAPL", "above", 200.0);
        let path = db.write_config(&every_key(&db, &receiver.url, &source.url, name));
        let no_panic = |output: &std::process::Output, what: &str| {
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(!stderr.contains("panicked"), "{name:?}: {what}: {stderr}");
            assert!(
                matches!(output.status.code(), Some(0 | 1)),
                "{name:?}: {what}: {:?} {stderr}",
                output.status
            );
        };
        let run = |args: &[&str]| {
            common::binary()
                .args(["--config", path.to_str().unwrap()])
                .args(args)
                .output()
                .unwrap()
        };
        let checked = run(&["check-config"]);
        assert!(checked.status.success(), "{name:?}: {checked:?}");
        no_panic(&run(&["run-job", "evaluate"]), "run-job evaluate");
        no_panic(&run(&["run-job", "purge"]), "run-job purge");
        let mut daemon = common::Daemon::start_quiet(&path);
        daemon.signal("TERM");
        assert_eq!(daemon.wait_exit(), Some(0), "{name:?}: {}", daemon.log());
        assert!(!daemon.log().contains("panicked"), "{name:?}");
    }

    let db = Db::new();
    let base = every_key(&db, &receiver.url, &source.url, End::Least);
    for (section, key, least, beyond) in [
        ("database", "busy_timeout", "\"1ms\"", "\"25d\""),
        (
            "database",
            "busy_timeout",
            "\"1ms\"",
            "\"18446744073709551615s\"",
        ),
        ("database", "max_connections", "6", "5"),
        ("evaluator", "threads", "1", "257"),
        ("evaluator", "claim_batch", "1", "0"),
        ("prices", "max_age", "\"1s\"", "\"366d\""),
        ("prices", "batch_size", "1", "10001"),
        ("prices", "concurrency", "1", "65"),
        ("prices", "timeout", "\"1ms\"", "\"11m\""),
        ("prices", "max_response_bytes", "1024", "268435457"),
        ("webhook", "timeout", "\"1ms\"", "\"11m\""),
        ("webhook", "connect_timeout", "\"1ms\"", "\"0s\""),
        ("webhook", "concurrency", "1", "1025"),
        ("webhook", "retry_schedule", "[\"1ms\"]", "[\"8d\"]"),
        (
            "webhook",
            "drain_timeout",
            "\"1ms\"",
            "\"18446744073709551615s\"",
        ),
        ("[jobs]", "keep", "\"1s\"", "\"1000000000d\""),
    ] {
        // The key in its own section (`timeout` and `concurrency` are in two).
        let start = base.find(&format!("[{section}]")).unwrap();
        let (before, after) = base.split_at(start);
        let text = before.to_owned()
            + &after.replacen(
                &format!("\n{key} = {least}\n"),
                &format!("\n{key} = {beyond}\n"),
                1,
            );
        assert_ne!(text, base, "{section}.{key}");
        let path = db.write_config(&text);
        let output = common::binary()
            .args(["--config", path.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let what = format!("{section}.{key} = {beyond}");
        assert_eq!(output.status.code(), Some(78), "{what}: {stderr}");
        let named = match section {
            "[jobs]" => format!("jobs[1].{key}"),
            section => format!("{section}.{key}"),
        };
        assert!(stderr.contains(&named), "{what}: {stderr}");
        assert!(
            stderr.contains("out of bounds") || stderr.contains("must be between"),
            "{what}: {stderr}"
        );
    }
}

/// A file holding a secret is a regular file read up to a bound, and one
/// that every user may read is accepted with a warning; the headers the
/// daemon sets itself cannot be configured.
#[test]
fn secret_files_are_read_with_a_bound_and_reserved_headers_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let db = Db::new();
    let check = |webhook_lines: &str| {
        let text = config_text(&db, "http://127.0.0.1:9/events", "0 0 0 1 1 *")
            .replace("[webhook]", &format!("[webhook]\n{webhook_lines}"));
        let path = db.write_config(&text);
        common::binary()
            .args(["--config", path.to_str().unwrap(), "check-config"])
            .output()
            .unwrap()
    };
    let secret = format!(
        "whsec_{}\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 32])
    );
    let file = db.dir.path().join("secret");
    std::fs::write(&file, &secret).unwrap();
    let secret_file = format!("secret_file = \"{}\"", file.display());

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let quiet = check(&secret_file);
    assert!(quiet.status.success(), "{quiet:?}");
    assert!(
        String::from_utf8_lossy(&quiet.stderr).is_empty(),
        "{quiet:?}"
    );

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let warned = check(&secret_file);
    assert!(warned.status.success(), "{warned:?}");
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert!(
        stderr.contains("webhook.secret_file") && stderr.contains("every user"),
        "{stderr}"
    );
    assert!(!stderr.contains("whsec_"), "{stderr}");

    for (path, reason) in [
        ("/dev/zero", "not a regular file"),
        ("/dev/stdin", "not a regular file"),
    ] {
        let output = check(&format!("secret_file = \"{path}\""));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{path}: {stderr}");
        assert!(stderr.contains(reason), "{path}: {stderr}");
    }
    let large = db.dir.path().join("large");
    std::fs::write(&large, secret.repeat(2000)).unwrap();
    let output = check(&format!("secret_file = \"{}\"", large.display()));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("more than 64 KiB"), "{stderr}");

    for header in [
        "webhook-id",
        "Webhook-Signature",
        "webhook-timestamp",
        "Host",
        "Content-Length",
        "Transfer-Encoding",
    ] {
        let text = config_text(&db, "http://127.0.0.1:9/events", "0 0 0 1 1 *").replace(
            "headers = { \"X-EventSource-Event\" = \"price_alert\" }",
            &format!("headers = {{ \"{header}\" = \"x\" }}"),
        );
        let path = db.write_config(&text);
        let output = common::binary()
            .args(["--config", path.to_str().unwrap(), "check-config"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{header}: {stderr}");
        assert!(
            stderr.contains("set by price-alertd itself"),
            "{header}: {stderr}"
        );
    }
}
