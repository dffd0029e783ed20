//! A network that goes silent: a TCP proxy on loopback in front of the
//! suite's PostgreSQL cluster, on a port of the test's own, whose traffic
//! the test silences with nftables (every packet between a daemon and the
//! proxy dropped, both ways, nothing closed: a partition, a dead NAT entry,
//! a proxy that stops forwarding), for all of its connections or only the
//! listeners', and heals. The proxy's leg to the server stays up, so the
//! server sees its sessions idle, as it would.

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One connection through the proxy.
struct Link {
    /// The daemon's end's port.
    client_port: u16,
    /// The proxy's port towards the server: the server's `client_port`.
    upstream_port: u16,
    /// Whether the daemon sent `LISTEN` on it.
    listens: Arc<AtomicBool>,
}

pub struct Proxy {
    pub port: u16,
    links: Arc<Mutex<Vec<Link>>>,
    stop: Arc<AtomicBool>,
    /// The nftables table of this proxy's rules.
    table: String,
}

/// Runs `nft` with `args`; panics if it fails.
fn nft(args: &[&str]) {
    let output = Command::new("nft")
        .args(args)
        .output()
        .expect("nft runs (tests/run installs nftables)");
    assert!(
        output.status.success(),
        "nft {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Proxy {
    /// A proxy to the server on `upstream` (a loopback port).
    pub fn start(upstream: u16) -> Proxy {
        static TABLES: AtomicU64 = AtomicU64::new(0);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let links = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let table = format!(
            "price_alertd_test_{}_{}",
            std::process::id(),
            TABLES.fetch_add(1, Ordering::Relaxed)
        );
        nft(&["add", "table", "inet", &table]);
        nft(&[
            "add",
            "chain",
            "inet",
            &table,
            "input",
            "{ type filter hook input priority 0; policy accept; }",
        ]);
        let (accepted, stopping) = (links.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopping.load(Ordering::Relaxed) {
                let Ok((client, address)) = listener.accept() else {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                    continue;
                };
                client.set_nonblocking(false).unwrap();
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let listens = Arc::new(AtomicBool::new(false));
                accepted.lock().unwrap().push(Link {
                    client_port: address.port(),
                    upstream_port: server.local_addr().unwrap().port(),
                    listens: listens.clone(),
                });
                forward(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    Some(listens),
                );
                forward(server, client, None);
            }
        });
        Proxy {
            port,
            links,
            stop,
            table,
        }
    }

    /// `url` (a test database's) through the proxy.
    pub fn url(&self, url: &str, upstream: u16) -> String {
        url.replace(&format!(":{upstream}/"), &format!(":{}/", self.port))
    }

    /// Silences every connection through the proxy, and any made later.
    pub fn silence(&self) {
        let port = self.port.to_string();
        for end in ["dport", "sport"] {
            self.drop_where(&[end, &port]);
        }
    }

    /// Drops every packet between two ends on 127.0.0.1 that `tcp
    /// <matches>` (nftables' words). The address is part of the match: the
    /// proxy's port is its own on 127.0.0.1 only, and another listener on
    /// 127.0.0.2 (the browser test's second network) may have the same
    /// number, whose packets a rule of ports alone would drop.
    fn drop_where(&self, matches: &[&str]) {
        let mut rule = vec![
            "add",
            "rule",
            "inet",
            &self.table,
            "input",
            "ip",
            "saddr",
            "127.0.0.1",
            "ip",
            "daddr",
            "127.0.0.1",
            "tcp",
        ];
        rule.extend_from_slice(matches);
        rule.push("drop");
        nft(&rule);
    }

    /// Silences the connections a daemon listens on (`LISTEN`); returns
    /// how many.
    pub fn silence_listeners(&self) -> usize {
        let links = self.links.lock().unwrap();
        let listening: Vec<&Link> = links
            .iter()
            .filter(|link| link.listens.load(Ordering::Relaxed))
            .collect();
        let port = self.port.to_string();
        for link in &listening {
            let client = link.client_port.to_string();
            for (from, to) in [(&client, &port), (&port, &client)] {
                self.drop_where(&["sport", from, "tcp", "dport", to]);
            }
        }
        listening.len()
    }

    /// Lets every packet through again.
    pub fn heal(&self) {
        nft(&["flush", "chain", "inet", &self.table, "input"]);
    }

    /// The server's `client_port`s of the connections through the proxy:
    /// its sessions, as `pg_stat_activity` shows them.
    pub fn server_side_ports(&self) -> Vec<i32> {
        self.links
            .lock()
            .unwrap()
            .iter()
            .map(|link| i32::from(link.upstream_port))
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .output();
    }
}

/// Copies `from` to `to` on a thread of its own until either end closes;
/// marks `listens` once the bytes carry a `LISTEN`.
fn forward(mut from: TcpStream, mut to: TcpStream, listens: Option<Arc<AtomicBool>>) {
    use std::io::{Read as _, Write as _};
    std::thread::spawn(move || {
        let mut buffer = [0u8; 16 * 1024];
        loop {
            let read = match from.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            if let Some(listens) = &listens
                && buffer[..read].windows(7).any(|window| window == b"LISTEN ")
            {
                listens.store(true, Ordering::Relaxed);
            }
            if to.write_all(&buffer[..read]).is_err() {
                break;
            }
        }
        let _ = from.shutdown(std::net::Shutdown::Both);
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}
