//! Tests of parsing and validation, through `parse` and `ConfigOrigin::load` as
//! `check-config` and `run` call them.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use url::Url;

use super::*;

const MINIMAL: &str = r#"
[database]
path = "/var/lib/price-alertd/alerts.db"

[evaluator]
threads = 10

[webhook]
url = "http://127.0.0.1:8080/events"

[[jobs]]
name = "evaluate"
kind = "evaluate"
schedule = "*/10 * * * * *"
"#;

fn errors_of(text: &str) -> Vec<String> {
    parse(text, Path::new("/etc/x"), None)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn with_webhook_url(lines: &str) -> String {
    MINIMAL.replace("url = \"http://127.0.0.1:8080/events\"", lines)
}

#[test]
fn user_id_stands_only_once_and_only_in_the_path() {
    let check = |line: &str, expected: &str| {
        let errors = errors_of(&with_webhook_url(line));
        assert!(
            errors.len() == 1 && errors[0].contains(expected),
            "{line}: {errors:?}"
        );
    };
    check(
        "url = \"http://relay/events/{user_id}/{user_id}\"",
        "webhook.url: {user_id} may appear once",
    );
    check(
        "url = \"http://relay/events?user={user_id}\"",
        "{user_id} may only stand in the URL's path",
    );
    check(
        "url = \"http://relay/events#{user_id}\"",
        "{user_id} may only stand in the URL's path",
    );
    check(
        "url = \"http://{user_id}@relay/events\"",
        "{user_id} may only stand in the URL's path",
    );
    check(
        "url = \"http://{user_id}.relay/events\"",
        "{user_id} may only stand in the URL's path",
    );
    // Any other placeholder would be sent as it is written: every user's
    // events to one literal channel.
    check(
        "url = \"http://relay/events/{user}\"",
        "webhook.url: {user} is not a placeholder; the only one is {user_id}",
    );
    check(
        "url = \"http://relay/{tenant}/events/{user_id}\"",
        "{tenant} is not a placeholder",
    );
    check(
        "url = \"http://relay/events/{user_id}\"\nurl_without_user_id = \"http://relay/events/{user_id}\"",
        "webhook.url_without_user_id: takes no placeholder; it has {user_id}",
    );
}

#[test]
fn several_events_a_request_only_in_a_format_that_takes_them() {
    let check = |lines: &str, expected: &str| {
        let errors = errors_of(&with_webhook_url(lines));
        assert!(
            errors.len() == 1 && errors[0].contains(expected),
            "{lines}: {errors:?}"
        );
    };
    check(
        "url = \"http://relay/events\"\nbatch = 10",
        "webhook.batch: must be 1 with format = \"event\"",
    );
    check(
        "url = \"http://relay/publish/\"\nformat = \"pushpin\"\nbatch = 1001",
        "webhook.batch: must be between 1 and 1000",
    );
    check(
        "url = \"http://relay/events\"\nformat = \"nchan\"",
        "webhook.format: \"nchan\" is not a format",
    );
    check(
        "url = \"http://relay/events/{user_id}\"\nformat = \"pushpin\"",
        "webhook.url: takes no {user_id} with format = \"pushpin\"",
    );
    let webhook = |lines: &str| {
        parse(&with_webhook_url(lines), Path::new("/etc/x"), None)
            .unwrap()
            .webhook
    };
    let plain = webhook("url = \"http://relay/events\"\nbatch = 1");
    assert_eq!((plain.format, plain.batch), (WebhookFormat::Event, 1));
    let pushpin = webhook("url = \"http://relay/publish/\"\nformat = \"pushpin\"");
    assert_eq!(
        (pushpin.format, pushpin.batch),
        (WebhookFormat::Pushpin, 100)
    );
    let pushpin = webhook("url = \"http://relay/publish/\"\nformat = \"pushpin\"\nbatch = 7");
    assert_eq!(pushpin.batch, 7);
}

#[test]
fn a_stream_origin_is_for_pushpin_and_needs_an_address_and_the_applications_url() {
    let pushpin = "url = \"http://127.0.0.1:5561/publish/\"\nformat = \"pushpin\"";
    let check = |webhook: &str, stream: &str, expected: &str| {
        let errors = errors_of(&format!(
            "{}\n[stream]\n{stream}\n",
            with_webhook_url(webhook)
        ));
        assert!(
            errors.len() == 1 && errors[0].contains(expected),
            "{stream}: {errors:?}"
        );
    };
    let both = "listen = \"127.0.0.1:7998\"\nauth_url = \"http://127.0.0.1:3000/auth\"";
    check(
        "url = \"http://relay/events\"",
        both,
        "stream: is for webhook.format = \"pushpin\"",
    );
    check(
        pushpin,
        "auth_url = \"http://a/auth\"",
        "stream.listen: missing field `listen`",
    );
    check(
        pushpin,
        "listen = \"127.0.0.1:7998\"",
        "stream.auth_url: missing field",
    );
    check(
        pushpin,
        "listen = \"localhost\"\nauth_url = \"http://a/auth\"",
        "stream.listen: \"localhost\" is not an address",
    );
    check(
        pushpin,
        "listen = \"127.0.0.1:7998\"\nauth_url = \"ftp://a/auth\"",
        "stream.auth_url: scheme \"ftp\" is not http or https",
    );
    let config = parse(
        &format!(
            "{}\n[stream]\n{both}\nauth_timeout = \"2s\"\n",
            with_webhook_url(pushpin)
        ),
        Path::new("/etc/x"),
        None,
    )
    .unwrap();
    let stream = config.stream.unwrap();
    assert_eq!(stream.listen.to_string(), "127.0.0.1:7998");
    assert_eq!(stream.auth_url.as_str(), "http://127.0.0.1:3000/auth");
    assert_eq!(stream.auth_timeout, Duration::from_secs(2));
    assert!(
        parse(MINIMAL, Path::new("/etc/x"), None)
            .unwrap()
            .stream
            .is_none()
    );
}

#[test]
fn url_without_user_id_is_only_for_a_per_user_url() {
    let errors = errors_of(&with_webhook_url(
        "url = \"http://relay/events\"\nurl_without_user_id = \"http://relay/events/nobody\"",
    ));
    assert!(
        errors.len() == 1
            && errors[0]
                .contains("webhook.url_without_user_id: is for a webhook.url with {user_id}"),
        "{errors:?}"
    );
    let config = parse(
        &with_webhook_url(
            "url = \"http://relay/events/{user_id}\"\nurl_without_user_id = \"http://relay/events/nobody\"",
        ),
        Path::new("/etc/x"),
        None,
    )
    .unwrap();
    assert_eq!(
        config.webhook.url_without_user_id.unwrap().as_str(),
        "http://relay/events/nobody"
    );
}

#[test]
fn the_contract_keys_alone_are_valid_and_defaults_apply() {
    let config = parse(MINIMAL, Path::new("/etc/x"), None).unwrap();
    assert_eq!(
        config.database.engine,
        EngineChoice::Sqlite {
            path: "/var/lib/price-alertd/alerts.db".into()
        }
    );
    assert_eq!(config.evaluator.threads, 10);
    assert_eq!(config.webhook.timeout, Duration::from_secs(15));
    assert_eq!(config.webhook.drain_timeout, Duration::from_secs(30));
    assert_eq!(config.webhook.retry_schedule.len(), 7);
    assert_eq!(config.jobs.len(), 1);
    assert_eq!(config.jobs[0].schedule.expression(), "*/10 * * * * *");
}

/// The keys serde knows in a section, from its own "expected ..." list.
fn known_keys(section: &str) -> Vec<String> {
    let header = format!("[{section}]");
    let text = if section == "jobs" {
        format!("{MINIMAL}\n[[jobs]]\nnot_a_key = 1\n")
    } else if MINIMAL.contains(&header) {
        MINIMAL.replace(&header, &format!("{header}\nnot_a_key = 1"))
    } else {
        format!("{MINIMAL}\n{header}\nnot_a_key = 1\n")
    };
    let errors = errors_of(&text).join("\n");
    let expected = errors
        .split_once("expected ")
        .unwrap_or_else(|| panic!("{section}: {errors}"))
        .1;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_shipped_file_documents_every_key() {
    for section in [
        "database",
        "evaluator",
        "prices",
        "webhook",
        "jobs",
        "log",
        "metrics",
        "stream",
    ] {
        let keys = known_keys(section);
        assert!(!keys.is_empty(), "{section}");
        for key in keys {
            let shown = EMBEDDED.lines().any(|line| {
                let line = line.trim_start_matches(['#', ' ']);
                line.starts_with(&format!("{key} =")) || line.starts_with(&format!("[[{key}]]"))
            });
            assert!(shown, "etc/price-alertd.toml does not show {section}.{key}");
        }
    }
}

#[test]
fn the_shipped_file_is_valid() {
    let config = parse(EMBEDDED, Path::new("/work"), None).unwrap();
    assert!(!config.jobs.is_empty());
}

#[test]
fn the_installed_config_and_the_service_find_the_same_database() {
    let installed = Path::new("/etc/price-alertd");
    let from_systemd = Some(std::ffi::OsString::from("/var/lib/price-alertd"));
    assert_eq!(
        state_directory(installed, from_systemd.clone()),
        state_directory(installed, None),
    );
    assert_eq!(
        state_directory(installed, None).as_deref(),
        Some(Path::new(STATE_DIRECTORY))
    );
    assert_eq!(state_directory(Path::new("/home/op/alerts"), None), None);
    assert_eq!(
        state_directory(Path::new("/home/op/alerts"), from_systemd).as_deref(),
        Some(Path::new("/var/lib/price-alertd"))
    );
}

#[test]
fn relative_paths_resolve_against_the_config_folder_or_the_state_directory() {
    let text = MINIMAL.replace("/var/lib/price-alertd/alerts.db", "alerts.db");
    let config = parse(&text, Path::new("/etc/x"), None).unwrap();
    assert_eq!(config.database.describe(), "/etc/x/alerts.db");
    let config = parse(&text, Path::new("/etc/x"), Some(Path::new("/var/lib/p"))).unwrap();
    assert_eq!(config.database.describe(), "/var/lib/p/alerts.db");
}

#[test]
fn every_error_is_reported_with_its_key_and_position() {
    let text = MINIMAL
        .replace(
            "threads = 10",
            "threads = 10\nthreds = 3\nclaim_batch = \"many\"",
        )
        .replace("*/10 * * * * *", "*/10 * * *")
        .replace("[webhook]", "[webhook]\ntimeout = \"soon\"\nextra = 1");
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 5, "{errors:#?}");
    assert!(
        errors[0].starts_with("7:1: evaluator.threds: unknown field `threds`"),
        "{errors:#?}"
    );
    assert!(
        errors[1].starts_with("8:15: evaluator.claim_batch: invalid type"),
        "{errors:#?}"
    );
    assert!(
        errors[2].starts_with("11:11: webhook.timeout: \"soon\" is not a duration"),
        "{errors:#?}"
    );
    assert!(
        errors[3].starts_with("12:1: webhook.extra: unknown field `extra`"),
        "{errors:#?}"
    );
    assert!(
        errors[4].starts_with("18:12: jobs[0].schedule: cron expression"),
        "{errors:#?}"
    );
}

#[test]
fn a_bad_required_value_is_reported_once() {
    let errors = errors_of(&MINIMAL.replace("url = \"http://127.0.0.1:8080/events\"", "url = 5"));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].starts_with("9:7: webhook.url: invalid type"),
        "{errors:#?}"
    );
}

