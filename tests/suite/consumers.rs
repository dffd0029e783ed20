//! What README tells webhook consumers works as written: its Python receiver
//! (the script itself, taken from README) verifies real deliveries with the
//! Standard Webhooks library from PyPI (`tests/run` installs it), during a
//! secret rotation, refuses a forged request, and handles an event the
//! daemon sends again (its bookkeeping lost) only once.

use crate::common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::{Db, cli, config_text, free_port, summary, wait_until};

/// The Python receiver as README shows it: the fenced block that starts
/// with `# receiver.py`.
fn readme_receiver() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("```python\n# receiver.py")
        .expect("README shows the Python receiver");
    let script = &readme[start + "```python\n".len()..];
    script[..script.find("```").unwrap()].to_owned()
}

/// The receiver, running; what it handled, line by line.
struct PythonReceiver {
    port: u16,
    child: Child,
    handled: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl PythonReceiver {
    fn start(dir: &std::path::Path, secret: &str) -> PythonReceiver {
        let script = dir.join("receiver.py");
        std::fs::write(&script, readme_receiver()).unwrap();
        let port = free_port();
        let mut child = Command::new("python3")
            .process_group(0)
            .arg(&script)
            .env("WEBHOOK_SECRET", secret)
            .env("PORT", port.to_string())
            .env("SEEN_DB", dir.join("seen.db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3");
        let handled: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
        {
            let (stdout, handled) = (child.stdout.take().unwrap(), handled.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    handled
                        .lock()
                        .unwrap()
                        .push(serde_json::from_str(&line).unwrap());
                }
            });
        }
        wait_until("the Python receiver to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        PythonReceiver {
            port,
            child,
            handled,
        }
    }

    fn handled_ids(&self) -> Vec<String> {
        let handled = self.handled.lock().unwrap();
        handled
            .iter()
            .map(|event| event["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// POSTs `body` with these headers; the status.
    fn post(&self, body: &str, headers: &[(&str, String)]) -> u16 {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut request = format!(
            "POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream.write_all(request.as_bytes()).unwrap();
        let mut status = String::new();
        BufReader::new(stream).read_line(&mut status).unwrap();
        status.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for PythonReceiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NEW: &str = "whsec_dGhpcyBpcyB0aGUgbmV3IHNlY3JldCBrZXk=";

#[test]
fn the_readme_python_receiver_verifies_real_deliveries_and_handles_each_id_once() {
    let db = Db::new();
    // The receiver still knows only the old secret; the daemon signs with
    // both while the secret rotates.
    let receiver = PythonReceiver::start(db.dir.path(), OLD);
    let url = format!("http://127.0.0.1:{}/events", receiver.port);
    let text = config_text(&db, &url, "0 0 * * * *").replace(
        "[webhook]\n",
        &format!("[webhook]\nsecret = \"{NEW} {OLD}\"\n"),
    );
    let config = db.write_config(&text);
    let run_job = || summary(&cli(&config, &["run-job", "evaluate"]));
    for target in [1.0, 2.0, 3.0] {
        db.add_alert("AAPL", "above", target);
    }
    db.set_quote("AAPL", 10.0);
    let first = run_job();
    assert_eq!(
        (first["triggered"].as_str(), first["delivered"].as_str()),
        ("3", "3")
    );
    let queued = db.texts("SELECT event_id FROM outbox ORDER BY id");
    wait_until("three events handled", || receiver.handled_ids().len() == 3);
    let mut handled = receiver.handled_ids();
    handled.sort();
    let mut expected = queued.clone();
    expected.sort();
    assert_eq!(handled, expected, "each verified, its body parsed");

    // The daemon's record of one delivery lost (as after a crash between the
    // receiver's answer and the bookkeeping): it sends it again, same id and
    // bytes, newly signed; the receiver acknowledges it and does not handle it
    // again.
    db.execute(
        "UPDATE outbox SET state = 'pending', delivered_at = NULL WHERE event_id = $1",
        &[common::Param::Text(queued[0].clone())],
    );
    let again = run_job();
    assert_eq!(
        (again["triggered"].as_str(), again["delivered"].as_str()),
        ("0", "1")
    );
    assert_eq!(
        db.scalar("SELECT count(*) FROM outbox WHERE state = 'delivered'"),
        3
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        receiver.handled_ids().len(),
        3,
        "the repeat was not handled again"
    );

    // A request signed with another secret, or not at all, is refused.
    let body = db.texts("SELECT body FROM outbox ORDER BY id").remove(1);
    let now = chrono::Utc::now().timestamp().to_string();
    let forged =
        price_alertd::config::Secret::parse("whsec_Zm9yZ2VkIGJ5IHNvbWVvbmUgZWxzZSBhdCBhbGw=")
            .unwrap();
    let signature =
        price_alertd::deliver::sign(&forged, "pa_forged_1_1", now.parse().unwrap(), &body);
    let headers = [
        ("webhook-id", "pa_forged_1_1".to_owned()),
        ("webhook-timestamp", now.clone()),
        ("webhook-signature", signature),
    ];
    assert_eq!(receiver.post(&body, &headers), 401);
    assert_eq!(receiver.post(&body, &headers[..2]), 401);
    assert_eq!(receiver.handled_ids().len(), 3);
}
