//! `database.url`: a PostgreSQL URL as libpq reads it, its TLS mode, its
//! password (from the URL, a file or `$PGPASSWORD`), and the connection as it
//! may be shown.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::errors::Report;
use super::fields::{resolve, secret_file};

/// A PostgreSQL server (`database.url`).
#[derive(Clone, PartialEq)]
pub struct PostgresConfig {
    /// The connection URL without `sslmode`, `sslrootcert` and `options`,
    /// and without a password; the password is in `password`.
    pub url: String,
    /// The connection as it will be made, the password masked: the user
    /// the server sees, the host, the database and the TLS mode. For logs,
    /// `check-config` and `status`.
    pub display: String,
    /// From the URL, `database.password_file`, or `$PGPASSWORD`.
    pub password: Option<Password>,
    pub tls: PostgresTls,
    /// `sslrootcert`: trust only this CA (PEM) instead of the system's roots.
    pub root_certificate: Option<PathBuf>,
    /// The URL's `options` parameter, which is not used: the daemon sets
    /// the session's options itself (`lock_timeout`). Shown by `check-config`.
    pub dropped_options: Option<String>,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.display)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .field("root_certificate", &self.root_certificate)
            .finish()
    }
}

/// `sslmode`, as libpq reads it, except that every TLS connection is
/// verified: the daemon never talks TLS to a server whose certificate no
/// trusted root vouches for (the system's roots, or `sslrootcert`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostgresTls {
    /// Never TLS.
    Disable,
    /// Without TLS first; with TLS (verified as `verify-full`) if the
    /// server refuses a connection without it.
    Allow,
    /// TLS (verified as `verify-full`) if the server offers it, else
    /// without: libpq's default. Anyone on the path can strip it.
    Prefer,
    /// TLS or no connection; the certificate verified as `verify-full`.
    Require,
    /// TLS or no connection; the certificate's chain verified, not its name.
    VerifyCa,
    /// TLS or no connection; the chain and the server's name verified.
    VerifyFull,
}

impl PostgresTls {
    /// The mode as `sslmode` names it.
    pub fn name(self) -> &'static str {
        match self {
            PostgresTls::Disable => "disable",
            PostgresTls::Allow => "allow",
            PostgresTls::Prefer => "prefer",
            PostgresTls::Require => "require",
            PostgresTls::VerifyCa => "verify-ca",
            PostgresTls::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Option<PostgresTls> {
        [
            PostgresTls::Disable,
            PostgresTls::Allow,
            PostgresTls::Prefer,
            PostgresTls::Require,
            PostgresTls::VerifyCa,
            PostgresTls::VerifyFull,
        ]
        .into_iter()
        .find(|mode| mode.name() == text)
    }

    /// Whether a connection without TLS is refused.
    pub fn required(self) -> bool {
        matches!(
            self,
            PostgresTls::Require | PostgresTls::VerifyCa | PostgresTls::VerifyFull
        )
    }
}

/// A database password. Never in a log line or `Debug` output.
#[derive(Clone, PartialEq)]
pub struct Password(String);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// `database.url` and `database.password_file`. The URL is checked here, so
/// that `check-config` reports it; `sslmode`, `sslrootcert` and `options` are
/// taken out of it (the daemon's TLS and session options are its own), and
/// so is the password.
pub(super) fn postgres(
    url: &Spanned<String>,
    password_file: Option<&Spanned<String>>,
    base: &Path,
    report: &mut impl Report,
    warn: &mut impl Report,
) -> PostgresConfig {
    let mut config = PostgresConfig {
        url: String::new(),
        display: String::new(),
        password: None,
        tls: PostgresTls::Prefer,
        root_certificate: None,
        dropped_options: None,
    };
    let mut complain = |message: String| report("database.url", url.span(), message);
    let Some(parts) = PostgresUrl::split(url.get_ref().trim()) else {
        complain("must be a postgres:// or postgresql:// URL".to_owned());
        return config;
    };
    let kept = postgres_options(parts.query, base, &mut config, &mut complain);
    config.url = parts.rebuilt(&kept);
    match config.url.parse::<postgres::Config>() {
        Ok(client) => config.display = shown(&client, parts.password.is_some(), &config, &kept),
        Err(error) => complain(format!(
            "is not a PostgreSQL URL the client understands: {error}"
        )),
    }
    if config.root_certificate.is_some() && config.tls == PostgresTls::Disable {
        complain("sslrootcert is set but sslmode=disable turns TLS off".to_owned());
    }
    config.password = postgres_password(parts.password, password_file, base, report, warn);
    config
}

/// The connection as the client will make it, for people: the user the
/// server sees (a `user` parameter names it, not the URL's user part), the
/// hosts, the database, the TLS mode, and the other parameters; a password
/// masked.
fn shown(
    client: &postgres::Config,
    has_password: bool,
    config: &PostgresConfig,
    kept: &[&str],
) -> String {
    use postgres::config::Host;
    let user = client.get_user().unwrap_or("");
    let credentials = match (user.is_empty(), has_password) {
        (true, _) => String::new(),
        (false, false) => format!("{user}@"),
        (false, true) => format!("{user}:***@"),
    };
    let ports = client.get_ports();
    let mut sockets = Vec::new();
    let hosts: Vec<String> = client
        .get_hosts()
        .iter()
        .enumerate()
        .filter_map(|(at, host)| {
            let port = ports.get(at).or(ports.first()).copied().unwrap_or(5432);
            match host {
                Host::Tcp(name) if name.contains(':') => Some(format!("[{name}]:{port}")),
                Host::Tcp(name) => Some(format!("{name}:{port}")),
                Host::Unix(path) => {
                    sockets.push(format!("host={}", path.display()));
                    None
                }
            }
        })
        .collect();
    let mut parameters = vec![format!("sslmode={}", config.tls.name())];
    if let Some(root) = &config.root_certificate {
        parameters.push(format!("sslrootcert={}", root.display()));
    }
    parameters.extend(sockets);
    parameters.extend(
        kept.iter()
            .filter(|pair| !matches!(parameter_name(pair), "user" | "host" | "port" | "dbname"))
            .map(|pair| pair.to_string()),
    );
    format!(
        "postgresql://{credentials}{}/{}?{}",
        hosts.join(","),
        client.get_dbname().unwrap_or(user),
        parameters.join("&")
    )
}

fn parameter_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(key, _)| key)
}