#[test]
fn a_job_missing_a_field_does_not_hide_later_errors() {
    let text = format!(
        "{MINIMAL}\n[[jobs]]\nname = \"b\"\nkind = \"evaluate\"\n\n[[jobs]]\nname = \"c\"\nkind = \"sweep\"\nschedule = \"* * * * *\"\n"
    );
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("jobs[1].schedule: missing field `schedule`"),
        "{errors:#?}"
    );
    assert!(
        errors[1].contains("jobs[2].kind: unknown kind \"sweep\""),
        "{errors:#?}"
    );
}

#[test]
fn a_missing_url_is_reported_at_its_section() {
    let errors = errors_of("\n[webhook]\ntimeout = \"5s\"\n");
    assert_eq!(
        errors,
        vec!["2:1: webhook.url: missing field `url`".to_owned()]
    );
}

#[test]
fn purge_jobs_need_keep_and_only_they_take_it() {
    let job = |kind: &str, keep: &str| {
        format!(
            "{MINIMAL}\n[[jobs]]\nname = \"p\"\nkind = \"{kind}\"\nschedule = \"0 0 3 * * *\"\n{keep}"
        )
    };
    let config = parse(&job("purge", "keep = \"30d\"\n"), Path::new("/"), None).unwrap();
    assert_eq!(
        config.jobs[1].kind,
        JobKind::Purge {
            keep: Duration::from_secs(30 * 86400)
        }
    );
    assert!(errors_of(&job("purge", ""))[0].contains("jobs[1].keep: a \"purge\" job needs `keep`"));
    assert!(
        errors_of(&job("evaluate", "keep = \"1d\"\n"))[0]
            .contains("jobs[1].keep: only a \"purge\" job takes `keep`")
    );
    assert!(
        errors_of(&job("purge", "keep = \"soon\"\n"))[0]
            .contains("jobs[1].keep: \"soon\" is not a duration")
    );
}

