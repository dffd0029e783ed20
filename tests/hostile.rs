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
    let (calm, stormy) = (peak_rss_mib(&baseline), peak_rss_mib(&attacked));
    eprintln!("peak RSS: {calm} MiB with empty answers, {stormy} MiB with huge and endless ones");
    assert!(
        stormy <= calm + 32,
        "peak RSS {stormy} MiB against {calm} MiB with empty answers"
    );
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
    let (calm, stormy) = (peak_rss_mib(&baseline), peak_rss_mib(&attacked));
    eprintln!("peak RSS: {calm} MiB with usual answers, {stormy} MiB with huge and endless ones");
    // The documented bound is prices.max_response_bytes, 4 MiB by default.
    assert!(
        stormy <= calm + 16,
        "peak RSS {stormy} MiB against {calm} MiB with usual answers"
    );
}
