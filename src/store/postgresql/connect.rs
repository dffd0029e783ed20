//! Reaching the server: the client's settings from the config, the password,
//! and TLS as `sslmode` asks for it. Every connection the daemon makes (the
//! pool's, the listener's, an operator's command's, `check-config`'s) is
//! opened here, so none of them can fall back to plain text where the mode
//! asks for TLS.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use postgres::Client;
use postgres::config::SslMode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::super::{Unusable, failure};
use crate::config::{PostgresConfig, PostgresTls};
use crate::lock::lock;

/// Opens connections: for r2d2, the listener and one-off commands.
#[derive(Clone)]
pub struct Manager {
    config: postgres::Config,
    tls: Tls,
    /// What every connection runs first.
    session: String,
    /// Whether the URL sets `tcp_user_timeout` (see `Silence`).
    url_times_out: bool,
    /// Why the last attempt to connect failed, until one succeeds: r2d2's
    /// "timed out waiting for connection" gives it to one waiter only.
    last_failure: Arc<std::sync::Mutex<Option<String>>>,
}

/// How a connection uses TLS; `config`'s `ssl_mode` says whether it must.
#[derive(Clone)]
enum Tls {
    /// Never (`disable`).
    None,
    /// Without first; with it when the server refuses that (`allow`).
    Allow(tokio_postgres_rustls::MakeRustlsConnect),
    /// As `config`'s `ssl_mode` asks (`prefer`, `require`, `verify-*`).
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Manager {
    /// A connection as the mode allows: `allow` tries without TLS first and
    /// with it when the server refuses; every other mode makes one attempt,
    /// and one that requires TLS fails against a server without it.
    pub fn connect(&self) -> Result<Client, postgres::Error> {
        let connected = self.connect_as_configured().and_then(|mut client| {
            client.batch_execute(&self.session)?;
            Ok(client)
        });
        *lock(&self.last_failure) = connected
            .as_ref()
            .err()
            .map(|error| crate::logging::error_chain(error));
        connected
    }

    /// Why the last attempt to connect failed, if the last one did.
    pub fn last_failure(&self) -> Option<String> {
        lock(&self.last_failure).clone()
    }

    fn connect_as_configured(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            Tls::None => self.config.connect(postgres::NoTls),
            // `config` asks for no TLS (`ssl_mode` is `Disable`).
            Tls::Allow(tls) => match self.config.connect(postgres::NoTls) {
                // The server answered, and refused this connection
                // (pg_hba.conf's `hostssl`): again, with TLS.
                Err(error) if error.as_db_error().is_some() => {
                    let mut encrypted = self.config.clone();
                    encrypted.ssl_mode(SslMode::Require);
                    encrypted.connect(tls.clone())
                }
                connected => connected,
            },
            Tls::Rustls(tls) => self.config.connect(tls.clone()),
        }
    }
}

/// How to reach the server: the URL's settings, the password, TLS.
pub fn manager(config: &PostgresConfig, lock_timeout: Duration) -> anyhow::Result<Manager> {
    let mut settings: postgres::Config = config
        .url
        .parse()
        .map_err(|error| failure(Unusable::Data, format!("the database URL: {error}")))?;
    if let Some(password) = &config.password {
        settings.password(password.expose());
    }
    if settings.get_connect_timeout().is_none() {
        settings.connect_timeout(Duration::from_secs(10));
    }
    if settings.get_application_name().is_none() {
        settings.application_name("price-alertd");
    }
    // The client's own default is `prefer`, which goes on in plain text when
    // the server declines TLS: every mode is set here, explicitly.
    settings.ssl_mode(match config.tls {
        PostgresTls::Disable | PostgresTls::Allow => SslMode::Disable,
        PostgresTls::Prefer => SslMode::Prefer,
        PostgresTls::Require | PostgresTls::VerifyCa | PostgresTls::VerifyFull => SslMode::Require,
    });
    let verified = || -> anyhow::Result<_> {
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(client_tls(
            config,
        )?))
    };
    let tls = match config.tls {
        PostgresTls::Disable => Tls::None,
        PostgresTls::Allow => Tls::Allow(verified()?),
        _ => Tls::Rustls(verified()?),
    };
    // A network that goes silent (a partition, a dead NAT entry, a proxy
    // that stops forwarding) is noticed by both ends within seconds, not
    // after the two hours of the kernel's defaults: see `Silence`. A URL's
    // own `tcp_user_timeout` stays.
    let url_times_out = settings.get_tcp_user_timeout().is_some();
    Silence::POOL.client(&mut settings, url_times_out);
    Ok(Manager {
        config: settings,
        tls,
        session: session(lock_timeout, &Silence::POOL),
        url_times_out,
        last_failure: Arc::default(),
    })
}

impl Manager {
    /// The manager of the listener's connection, which is silent for long
    /// stretches by design: it notices a silent network sooner (see
    /// `listen`'s pings).
    pub fn for_listening(&self) -> Manager {
        let mut manager = self.clone();
        Silence::LISTENER.client(&mut manager.config, self.url_times_out);
        manager
    }
}