#[test]
fn syntax_errors_name_the_line() {
    let errors = errors_of("[webhook]\nurl = \"http://x\"\n[[jobs]\n");
    assert!(errors[0].starts_with("3:"), "{errors:#?}");
}

#[test]
fn duplicate_job_names_and_bad_zones_are_errors() {
    let text = format!(
        "{MINIMAL}\n[[jobs]]\nname = \"evaluate\"\nkind = \"evaluate\"\nschedule = \"* * * * *\"\ntimezone = \"Nowhere/City\"\n"
    );
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains("jobs[1].name: \"evaluate\" is already the name of jobs[0]"),
        "{errors:#?}"
    );
    assert!(
        errors[1].contains("jobs[1].timezone: unknown time zone"),
        "{errors:#?}"
    );
}

#[test]
fn credentials_in_urls_are_masked_for_display() {
    let text = MINIMAL.replace(
        "http://127.0.0.1:8080/events",
        "https://user:hunter2@relay.example/events?token=abc",
    );
    let config = parse(&text, Path::new("/"), None).unwrap();
    assert_eq!(
        config.webhook.url.display(),
        "https://user:***@relay.example/events?***"
    );
    assert_eq!(
        display_url(&Url::parse("http://127.0.0.1:9000/quotes").unwrap()),
        "http://127.0.0.1:9000/quotes"
    );
}

