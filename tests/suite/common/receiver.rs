//! The webhook's receiver: a real loopback HTTP server that answers with
//! queued replies and records every arrival.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query.
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// How the receiver answers one request.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    /// A `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
    /// How long to wait before answering (a hanging receiver).
    pub delay: Duration,
    /// A body streamed with the answer (none if unset).
    pub flood: Option<Flood>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            retry_after: None,
            delay: Duration::ZERO,
            flood: None,
        }
    }

    pub fn hang(delay: Duration) -> Reply {
        Reply {
            delay,
            ..Reply::status(200)
        }
    }

    /// `status` with a huge (`Some(bytes)`) or endless (`None`) body.
    pub fn flood(status: u16, len: Option<u64>) -> Reply {
        Reply {
            flood: Some(Flood { head: "", len }),
            ..Reply::status(status)
        }
    }
}

/// Every request that reached the receiver, answered or not.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    /// Path and query.
    pub uri: String,
    pub webhook_id: String,
    pub body: String,
    pub status: u16,
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    arrivals: Vec<Arrival>,
    replies: VecDeque<Reply>,
    /// Used once `replies` is empty, for requests whose path starts with
    /// the prefix; the first that matches.
    by_path: Vec<(String, Reply)>,
    /// Used once `replies` is empty and no `by_path` matches; 200 at once if unset.
    default: Option<Reply>,
    /// Record arrivals without their bodies, and no `received`: for tests
    /// that send hundreds of thousands of events.
    lean: bool,
}

/// A real HTTP server (hyper) on a loopback port chosen at run time. It
/// answers each request with the next queued reply, else the default one,
/// else 200; it records every arrival, and the requests it answered with a
/// 2xx once the answer was sent.
pub struct Receiver {
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
    _server: HttpServer,
}

impl Receiver {
    pub fn start() -> Receiver {
        Receiver::start_on(0)
    }

    /// A receiver that records only each arrival's time, id and status.
    pub fn start_lean() -> Receiver {
        let receiver = Receiver::start_on(0);
        receiver.state.lock().unwrap().lean = true;
        receiver
    }

    /// Starts on a given loopback port (0: any free one).
    pub fn start_on(port: u16) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        let server = HttpServer::start(
            port,
            Arc::new(move |request| {
                let state = shared.clone();
                Box::pin(async move { answer(request, &state).await })
            }),
        );
        Receiver {
            url: format!("http://127.0.0.1:{}/events", server.port),
            state,
            _server: server,
        }
    }

    /// Answers the next requests with these statuses.
    pub fn fail_with(&self, statuses: &[u16]) {
        self.state
            .lock()
            .unwrap()
            .replies
            .extend(statuses.iter().map(|&status| Reply::status(status)));
    }

    /// Answers the next requests with these replies.
    pub fn reply_with(&self, replies: &[Reply]) {
        self.state.lock().unwrap().replies.extend(replies);
    }

    /// Answers every request without a queued reply with this one.
    pub fn set_default(&self, reply: Option<Reply>) {
        self.state.lock().unwrap().default = reply;
    }

    /// Answers every request whose path starts with `prefix`, and that
    /// finds no queued reply, with `reply`.
    pub fn set_default_for(&self, prefix: &str, reply: Reply) {
        self.state
            .lock()
            .unwrap()
            .by_path
            .push((prefix.to_owned(), reply));
    }

    /// The requests answered with a 2xx.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Every request that arrived, in order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.state.lock().unwrap().arrivals.clone()
    }

    /// Waits until `count` events reached it with a 2xx, each once (a lean
    /// receiver's too); their ids.
    pub fn wait_for_distinct(&self, count: usize) -> std::collections::HashSet<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let ids: std::collections::HashSet<String> = self
                .arrivals()
                .into_iter()
                .filter(|arrival| arrival.status == 200)
                .map(|arrival| arrival.webhook_id)
                .collect();
            if ids.len() >= count {
                assert_eq!(ids.len(), count, "more events than alerts");
                return ids;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} of {count} events delivered",
                ids.len()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    pub fn wait_for(&self, count: usize) -> Vec<Received> {
        wait_until(&format!("{count} deliveries"), || {
            self.state.lock().unwrap().received.len() >= count
        });
        self.received()
    }
}

async fn answer(request: Incoming, state: &Mutex<ReceiverState>) -> Answer {
    let reply = {
        let mut state = state.lock().unwrap();
        let by_path = state
            .by_path
            .iter()
            .find(|(prefix, _)| request.uri.starts_with(prefix.as_str()))
            .map(|(_, reply)| *reply);
        let reply = state
            .replies
            .pop_front()
            .or(by_path)
            .or(state.default)
            .unwrap_or(Reply::status(200));
        let webhook_id = request.header("webhook-id").unwrap_or_default().to_owned();
        let body = if state.lean {
            String::new()
        } else {
            request.body.clone()
        };
        state.arrivals.push(Arrival {
            at: Instant::now(),
            uri: request.uri.clone(),
            webhook_id,
            body,
            status: reply.status,
        });
        reply
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut state = state.lock().unwrap();
    if (200..300).contains(&reply.status) && !state.lean {
        state.received.push(Received {
            uri: request.uri,
            headers: request.headers,
            body: request.body,
        });
    }
    let headers = reply
        .retry_after
        .map(|seconds| ("retry-after", seconds.to_string()))
        .into_iter()
        .collect();
    Answer {
        status: reply.status,
        headers,
        body: reply.flood.map_or(Body::Text(String::new()), Body::Flood),
    }
}