/// How soon a connection notices that the network went silent, on both
/// ends: TCP keepalives probe an idle connection (`idle`, then every
/// `interval`, `retries` times), and data unacknowledged for `user_timeout`
/// fails it. The server's end is set in the session (`tcp_*` settings), so
/// that a daemon cut off mid-transaction loses its locks as its server
/// session ends.
pub(super) struct Silence {
    idle: Duration,
    interval: Duration,
    retries: u32,
    user_timeout: Duration,
}

impl Silence {
    /// The pool's: an idle connection found dead within 11 s, a busy one
    /// within 10 s.
    pub(super) const POOL: Silence = Silence {
        idle: Duration::from_secs(5),
        interval: Duration::from_secs(2),
        retries: 3,
        user_timeout: Duration::from_secs(10),
    };

    /// The listener's, which pings every `listen::PING`: found dead about
    /// 3 s after a ping (the kernel gives up at the first retransmission
    /// past the user timeout: 0.2, 0.6, 1.4, 3.0 s).
    const LISTENER: Silence = Silence {
        idle: Duration::from_secs(2),
        interval: Duration::from_secs(1),
        retries: 2,
        user_timeout: Duration::from_secs(3),
    };

    /// Sets the client's end; the user timeout unless the URL sets one.
    fn client(&self, settings: &mut postgres::Config, url_times_out: bool) {
        settings.keepalives(true);
        settings.keepalives_idle(self.idle);
        settings.keepalives_interval(self.interval);
        settings.keepalives_retries(self.retries);
        if !url_times_out {
            settings.tcp_user_timeout(self.user_timeout);
        }
    }
}

/// How long one of the daemon's statements may run: a claim batch, a read
/// of one ticker's alerts, an exchange with the outbox take milliseconds.
/// Migrations and repairs, which may build an index over millions of rows,
/// lift it for their own transaction.
pub(super) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs `call` (a migration, a repair) on `client` without the statement
/// timeout: it may wait for another daemon's migration, and build indexes.
pub(super) fn without_statement_timeout<T>(
    client: &mut Client,
    call: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
) -> Result<T, postgres::Error> {
    client.batch_execute("SET statement_timeout = 0")?;
    let result = call(client);
    let restored = client.batch_execute(&format!(
        "SET statement_timeout = {}",
        STATEMENT_TIMEOUT.as_millis()
    ));
    let value = result?;
    restored?;
    Ok(value)
}

/// How long the server lets one of the daemon's sessions sit in an open
/// transaction without a statement: the daemon never waits between the
/// statements of a transaction, so a session idle this long belongs to a
/// daemon cut off, or stalled, and the server ends it, with its row locks.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(10);

/// What every connection runs first, in the session, not as startup
/// `options`, which PgBouncer refuses. A statement waits for a row lock at
/// most as long as SQLite waits for its write lock (`busy_timeout`), then
/// fails and is retried by the next tick or round.
fn session(lock_timeout: Duration, silence: &Silence) -> String {
    format!(
        "SET lock_timeout = {}; SET statement_timeout = {}; \
         SET idle_in_transaction_session_timeout = {}; SET tcp_keepalives_idle = {}; \
         SET tcp_keepalives_interval = {}; SET tcp_keepalives_count = {}; SET tcp_user_timeout = {}",
        lock_timeout.as_millis(),
        STATEMENT_TIMEOUT.as_millis(),
        IDLE_IN_TRANSACTION.as_millis(),
        silence.idle.as_secs(),
        silence.interval.as_secs(),
        silence.retries,
        silence.user_timeout.as_millis(),
    )
}

/// rustls with the system's roots (as the webhook's client), or only the
/// CA of `sslrootcert` when one is given. The server's name is checked
/// too, except with `verify-ca`: `require` here is `verify-full`.
fn client_tls(config: &PostgresConfig) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS for the database")?;
    let verifier: Arc<dyn ServerCertVerifier> = match &config.root_certificate {
        Some(path) => {
            let roots = root_certificates(path)?;
            rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .build()
            .with_context(|| format!("the CA certificate {}", path.display()))?
        }
        None => Arc::new(
            rustls_platform_verifier::Verifier::new(provider.clone())
                .context("the system's trusted roots")?,
        ),
    };
    let verifier = match config.tls {
        PostgresTls::VerifyCa => Arc::new(ChainOnly(verifier)),
        _ => verifier,
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// The CA certificates of a PEM file.
fn root_certificates(path: &std::path::Path) -> anyhow::Result<rustls::RootCertStore> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the database's CA certificate {}", path.display()))?;
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        let certificate = certificate
            .with_context(|| format!("reading the database's CA certificate {}", path.display()))?;
        roots
            .add(certificate)
            .with_context(|| format!("the CA certificate {}", path.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!(
            "the database's CA certificate {} holds no certificate",
            path.display()
        );
    }
    Ok(roots)
}

/// `verify-ca`: the certificate must chain to a trusted root, for any name.
/// The inner verifier checks the chain before the name, so a name that does
/// not match is the only failure passed over.
#[derive(Debug)]
struct ChainOnly(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.0.requires_raw_public_keys()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.0.root_hint_subjects()
    }
}