#[test]
fn credentials_in_a_url_and_an_authorization_header_are_refused_together() {
    let webhook = MINIMAL.replace(
        "url = \"http://127.0.0.1:8080/events\"",
        "url = \"https://user:hunter2@relay.example/events\"\nheaders = { Authorization = \"Bearer t\" }",
    );
    let errors = errors_of(&webhook);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("webhook.headers.Authorization: webhook.url carries credentials"),
        "{errors:?}"
    );

    let prices = format!(
        "{MINIMAL}\n[prices]\nsource = \"http\"\nurl = \"http://k:s@127.0.0.1:9000/q\"\nheaders = {{ authorization = \"Bearer t\" }}\n"
    );
    let errors = errors_of(&prices);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("prices.headers.authorization"),
        "{errors:?}"
    );
    // Either one alone is fine.
    assert!(parse(&prices.replace("k:s@", ""), Path::new("/"), None).is_ok());
}

#[test]
fn a_postgresql_url_selects_postgresql_with_its_tls_and_a_password_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let with =
        |database: &str| MINIMAL.replace("path = \"/var/lib/price-alertd/alerts.db\"", database);
    let config = parse(
        &with("url = \"postgres://pa:s3cr%40t@db.example.net:6432/alerts?sslmode=verify-full&sslrootcert=ca.pem&application_name=x\""),
        dir.path(),
        None,
    )
    .unwrap();
    let EngineChoice::Postgres(postgres) = &config.database.engine else {
        panic!("{:?}", config.database);
    };
    assert_eq!(postgres.tls, PostgresTls::VerifyFull);
    assert_eq!(postgres.root_certificate, Some(dir.path().join("ca.pem")));
    assert_eq!(
        postgres.password.as_ref().map(Password::expose),
        Some("s3cr@t")
    );
    assert_eq!(
        postgres.url,
        "postgresql://pa@db.example.net:6432/alerts?application_name=x"
    );
    assert_eq!(
        config.database.describe(),
        format!(
            "postgresql://pa:***@db.example.net:6432/alerts?sslmode=verify-full&sslrootcert={}&application_name=x",
            dir.path().join("ca.pem").display()
        )
    );
    assert!(!format!("{config:?}").contains("s3cr"));

    std::fs::write(dir.path().join("password"), "from-a-file\n").unwrap();
    let config = parse(
        &with("url = \"postgresql://pa@db/alerts\"\npassword_file = \"password\""),
        dir.path(),
        None,
    )
    .unwrap();
    let EngineChoice::Postgres(postgres) = &config.database.engine else {
        panic!();
    };
    assert_eq!(
        postgres.password.as_ref().map(Password::expose),
        Some("from-a-file")
    );
    assert_eq!(postgres.tls, PostgresTls::Prefer);
}

