//! The command line: parses arguments, loads the configuration, starts
//! logging and dispatches; errors become exit codes (78 for a bad config).

use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::{CommandFactory, Parser, Subcommand};
use price_alertd::condition::Condition;
use price_alertd::config::{Config, ConfigOrigin};
use price_alertd::store::{self, alerts, outbox};
use price_alertd::{admin, daemon, logging, serving};

/// sysexits' EX_CONFIG: the configuration is invalid.
const EX_CONFIG: u8 = 78;

/// The exit code of a failed command (sysexits(3) where one fits; the unit's
/// RestartPreventExitStatus= lists the codes a restart cannot fix).
fn exit_code(error: &anyhow::Error) -> ExitCode {
    let code = match error
        .downcast_ref::<store::DatabaseFailure>()
        .map(|failure| failure.kind)
    {
        // EX_DATAERR: not a database, or a newer version's.
        Some(store::Unusable::Data) => 65,
        // EX_NOINPUT: no database where the config says.
        Some(store::Unusable::Missing) => 66,
        // EX_CANTCREAT: the database cannot be created there.
        Some(store::Unusable::Create) => 73,
        // EX_IOERR: it cannot be opened, read or written.
        Some(store::Unusable::Io) => 74,
        // EX_UNAVAILABLE: the metrics or the stream address is taken.
        None if error.downcast_ref::<serving::CannotListen>().is_some() => 69,
        None => 1,
    };
    ExitCode::from(code)
}