/// A `postgres://` URL's parts, as written.
struct PostgresUrl<'a> {
    user: &'a str,
    password: Option<&'a str>,
    hosts: &'a str,
    path: &'a str,
    query: &'a str,
}

impl<'a> PostgresUrl<'a> {
    fn split(text: &'a str) -> Option<PostgresUrl<'a>> {
        let rest = text
            .strip_prefix("postgres://")
            .or_else(|| text.strip_prefix("postgresql://"))?;
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
        let (user_info, hosts) = authority.rsplit_once('@').unwrap_or(("", authority));
        let (user, password) = match user_info.split_once(':') {
            Some((user, password)) => (user, Some(password)),
            None => (user_info, None),
        };
        Some(PostgresUrl {
            user,
            password,
            hosts,
            path,
            query,
        })
    }

    /// The URL the client connects with: no password, only the `kept`
    /// parameters.
    fn rebuilt(&self, kept: &[&str]) -> String {
        let (user, hosts) = (self.user, self.hosts);
        let query = if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        };
        let user_part = if user.is_empty() {
            String::new()
        } else {
            format!("{user}@")
        };
        let path = if self.path.is_empty() {
            String::new()
        } else {
            format!("/{}", self.path)
        };
        format!("postgresql://{user_part}{hosts}{path}{query}")
    }
}

/// Takes `sslmode`, `sslrootcert` and `options` from a URL's query into
/// `config`, refuses a `password` parameter, and returns the other
/// parameters, for the client.
fn postgres_options<'a>(
    query: &'a str,
    base: &Path,
    config: &mut PostgresConfig,
    complain: &mut impl FnMut(String),
) -> Vec<&'a str> {
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_encoding::percent_decode_str(value).decode_utf8_lossy();
        match key {
            "sslmode" => {
                config.tls = PostgresTls::parse(value.as_ref()).unwrap_or_else(|| {
                    complain(format!(
                        "sslmode={value} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                    ));
                    PostgresTls::VerifyFull
                })
            }
            "sslrootcert" => config.root_certificate = Some(resolve(Path::new(value.as_ref()), base)),
            "options" => config.dropped_options = Some(value.into_owned()),
            "password" => complain(
                "give the password in the URL's user part, in database.password_file or in $PGPASSWORD, not as a parameter".to_owned(),
            ),
            _ => kept.push(pair),
        }
    }
    kept
}

/// The password: from the URL, `database.password_file` (not both) or
/// `$PGPASSWORD`.
fn postgres_password(
    in_url: Option<&str>,
    password_file: Option<&Spanned<String>>,
    base: &Path,
    report: &mut impl Report,
    warn: &mut impl Report,
) -> Option<Password> {
    match (in_url, password_file) {
        (Some(_), Some(file)) => {
            report(
                "database.password_file",
                file.span(),
                "the URL has a password already: give it in one place".to_owned(),
            );
            None
        }
        (Some(password), None) => Some(Password(
            percent_encoding::percent_decode_str(password)
                .decode_utf8_lossy()
                .into_owned(),
        )),
        (None, Some(file)) => {
            let path = resolve(Path::new(file.get_ref()), base);
            let text = secret_file(&path, "database.password_file", file.span(), report, warn)?;
            Some(Password(text.trim_end_matches(['\n', '\r']).to_owned()))
        }
        (None, None) => std::env::var("PGPASSWORD").ok().map(Password),
    }
}