#[test]
fn durations_are_shown_as_the_file_writes_them() {
    for (millis, shown) in [
        (0, "0s"),
        (250, "250ms"),
        (5_000, "5s"),
        (5_400_000, "1h 30m"),
        (2_592_000_000, "30d"),
        (315_360_000_000, "3650d"),
        (90_061_001, "1d 1h 1m 1s 1ms"),
    ] {
        assert_eq!(show_duration(Duration::from_millis(millis)), shown);
    }
}

#[test]
fn a_postgresql_connection_is_shown_as_it_will_be_made() {
    let shown = |url: &str| {
        let config = parse(
            &MINIMAL.replace(
                "path = \"/var/lib/price-alertd/alerts.db\"",
                &format!("url = \"{url}\""),
            ),
            Path::new("/etc/x"),
            None,
        )
        .unwrap();
        let EngineChoice::Postgres(postgres) = config.database.engine else {
            panic!()
        };
        (postgres.display, postgres.tls, postgres.dropped_options)
    };
    // A user parameter names the user the server sees; options are not
    // used; the mode is always shown, libpq's default when unset.
    assert_eq!(
        shown("postgresql://app@db/alerts?user=other&options=-c%20search_path%3Dx"),
        (
            "postgresql://other@db:5432/alerts?sslmode=prefer".to_owned(),
            PostgresTls::Prefer,
            Some("-c search_path=x".to_owned())
        )
    );
    for mode in [
        "disable",
        "allow",
        "prefer",
        "require",
        "verify-ca",
        "verify-full",
    ] {
        let (display, tls, _) = shown(&format!("postgres://db/x?sslmode={mode}"));
        assert_eq!(display, format!("postgresql://db:5432/x?sslmode={mode}"));
        assert_eq!(tls.name(), mode);
        assert_eq!(
            tls.required(),
            mode.starts_with("verify") || mode == "require",
            "{mode}"
        );
    }
    // A Unix socket, and the database named after the user by default.
    assert_eq!(
        shown("postgresql://pa@?host=/run/postgresql").0,
        "postgresql://pa@/pa?sslmode=prefer&host=/run/postgresql"
    );
}