/// Evaluates price alerts on cron schedules and POSTs one event per triggered
/// alert to a webhook, exactly once per arming.
#[derive(Parser)]
#[command(name = "price-alertd", version)]
struct Cli {
    /// The TOML configuration. Defaults to $PRICE_ALERTD_CONFIG, then
    /// /etc/price-alertd/price-alertd.toml, then the embedded copy of the shipped
    /// etc/price-alertd.toml (database in the working directory).
    #[arg(
        long,
        global = true,
        env = "PRICE_ALERTD_CONFIG",
        hide_env_values = true,
        value_name = "PATH"
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the man pages (FOLDER/man) and shell completions (FOLDER/shell),
    /// generated from these definitions; the package ships etc/generated.
    #[command(hide = true)]
    Generate {
        #[arg(value_name = "FOLDER")]
        folder: PathBuf,
    },
    /// Run the daemon: schedule the jobs, evaluate, deliver. SIGHUP reloads the
    /// configuration (a bad file is refused and the running jobs stay);
    /// SIGTERM/SIGINT stop scheduling, let running jobs finish, deliver pending
    /// events for up to webhook.drain_timeout, and exit 0.
    Run,
    /// Validate the configuration and list each job's next 3 fire times, in UTC
    /// and in the job's zone, computed as the scheduler computes them. Exits 0
    /// if it is valid, 78 with every error (key and line:col) if not, and as
    /// `run` would (65, 66, 73, 74; 69 for the metrics or stream address) if
    /// the database or an address it listens on cannot be used.
    CheckConfig {
        /// List fire times after this instant (RFC 3339) instead of now.
        #[arg(long, value_name = "INSTANT", value_parser = parse_instant)]
        from: Option<DateTime<Utc>>,
        /// Check only what a reload (SIGHUP) applies, as the unit's
        /// ExecReload does: not the database or the addresses it listens
        /// on, which the running daemon holds and which apply at the next
        /// restart.
        #[arg(long)]
        reload: bool,
    },
    /// Run one job now, deliver what is pending (for up to webhook.drain_timeout),
    /// print one line of key=value pairs (triggered= delivered= pending= ...) and
    /// exit non-zero if the job failed.
    RunJob {
        /// The job's `name` in the configuration.
        name: String,
    },
    /// Inspect and replay the outbox of events.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Manage alerts.
    Alerts {
        #[command(subcommand)]
        command: AlertsCommand,
    },
    /// Inspect and set quotes.
    Quotes {
        #[command(subcommand)]
        command: QuotesCommand,
    },
    /// Print the completion script for a shell, e.g. `price-alertd completions
    /// bash > ~/.local/share/bash-completion/completions/price-alertd` (the
    /// package installs bash's, zsh's and fish's).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Per job: its last run, how long it took and its result; outbox pending and dead.
    Status {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// List alerts, newest first, each with its state as the daemon judges
    /// it now; says how many more there are past the limit.
    List {
        /// Only enabled alerts (judged by the ticks).
        #[arg(long, conflicts_with_all = ["triggered", "state"])]
        enabled: bool,
        /// Only alerts disabled by a trigger.
        #[arg(long, conflicts_with = "state")]
        triggered: bool,
        /// Only alerts in this state.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(price_alertd::standing::STATES))]
        state: Option<String>,
        /// Only this ticker's alerts.
        #[arg(long, value_name = "T")]
        ticker: Option<String>,
        /// Only this user's alerts.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only alerts whose id is below ID: the next page, as the line
        /// after a full page names it.
        #[arg(long, value_name = "ID")]
        before: Option<i64>,
        /// At most this many rows.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// One JSON object per line (the line saying how many more on stderr).
        #[arg(long)]
        json: bool,
    },
    /// Why an alert will or will not fire: its state, its quote, its levels
    /// against that price, the jobs that cover its ticker and whether they
    /// judged its latest change, and its events.
    Explain {
        /// The alert's id.
        id: i64,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Add an alert; prints its id.
    Add {
        ticker: String,
        /// What the price must do.
        #[arg(value_parser = condition_names())]
        condition: String,
        /// The level, the percent for moving_*_pct, or a channel's lower level.
        target: f64,
        /// The basis of moving_*_pct.
        #[arg(long, value_name = "P")]
        reference: Option<f64>,
        /// A channel's upper level (inside, outside, entering, exiting).
        #[arg(long, value_name = "P")]
        upper: Option<f64>,
        #[arg(long)]
        note: Option<String>,
        #[arg(long)]
        user: Option<String>,
        /// When the alert stops being evaluated (RFC 3339).
        #[arg(long, value_name = "INSTANT")]
        expires: Option<String>,
        /// Make it repeat: re-armed this long after each trigger ("15m").
        #[arg(long, value_name = "DURATION")]
        cooldown: Option<String>,
        /// With --cooldown: re-arm only once the price came back past the
        /// level by this percent too ("1" for 1%: `above 200` re-arms at
        /// 198 or below).
        #[arg(long, value_name = "PCT", requires = "cooldown")]
        rearm_band: Option<f64>,
        /// With --cooldown: trigger at most N times, then stay disabled.
        #[arg(long, value_name = "N", requires = "cooldown",
              value_parser = clap::value_parser!(i64).range(1..))]
        max_triggers: Option<i64>,
    },
    /// Make an alert repeat, re-armed this long after each trigger, or fire
    /// once again (--none).
    Cooldown {
        /// The alert's id.
        id: i64,
        /// How long after a trigger it is re-armed ("15m", "1h 30m").
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        duration: Option<String>,
        /// No cooldown: the alert fires once, and is re-armed only by hand.
        #[arg(long)]
        none: bool,
    },
    /// Keep an alert from firing for a while: it stays armed, and is judged
    /// at the price of then when the snooze ends; or end a snooze (--off).
    Snooze {
        /// The alert's id.
        id: i64,
        /// How long from now ("30m", "2h").
        #[arg(required_unless_present = "off", conflicts_with = "off")]
        duration: Option<String>,
        /// End the snooze now.
        #[arg(long)]
        off: bool,
    },
    /// Arm a triggered, expired or disabled alert again, with its trigger
    /// budget whole again; its next trigger carries a new event id.
    Rearm {
        /// The alert's id.
        id: i64,
    },
    /// Disable an armed alert, without an event, or stop a repeating one
    /// that waits out its cooldown from being re-armed.
    Disable {
        /// The alert's id.
        id: i64,
    },
}

#[derive(Subcommand)]
enum QuotesCommand {
    /// Set a ticker's quote, stamped now.
    Set { ticker: String, price: f64 },
    /// List every quote.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

/// The conditions' names, from their table.
fn condition_names() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(Condition::ALL.map(|(_, name)| name))
}

fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|instant| instant.with_timezone(&Utc))
        .map_err(|error| format!("not an RFC 3339 instant such as 2026-03-07T00:00:00Z: {error}"))
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// List events, oldest first: undelivered ones (pending and dead)
    /// unless --state says otherwise; says how many more past the limit.
    List {
        /// Only dead letters: events refused with a 4xx or whose retry
        /// schedule ran out (--state dead).
        #[arg(long, conflicts_with = "state")]
        dead: bool,
        #[command(flatten)]
        filter: OutboxFilterArgs,
        /// At most this many rows.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// One JSON object per line (the line saying how many more on stderr).
        #[arg(long)]
        json: bool,
    },
    /// One event: its state, its body as queued, and every attempt (time,
    /// URL, status or error, duration).
    Show {
        /// The event's id (the webhook-id).
        event_id: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Put events back on a fresh retry schedule, due now, with the same
    /// ids: those named, every dead letter, or every event the filters
    /// match (dead ones unless --state says otherwise; delivered ones too
    /// with --state delivered or all). Says how many.
    Replay {
        /// Event ids (the webhook-id), e.g. pa_5d1c0e7a9b3f4c2d8e6a1b0f_42_7.
        #[arg(conflicts_with_all = ["all_dead", "state", "user", "alert", "since", "until"])]
        ids: Vec<String>,
        /// Every dead letter.
        #[arg(long, conflicts_with_all = ["state", "user", "alert", "since", "until"])]
        all_dead: bool,
        #[command(flatten)]
        filter: OutboxFilterArgs,
        /// Only count what would be replayed.
        #[arg(long, conflicts_with = "ids")]
        dry_run: bool,
    },
}

