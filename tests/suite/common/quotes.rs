//! A real HTTP quote source on loopback.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

#[derive(Default)]
struct QuoteState {
    /// ticker → (price, time) as JSON values, so tests can serve bad ones.
    quotes: HashMap<String, (serde_json::Value, serde_json::Value)>,
    /// Statuses (with a Retry-After) for the next requests; 200 with quotes after.
    failures: VecDeque<(u16, Option<u64>)>,
    /// Bodies for the next requests, after `failures`.
    floods: VecDeque<Flood>,
    /// The `tickers` parameter of every request.
    requests: Vec<String>,
    /// How long to wait before answering a request for each ticker.
    delays: HashMap<String, Duration>,
    /// Tickers given twice in an answer, the second time at this price.
    twice: HashMap<String, f64>,
    /// `Location`s of 302 answers to the next requests.
    redirects: VecDeque<String>,
    most_in_flight: usize,
}

/// A real HTTP quote source on loopback, answering `GET /quotes?tickers=A,B`
/// with `{"quotes": [...]}` for the tickers it knows.
pub struct QuoteServer {
    pub url: String,
    state: Arc<Mutex<QuoteState>>,
    _server: HttpServer,
}

impl QuoteServer {
    pub fn start() -> QuoteServer {
        let state = Arc::new(Mutex::new(QuoteState::default()));
        let shared = state.clone();
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let server = HttpServer::start(
            0,
            Arc::new(move |request: Incoming| {
                let state = shared.clone();
                let in_flight = in_flight.clone();
                Box::pin(async move {
                    use std::sync::atomic::Ordering;
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    let (answer, delay) = {
                        let mut state = state.lock().unwrap();
                        state.most_in_flight = state.most_in_flight.max(now);
                        QuoteServer::answer(&mut state, &request)
                    };
                    tokio::time::sleep(delay).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    answer
                })
            }),
        );
        QuoteServer {
            url: format!("http://127.0.0.1:{}/quotes", server.port),
            state,
            _server: server,
        }
    }

    /// The answer to one request, and how long to wait before giving it.
    fn answer(state: &mut QuoteState, request: &Incoming) -> (Answer, Duration) {
        let tickers = request
            .uri
            .split_once("tickers=")
            .map(|(_, list)| list.replace("%2C", ","))
            .unwrap_or_default();
        state.requests.push(tickers.clone());
        let delay = tickers
            .split(',')
            .filter_map(|ticker| state.delays.get(ticker))
            .max()
            .copied()
            .unwrap_or_default();
        if let Some((status, retry_after)) = state.failures.pop_front() {
            let headers = retry_after
                .map(|seconds| ("retry-after", seconds.to_string()))
                .into_iter()
                .collect();
            let answer = Answer {
                status,
                headers,
                body: Body::Text("{}".into()),
            };
            return (answer, delay);
        }
        if let Some(location) = state.redirects.pop_front() {
            let answer = Answer {
                status: 302,
                headers: vec![("location", location)],
                body: Body::Text(String::new()),
            };
            return (answer, delay);
        }
        if let Some(flood) = state.floods.pop_front() {
            let answer = Answer {
                status: 200,
                headers: vec![("content-type", "application/json".into())],
                body: Body::Flood(flood),
            };
            return (answer, delay);
        }
        let mut quotes: Vec<serde_json::Value> = Vec::new();
        for ticker in tickers.split(',') {
            let Some((price, time)) = state.quotes.get(ticker) else {
                continue;
            };
            quotes.push(serde_json::json!({"ticker": ticker, "price": price, "time": time}));
            if let Some(again) = state.twice.get(ticker) {
                quotes.push(serde_json::json!({"ticker": ticker, "price": again, "time": time}));
            }
        }
        let answer = Answer {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: Body::Text(serde_json::json!({"quotes": quotes}).to_string()),
        };
        (answer, delay)
    }

    /// Answers every request that asks for `ticker` only after `delay`.
    pub fn delay(&self, ticker: &str, delay: Duration) {
        self.state
            .lock()
            .unwrap()
            .delays
            .insert(ticker.to_owned(), delay);
    }

    /// Gives `ticker` twice in each answer, the second time at `price`.
    pub fn twice(&self, ticker: &str, price: f64) {
        self.state
            .lock()
            .unwrap()
            .twice
            .insert(ticker.to_owned(), price);
    }

    /// Answers the next request with a 302 to `location`.
    pub fn redirect_next(&self, location: &str) {
        self.state
            .lock()
            .unwrap()
            .redirects
            .push_back(location.to_owned());
    }

    /// The most requests it answered at once.
    pub fn most_in_flight(&self) -> usize {
        self.state.lock().unwrap().most_in_flight
    }

    /// Serves `ticker` at `price`, timed `age` ago.
    pub fn set(&self, ticker: &str, price: f64, age: Duration) {
        let time = (chrono::Utc::now() - chrono::Duration::from_std(age).unwrap()).to_rfc3339();
        self.set_raw(ticker, serde_json::json!(price), serde_json::json!(time));
    }

    pub fn set_raw(&self, ticker: &str, price: serde_json::Value, time: serde_json::Value) {
        self.state
            .lock()
            .unwrap()
            .quotes
            .insert(ticker.to_owned(), (price, time));
    }

    pub fn fail_next(&self, status: u16, retry_after: Option<u64>) {
        self.state
            .lock()
            .unwrap()
            .failures
            .push_back((status, retry_after));
    }

    /// Answers the next request with 200 and this body.
    pub fn flood_next(&self, flood: Flood) {
        self.state.lock().unwrap().floods.push_back(flood);
    }

    /// The `tickers` parameter of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }
}