#[test]
fn the_database_is_a_path_or_a_url_and_a_bad_url_is_reported() {
    let with =
        |database: &str| MINIMAL.replace("path = \"/var/lib/price-alertd/alerts.db\"", database);
    let messages = |text: &str| -> Vec<String> {
        parse(text, Path::new("/etc/x"), None)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    let both = messages(&with("path = \"a.db\"\nurl = \"postgres://db/x\""));
    assert!(both.iter().any(|m| m.contains("not both")), "{both:?}");
    let scheme = messages(&with("url = \"mysql://db/x\""));
    assert!(
        scheme.iter().any(|m| m.contains("postgres://")),
        "{scheme:?}"
    );
    let mode = messages(&with("url = \"postgres://db/x?sslmode=sometimes\""));
    assert!(
        mode.iter().any(|m| m.contains("sslmode=sometimes")),
        "{mode:?}"
    );
    let twice = messages(&with(
        "url = \"postgres://u:p@db/x\"\npassword_file = \"/nonexistent\"",
    ));
    assert!(twice.iter().any(|m| m.contains("one place")), "{twice:?}");
    let sqlite = messages(&with("path = \"a.db\"\npassword_file = \"p\""));
    assert!(
        sqlite.iter().any(|m| m.contains("SQLite has no password")),
        "{sqlite:?}"
    );
    let port = messages(&with("url = \"postgres://db:notaport/x\""));
    assert!(port.iter().any(|m| m.contains("database.url")), "{port:?}");
}

#[test]
fn secrets_are_checked_and_never_printed() {
    let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
    let errors = errors_of(&MINIMAL.replace(
        "[webhook]",
        &format!("[webhook]\nsecret = \"whsec_{short}\""),
    ));
    assert!(errors[0].contains("16 bytes; at least 24"), "{errors:#?}");
    let good = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let config = parse(
        &MINIMAL.replace(
            "[webhook]",
            &format!("[webhook]\nsecret = \"whsec_{good}\""),
        ),
        Path::new("/"),
        None,
    )
    .unwrap();
    assert_eq!(config.webhook.secrets.len(), 1);
    assert!(!format!("{config:?}").contains(&good));
}

#[test]
fn prices_source_sqlite_is_the_quotes_table_with_a_note_to_say_table() {
    let with_source = |source: &str| {
        MINIMAL.replace(
            "[webhook]",
            &format!("[prices]\nsource = \"{source}\"\n\n[webhook]"),
        )
    };
    let table = parse(&with_source("table"), Path::new("/etc/x"), None).unwrap();
    assert!(matches!(table.prices.source, PriceSource::Table));
    assert!(table.warnings.is_empty(), "{:?}", table.warnings);
    let old = parse(&with_source("sqlite"), Path::new("/etc/x"), None).unwrap();
    assert!(matches!(old.prices.source, PriceSource::Table));
    let warnings: Vec<String> = old.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("prices.source: ") && warnings[0].contains("write \"table\""),
        "{warnings:?}"
    );
    assert!(
        errors_of(&with_source("postgres"))[0].contains("expected \"table\" or \"http\""),
        "{:?}",
        errors_of(&with_source("postgres"))
    );
}

#[test]
fn on_change_is_for_evaluate_jobs_on_the_quotes_table() {
    let reacting = MINIMAL.replace(
        "schedule = \"*/10 * * * * *\"",
        "schedule = \"*/10 * * * * *\"\non_change = true",
    );
    let config = parse(&reacting, Path::new("/etc/x"), None).unwrap();
    assert!(config.jobs[0].reacts());
    assert!(!parse(MINIMAL, Path::new("/etc/x"), None).unwrap().jobs[0].reacts());

    let purge = format!(
        "{MINIMAL}\n[[jobs]]\nname = \"p\"\nkind = \"purge\"\nschedule = \"0 0 3 * * *\"\nkeep = \"1d\"\non_change = true\n"
    );
    assert!(
        errors_of(&purge)[0]
            .contains("jobs[1].on_change: only an \"evaluate\" job takes `on_change`"),
        "{:?}",
        errors_of(&purge)
    );
    let fetched = reacting.replace(
        "[webhook]",
        "[prices]\nsource = \"http\"\nurl = \"http://127.0.0.1:9000/q\"\n\n[webhook]",
    );
    let errors = errors_of(&fetched);
    assert!(
        errors[0]
            .contains("jobs[0].on_change: a job cannot react to changes when the daemon fetches"),
        "{errors:?}"
    );
    assert!(
        errors_of(&MINIMAL.replace(
            "schedule = \"*/10 * * * * *\"",
            "schedule = \"*/10 * * * * *\"\non_change = \"yes\""
        ))[0]
            .contains("jobs[0].on_change"),
    );
}

#[test]
fn checks_across_keys_run_when_the_keys_they_read_are_wrong_too() {
    // A reacting job with the daemon fetching its quotes from a URL that is
    // itself wrong: both errors at once, not one per round.
    let text = MINIMAL.to_owned()
        + "on_change = true\n\n[prices]\nsource = \"http\"\nurl = \"ftp://quotes\"\n";
    let errors = errors_of(&text);
    assert!(
        errors.iter().any(|error| error.contains("prices.url")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(
            |error| error.contains("jobs[0].on_change") && error.contains("fetches the quotes")
        ),
        "{errors:?}"
    );

    // The fallback's check reads the URL as written, wrong as it is.
    let errors = errors_of(&with_webhook_url(
        "url = \"ftp://relay/events\"\nurl_without_user_id = \"http://relay/events/nobody\"",
    ));
    assert!(
        errors.iter().any(|error| error.contains("webhook.url:"))
            && errors
                .iter()
                .any(|error| error
                    .contains("webhook.url_without_user_id: is for a webhook.url with")),
        "{errors:?}"
    );
}
