//! What the command line says about itself, generated from its clap
//! definitions: shell completions (`completions SHELL`) and man pages, each
//! command's and `price-alertd.toml(5)`, from the documented configuration
//! (`etc/price-alertd.toml`). The package ships them from `etc/generated`
//! (`generate FOLDER`, which a test compares with a fresh run).

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use clap::Command;
use clap_complete::Shell;

/// The shells completions are written for.
pub const SHELLS: [Shell; 3] = [Shell::Bash, Shell::Zsh, Shell::Fish];

/// Writes the man pages (`FOLDER/man`) and the completions
/// (`FOLDER/shell`) of `command`, the CLI's definition.
pub fn generate(command: Command, folder: &Path) -> anyhow::Result<()> {
    let man = folder.join("man");
    let shell = folder.join("shell");
    for made in [&man, &shell] {
        std::fs::create_dir_all(made).with_context(|| format!("creating {}", made.display()))?;
    }
    write_man_pages(&command, &man)?;
    for kind in SHELLS {
        let name = match kind {
            Shell::Bash => "price-alertd.bash",
            Shell::Zsh => "_price-alertd",
            _ => "price-alertd.fish",
        };
        let path = shell.join(name);
        std::fs::write(&path, completions(&command, kind))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The completion script of `command` for `shell`, without its hidden
/// commands. clap_complete names bash's cases from the binary's name with
/// its hyphens replaced as it replaces a subcommand's separator
/// (clap-rs/clap#6421), so that nothing below the top level completed:
/// bash's is generated for a name without one, then registered for the
/// real one.
pub fn completions(command: &Command, shell: Shell) -> String {
    let name = command.get_name().to_owned();
    let mut visible = visible(command);
    let mut script = Vec::new();
    match shell {
        Shell::Bash => {
            let plain = name.replace('-', "");
            clap_complete::generate(shell, &mut visible, &plain, &mut script);
            let script = String::from_utf8(script).expect("completions are text");
            script
                .lines()
                .map(|line| match line.strip_suffix(&format!(" {plain}")) {
                    Some(start) if line.trim_start().starts_with("complete ") => {
                        format!("{start} {name}\n")
                    }
                    _ => format!("{line}\n"),
                })
                .collect()
        }
        _ => {
            clap_complete::generate(shell, &mut visible, &name, &mut script);
            String::from_utf8(script).expect("completions are text")
        }
    }
}

/// `command` without its hidden subcommands (clap_complete offers them).
fn visible(command: &Command) -> Command {
    let mut copy =
        Command::new(command.get_name().to_owned()).args(command.get_arguments().cloned());
    if let Some(version) = command.get_version() {
        copy = copy.version(version.to_owned());
    }
    if let Some(about) = command.get_about() {
        copy = copy.about(about.clone());
    }
    for subcommand in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        copy = copy.subcommand(visible(subcommand));
    }
    copy
}

/// A page per command, `price-alertd(1)` with the daemon's exit status,
/// signals, files, environment and examples, and `price-alertd.toml(5)`.
fn write_man_pages(command: &Command, folder: &Path) -> anyhow::Result<()> {
    let version = command.get_version().unwrap_or_default().to_owned();
    let mut built = command.clone().disable_help_subcommand(true);
    built.build();
    let mut pages = Vec::new();
    collect(&built, &mut pages);
    for (at, page) in pages.into_iter().enumerate() {
        let man = clap_mangen::Man::new(page)
            .source(format!("price-alertd {version}"))
            .manual("price-alertd manual");
        let mut text = Vec::new();
        man.render(&mut text)?;
        let more = if at == 0 {
            DAEMON_SECTIONS
        } else {
            COMMAND_SECTIONS
        };
        text.extend(roff(more).into_bytes());
        let path = folder.join(man.get_filename());
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let path = folder.join("price-alertd.toml.5");
    let mut page = Vec::new();
    writeln!(
        page,
        ".TH price-alertd.toml 5 \"\" \"price-alertd {version}\" \"price-alertd manual\""
    )?;
    page.extend(roff(&config_page(crate::config::EMBEDDED)).into_bytes());
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `command` and every visible command under it, the command first.
fn collect(command: &Command, pages: &mut Vec<Command>) {
    pages.push(command.clone());
    for subcommand in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        collect(subcommand, pages);
    }
}

/// What a command's page says beyond its options.
const COMMAND_SECTIONS: &str = ".SH EXIT STATUS
0 when it did what it was asked; otherwise one of the codes price-alertd(1) lists.
.SH SEE ALSO
price-alertd(1), price-alertd.toml(5)
";

/// Text with `.SH`, `.TP`, `.PP` and `.nf`/`.fi` request lines, its other
/// lines escaped for roff (hyphens, backslashes, a leading dot or quote).
fn roff(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if [".SH", ".SS", ".TP", ".PP", ".nf", ".fi", ".B", ".RS", ".RE"]
            .iter()
            .any(|request| line == *request || line.starts_with(&format!("{request} ")))
        {
            out.push_str(line);
        } else {
            let escaped = line.replace('\\', "\\e").replace('-', "\\-");
            if escaped.starts_with('.') || escaped.starts_with('\'') {
                out.push_str("\\&");
            }
            out.push_str(&escaped);
        }
        out.push('\n');
    }
    out
}

/// What `price-alertd(1)` says beyond its commands.
const DAEMON_SECTIONS: &str = ".SH EXIT STATUS
Codes follow sysexits(3); the unit does not restart after 78, 65 or 73.
.TP
0
Done; a daemon stopped by SIGTERM or SIGINT.
.TP
1
A job (run-job) or a command failed otherwise.
.TP
65
EX_DATAERR: the database is not one, a newer version's, or lacks what the daemon does not recreate.
.TP
66
EX_NOINPUT: there is no database (an admin command never creates one).
.TP
69
EX_UNAVAILABLE: the metrics address is held by another program.
.TP
73
EX_CANTCREAT: the database cannot be created, or its folder does not exist.
.TP
74
EX_IOERR: the database cannot be opened, read or written, or the server not reached.
.TP
78
EX_CONFIG: the configuration is invalid (every error is listed with its line and column) or missing.
.SH SIGNALS
.TP
SIGHUP
run re-reads the configuration: the jobs and the [webhook] settings change; the keys that changed are logged, and those that apply only at a restart named. A bad file is refused whole and the running jobs stay.
.TP
SIGTERM, SIGINT
run stops scheduling, lets a running job finish, delivers what is pending for up to webhook.drain_timeout, and exits 0; what is left stays in the outbox for the next start.
.SH FILES
.TP
/etc/price-alertd/price-alertd.toml
The configuration, when neither --config nor PRICE_ALERTD_CONFIG names one; see price-alertd.toml(5). Without it, the embedded copy of the shipped file runs.
.TP
/var/lib/price-alertd
The service's state directory: a relative database.path resolves here, for the service and for an operator's commands alike.
.TP
/usr/share/price-alertd
Prometheus rules, a Grafana dashboard and nginx + nchan relay configurations.
.SH ENVIRONMENT
.TP
PRICE_ALERTD_CONFIG
The configuration file, when --config is not given.
.TP
RUST_LOG
A log filter that overrides log.level (price_alertd=debug).
.TP
NO_COLOR
Set (to anything but empty): logs without colour.
.TP
PGPASSWORD
The PostgreSQL password, when neither the URL nor database.password_file gives one.
.TP
STATE_DIRECTORY, JOURNAL_STREAM, NOTIFY_SOCKET, WATCHDOG_USEC
Set by systemd: where a relative database path resolves, logs without their own timestamps and with priorities, readiness and status, and the watchdog.
.SH EXAMPLES
.nf
price-alertd check-config && systemctl restart price-alertd
price-alertd run-job evaluate
price-alertd alerts add AAPL above 200 --user u1 --cooldown 15m
price-alertd alerts explain 42
price-alertd alerts list --state stale-quote
price-alertd outbox show pa_5d1c0e7a9b3f4c2d8e6a1b0f_42_7
price-alertd outbox replay --state all --user u1 --since 2026-12-05T09:30:00Z --dry-run
price-alertd completions bash > /etc/bash_completion.d/price-alertd
.fi
.SH SEE ALSO
price-alertd.toml(5), systemctl(1), journalctl(1)
";

/// Whether a line (its comment mark taken off) sets a key: `name = ...`.
fn is_key(line: &str) -> bool {
    line.split_once('=').is_some_and(|(name, _)| {
        let name = name.trim();
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `price-alertd.toml(5)` from the documented configuration: its opening
/// comment, then each section with its keys, each key with the comment
/// above it (a key shown commented out is optional, shown as an example).
fn config_page(documented: &str) -> String {
    let mut page = String::from(
        ".SH NAME\nprice-alertd.toml - the configuration of price-alertd\n.SH DESCRIPTION\n",
    );
    let mut comment: Vec<String> = Vec::new();
    let mut in_section = false;
    let flush = |comment: &mut Vec<String>, page: &mut String| {
        if !comment.is_empty() {
            page.push_str(&comment.join("\n"));
            page.push('\n');
            comment.clear();
        }
    };
    for line in documented.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            flush(&mut comment, &mut page);
            page.push_str(&format!(".SH {trimmed}\n"));
            in_section = true;
            continue;
        }
        let text = trimmed.strip_prefix('#').map(str::trim);
        if in_section && is_key(text.unwrap_or(trimmed)) {
            let key = text
                .unwrap_or(trimmed)
                .replace('\\', "\\e")
                .replace('"', "\\(dq");
            page.push_str(&format!(".TP\n.B {key}\n"));
            flush(&mut comment, &mut page);
            continue;
        }
        match text {
            Some(text) if !text.is_empty() => comment.push(text.to_owned()),
            // A blank line, or an empty comment line: a paragraph ends.
            _ => {
                flush(&mut comment, &mut page);
                if !in_section {
                    page.push_str(".PP\n");
                }
            }
        }
    }
    flush(&mut comment, &mut page);
    page.push_str(".SH SEE ALSO\nprice-alertd(1)\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_page_documents_every_section_and_key() {
        let page = config_page(crate::config::EMBEDDED);
        for section in [
            "[database]",
            "[evaluator]",
            "[prices]",
            "[webhook]",
            "[metrics]",
        ] {
            assert!(page.contains(&format!(".SH {section}\n")), "{section}");
        }
        for key in [
            "path = ",
            "busy_timeout = ",
            "max_age = ",
            "retry_schedule = ",
        ] {
            assert!(
                page.lines()
                    .any(|line| line.starts_with(".B ") && line.contains(key)),
                "{key}"
            );
        }
        assert!(
            page.contains("Durations are strings"),
            "the opening comment"
        );
    }
}