/// Which events `outbox list` and `outbox replay` take.
#[derive(clap::Args)]
struct OutboxFilterArgs {
    /// Only events in this state.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(outbox::OutboxState::WORDS))]
    state: Option<String>,
    /// Only this user's events.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// Only this alert's events.
    #[arg(long, value_name = "ID")]
    alert: Option<i64>,
    /// Only events queued at or after this instant (RFC 3339).
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant)]
    since: Option<DateTime<Utc>>,
    /// Only events queued before this instant (RFC 3339).
    #[arg(long, value_name = "INSTANT", value_parser = parse_instant)]
    until: Option<DateTime<Utc>>,
}

impl OutboxFilterArgs {
    fn any(&self) -> bool {
        self.state.is_some()
            || self.user.is_some()
            || self.alert.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }
}

/// Lets a short command die of SIGPIPE when its reader goes away
/// (`price-alertd outbox list | head`), quietly, as its neighbours do. Rust
/// ignores SIGPIPE, so writing to a closed pipe would otherwise fail or panic
/// with "Broken pipe". The daemon keeps it ignored: a closed stderr must
/// never kill it.
fn die_quietly_when_the_reader_leaves() {
    // SAFETY: restoring a signal's default disposition at the start of main,
    // before any thread exists, has no other effect.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Gives glibc's malloc one arena. By default each thread that allocates at
/// once gets an arena of its own (up to 8 per core), and each keeps the
/// memory it freed: the ten readers of a large tick left about 8 MB more
/// resident than they use (10M alerts, every ticker moved, `run-job` with
/// delivery: 72 MB peak RSS by default, 63–64 MB with two arenas, 62 MB with
/// one; each thread's cache of small blocks keeps it no slower, at 1M alerts
/// or in delivery; `cargo bench --bench tick`). `MALLOC_ARENA_MAX` in the
/// environment still decides when set.
fn cap_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: a malloc parameter set at the start of main, before any
        // thread exists.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

fn main() -> ExitCode {
    cap_malloc_arenas();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run) {
        die_quietly_when_the_reader_leaves();
    }
    // These need no configuration: they describe the CLI itself.
    match &cli.command {
        Command::Generate { folder } => {
            return report(price_alertd::docs::generate(Cli::command(), folder));
        }
        Command::Completions { shell } => {
            print!(
                "{}",
                price_alertd::docs::completions(&Cli::command(), *shell)
            );
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    let source = ConfigOrigin::choose(cli.config);
    let config = match source.load() {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("price-alertd: invalid configuration {errors}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    match cli.command {
        Command::CheckConfig { from, reload } => {
            let checks = if reload {
                admin::Checks::Reload
            } else {
                admin::Checks::Start
            };
            report(admin::check_config(
                &source,
                &config,
                checks,
                from.unwrap_or_else(Utc::now),
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            ))
        }
        Command::Run => {
            logging::init(&config.log);
            report(runtime().and_then(|runtime| runtime.block_on(daemon::run(source, config))))
        }
        Command::RunJob { name } => {
            logging::init(&config.log);
            run_job(config, &name)
        }
        Command::Outbox { command } => report(outbox_command(&config, command)),
        Command::Alerts { command } => report(alerts_command(&config, command)),
        Command::Quotes { command } => report(quotes_command(&config, command)),
        Command::Status { json } => {
            report(admin::status(&config, json, &mut std::io::stdout().lock()))
        }
        Command::Generate { .. } | Command::Completions { .. } => {
            unreachable!("answered before the configuration is read")
        }
    }
}

/// `run-job NAME`: the summary line, and failure if the job failed.
fn run_job(config: Config, name: &str) -> ExitCode {
    match runtime().and_then(|runtime| runtime.block_on(daemon::run_job(config, name))) {
        Ok(summary) => {
            println!("{}", summary.line());
            if summary.report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => report(Err(error)),
    }
}

/// `outbox list|show|replay`.
fn outbox_command(config: &Config, command: OutboxCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    // The filters' instants as the outbox stamps its times.
    let stamp = |at: &Option<DateTime<Utc>>| at.map(store::timestamp);
    match command {
        OutboxCommand::List {
            dead,
            filter,
            limit,
            json,
        } => {
            let state = match (dead, filter.state.as_deref()) {
                (true, _) => outbox::OutboxState::Dead,
                (false, Some(word)) => outbox::OutboxState::parse(word).expect("a possible value"),
                (false, None) => outbox::OutboxState::Undelivered,
            };
            let (since, until) = (stamp(&filter.since), stamp(&filter.until));
            let query = outbox::OutboxQuery {
                state,
                user: filter.user.as_deref(),
                alert: filter.alert,
                since: since.as_deref(),
                until: until.as_deref(),
                limit: limit as usize,
            };
            admin::outbox_list(config, &query, json, &mut out)
        }
        OutboxCommand::Show { event_id, json } => {
            admin::outbox_show(config, &event_id, json, &mut out)
        }
        OutboxCommand::Replay {
            ids,
            all_dead,
            filter,
            dry_run,
        } => {
            anyhow::ensure!(
                !ids.is_empty() || all_dead || filter.any(),
                "name the events to replay: their ids, --all-dead, or filters (--state, --user, --alert, --since, --until)"
            );
            if !ids.is_empty() {
                return admin::outbox_replay(config, admin::Replay::Events(ids), &mut out);
            }
            let state = filter
                .state
                .as_deref()
                .and_then(outbox::OutboxState::parse)
                .unwrap_or(outbox::OutboxState::Dead);
            let (since, until) = (stamp(&filter.since), stamp(&filter.until));
            let query = outbox::OutboxQuery {
                state,
                user: filter.user.as_deref(),
                alert: filter.alert,
                since: since.as_deref(),
                until: until.as_deref(),
                limit: 0,
            };
            admin::outbox_replay(config, admin::Replay::Matching { query, dry_run }, &mut out)
        }
    }
}

/// `alerts list|add|cooldown|rearm|disable`.
fn alerts_command(config: &Config, command: AlertsCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        AlertsCommand::List {
            enabled,
            triggered,
            state,
            ticker,
            user,
            before,
            limit,
            json,
        } => {
            let filter = match (enabled, triggered) {
                (true, _) => alerts::AlertFilter::Enabled,
                (_, true) => alerts::AlertFilter::Triggered,
                _ => alerts::AlertFilter::All,
            };
            let request = admin::AlertsList {
                filter,
                ticker: ticker.as_deref(),
                user: user.as_deref(),
                state: state.as_deref(),
                before,
                limit: limit as usize,
                json,
            };
            admin::alerts_list(config, &request, &mut out)
        }
        AlertsCommand::Explain { id, json } => admin::alerts_explain(config, id, json, &mut out),
        AlertsCommand::Add {
            ticker,
            condition,
            target,
            reference,
            upper,
            note,
            user,
            expires,
            cooldown,
            rearm_band,
            max_triggers,
        } => {
            let alert = alerts::NewAlert {
                ticker: &ticker,
                condition: &condition,
                target_price: target,
                reference_price: reference,
                upper_price: upper,
                note: note.as_deref(),
                user_id: user.as_deref(),
                expires_at: expires.as_deref(),
                cooldown: cooldown.as_deref(),
                max_triggers,
                rearm_band,
            };
            admin::alerts_add(config, &alert, &mut out)
        }
        AlertsCommand::Cooldown { id, duration, .. } => {
            admin::alerts_cooldown(config, id, duration.as_deref(), &mut out)
        }
        AlertsCommand::Snooze { id, duration, .. } => {
            admin::alerts_snooze(config, id, duration.as_deref(), &mut out)
        }
        AlertsCommand::Rearm { id } => admin::alerts_rearm(config, id, &mut out),
        AlertsCommand::Disable { id } => admin::alerts_disable(config, id, &mut out),
    }
}

/// `quotes set|list`.
fn quotes_command(config: &Config, command: QuotesCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        QuotesCommand::Set { ticker, price } => admin::quotes_set(config, &ticker, price, &mut out),
        QuotesCommand::List { json } => admin::quotes_list(config, json, &mut out),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("price-alertd")
        .build()?)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            logging::fatal(&error);
            exit_code(&error)
        }
    }
}
