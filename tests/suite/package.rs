//! The Debian package does what README says: `cargo deb` (installed by
//! `tests/run`) builds it from the binary the tests use, and this reads what
//! dpkg would install and run: the files and their modes, the conffile, and
//! maintainer scripts that create the users, enable the unit without starting
//! it, stop it on removal and forget it on purge.

use crate::common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use common::unit_setting;

/// Builds the package from the already built (debug) binary; returns its
/// folder and path.
fn build() -> (tempfile::TempDir, std::path::PathBuf) {
    let out = tempfile::tempdir().unwrap();
    let deb = out.path().join("price-alertd.deb");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // `--profile dev` packages the binary the tests were built with (cargo-deb
    // warns that it is meant for releases; what is checked here is the same).
    let output = Command::new(cargo)
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "--output",
        ])
        .arg(&deb)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo deb (tests/run installs cargo-deb)");
    assert!(
        output.status.success(),
        "cargo deb failed (tests/run installs cargo-deb): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (out, deb)
}

fn dpkg_deb(args: &[&OsStr]) -> String {
    let output = Command::new("dpkg-deb").args(args).output().unwrap();
    assert!(output.status.success(), "dpkg-deb {args:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// The position of `needle` in `text`, failing the test if absent.
fn find(text: &str, needle: &str, what: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("{what} lacks {needle:?}:\n{text}"))
}

#[test]
fn the_package_installs_an_enabled_service_with_its_users_and_removes_cleanly() {
    let (out, deb) = build();

    // What it installs, with which modes.
    let listing = dpkg_deb(&["--contents".as_ref(), deb.as_ref()]);
    for (mode, path) in [
        ("-rwxr-xr-x", "./usr/bin/price-alertd"),
        (
            "-rw-r--r--",
            "./usr/lib/systemd/system/price-alertd.service",
        ),
        ("-rw-r--r--", "./usr/lib/sysusers.d/price-alertd.conf"),
        // The config may hold secrets: never world-readable.
        ("-rw-r-----", "./etc/price-alertd/price-alertd.toml"),
        ("-rw-r--r--", "./usr/share/doc/price-alertd/README.md"),
        ("-rw-r--r--", "./usr/share/doc/price-alertd/ARCHITECTURE.md"),
        ("-rw-r--r--", "./usr/share/doc/price-alertd/BENCHMARKS.md"),
        // Generated from the clap definitions (tests/suite/cli.rs checks they are
        // current); cargo-deb compresses man pages.
        ("-rw-r--r--", "./usr/share/man/man1/price-alertd.1.gz"),
        (
            "-rw-r--r--",
            "./usr/share/man/man1/price-alertd-outbox-replay.1.gz",
        ),
        ("-rw-r--r--", "./usr/share/man/man5/price-alertd.toml.5.gz"),
        (
            "-rw-r--r--",
            "./usr/share/doc/price-alertd/changelog.Debian.gz",
        ),
        (
            "-rw-r--r--",
            "./usr/share/bash-completion/completions/price-alertd",
        ),
        (
            "-rw-r--r--",
            "./usr/share/zsh/vendor-completions/_price-alertd",
        ),
        (
            "-rw-r--r--",
            "./usr/share/fish/vendor_completions.d/price-alertd.fish",
        ),
    ] {
        assert!(
            listing
                .lines()
                .any(|line| line.starts_with(mode) && line.ends_with(path)),
            "{path} with {mode} is not in the package:\n{listing}"
        );
    }

    // The files are the ones in the repository.
    let tree = out.path().join("tree");
    dpkg_deb(&["--extract".as_ref(), deb.as_ref(), tree.as_ref()]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (packaged, source) in [
        (
            "usr/lib/systemd/system/price-alertd.service",
            "systemd/price-alertd.service",
        ),
        (
            "usr/lib/sysusers.d/price-alertd.conf",
            "systemd/price-alertd.sysusers",
        ),
        (
            "usr/lib/tmpfiles.d/price-alertd.conf",
            "systemd/price-alertd.tmpfile",
        ),
        (
            "etc/price-alertd/price-alertd.toml",
            "etc/price-alertd.toml",
        ),
        // The operator's kit (tests/suite/kit.rs checks it).
        (
            "usr/share/price-alertd/prometheus/price-alertd.rules.yml",
            "etc/prometheus/price-alertd.rules.yml",
        ),
        (
            "usr/share/price-alertd/prometheus/price-alertd.rules.test.yml",
            "etc/prometheus/price-alertd.rules.test.yml",
        ),
        (
            "usr/share/price-alertd/grafana/price-alertd.json",
            "etc/grafana/price-alertd.json",
        ),
        // The relay that gives each user a channel of their own.
        (
            "usr/share/price-alertd/nginx/nchan-per-user.conf",
            "etc/nchan-per-user.conf",
        ),
        // The batch relay that resumes streams from the outbox.
        (
            "usr/share/price-alertd/pushpin/pushpin.conf",
            "etc/pushpin/pushpin.conf",
        ),
        (
            "usr/share/price-alertd/pushpin/routes",
            "etc/pushpin/routes",
        ),
    ] {
        assert_eq!(
            std::fs::read(tree.join(packaged)).unwrap(),
            std::fs::read(root.join(source)).unwrap(),
            "{packaged}"
        );
    }

    // The config is a conffile: an operator's edits survive upgrades.
    let control = out.path().join("control");
    dpkg_deb(&["--control".as_ref(), deb.as_ref(), control.as_ref()]);
    let read = |name: &str| std::fs::read_to_string(control.join(name)).unwrap_or_default();
    assert_eq!(
        read("conffiles").trim(),
        "/etc/price-alertd/price-alertd.toml"
    );

    // Maintainer scripts: valid shell, and in the right order.
    for script in ["postinst", "prerm", "postrm"] {
        let status = Command::new("sh")
            .arg("-n")
            .arg(control.join(script))
            .status()
            .unwrap();
        assert!(status.success(), "{script} is not valid shell");
    }
    let postinst = read("postinst");
    let users = find(&postinst, "systemd-sysusers", "postinst");
    let state = find(
        &postinst,
        "systemd-tmpfiles --create price-alertd.conf",
        "postinst",
    );
    assert!(
        users < state,
        "the users first, then their folder:\n{postinst}"
    );
    let enable = find(
        &postinst,
        "deb-systemd-helper enable price-alertd.service",
        "postinst",
    );
    let reload = find(&postinst, "daemon-reload", "postinst");
    let config = find(
        &postinst,
        "chgrp price-alertd /etc/price-alertd",
        "postinst",
    );
    assert!(
        users < enable && enable < config && reload < config,
        "{postinst}"
    );
    assert!(
        !postinst.contains("deb-systemd-invoke start"),
        "installing must not start the service (its config comes first):\n{postinst}"
    );
    find(
        &postinst,
        "deb-systemd-invoke try-restart",
        "postinst (upgrades)",
    );
    find(
        &read("prerm"),
        "deb-systemd-invoke stop price-alertd.service",
        "prerm",
    );
    let postrm = read("postrm");
    find(
        &postrm,
        "deb-systemd-helper purge price-alertd.service",
        "postrm",
    );
    find(&postrm, "daemon-reload", "postrm");
    assert!(
        !postrm.contains("rm -rf"),
        "purging must keep the database, which is the application's data too"
    );
}

/// lintian, Debian's package checker, finds no error and no warning. The
/// package is built here from the tests' debug binary, which is not
/// stripped; `cargo deb` (a release build) strips it, so that one tag is
/// left out.
#[test]
fn lintian_finds_no_error_or_warning_in_the_package() {
    let (_out, deb) = build();
    let output = Command::new("lintian")
        .args([
            "--allow-root",
            "--no-cfg",
            "--suppress-tags",
            "unstripped-binary-or-object",
        ])
        .arg(&deb)
        .output()
        .expect("lintian (tests/run installs it)");
    let report = String::from_utf8_lossy(&output.stdout);
    let found: Vec<&str> = report
        .lines()
        .filter(|line| line.starts_with("E:") || line.starts_with("W:"))
        .collect();
    assert!(
        found.is_empty(),
        "lintian: {found:#?}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_sysusers_file_creates_the_identities_the_unit_runs_as() {
    let sysroot = tempfile::tempdir().unwrap();
    std::fs::create_dir(sysroot.path().join("etc")).unwrap();
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/price-alertd.sysusers");
    let output = Command::new("systemd-sysusers")
        .arg(format!("--root={}", sysroot.path().display()))
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let passwd = std::fs::read_to_string(sysroot.path().join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(sysroot.path().join("etc/group")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|line| line.starts_with(&format!("{}:", unit_setting("User")))),
        "{passwd}"
    );
    for key in ["Group", "SupplementaryGroups"] {
        assert!(
            group
                .lines()
                .any(|line| line.starts_with(&format!("{}:", unit_setting(key)))),
            "{key}: {group}"
        );
    }
    // A system user that cannot log in.
    let user = passwd
        .lines()
        .find(|line| line.starts_with("price-alertd:"))
        .unwrap();
    assert!(user.ends_with(":/usr/sbin/nologin"), "{user}");

    // The state directory the package creates is the one the unit makes:
    // owned by User= and Group=, with StateDirectoryMode=.
    let tmpfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/price-alertd.tmpfile");
    let status = Command::new("systemd-tmpfiles")
        .args(["--create", &format!("--root={}", sysroot.path().display())])
        .arg(&tmpfile)
        .status()
        .unwrap();
    assert!(status.success());
    let id = |table: &str, name: &str| -> u32 {
        let line = table
            .lines()
            .find(|line| line.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {table}"));
        line.split(':').nth(2).unwrap().parse().unwrap()
    };
    use std::os::unix::fs::MetadataExt as _;
    let state = std::fs::metadata(sysroot.path().join("var/lib/price-alertd")).unwrap();
    assert_eq!(state.uid(), id(&passwd, &unit_setting("User")));
    assert_eq!(state.gid(), id(&group, &unit_setting("Group")));
    assert_eq!(
        state.mode() & 0o7777,
        u32::from_str_radix(&unit_setting("StateDirectoryMode"), 8).unwrap()
    );
}

#[test]
fn systemd_rates_the_unit_1_2_or_better() {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/price-alertd.service");
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let level: f64 = text
        .lines()
        .find_map(|line| {
            line.split("Overall exposure level for price-alertd.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{text}"));
    eprintln!("systemd-analyze security: {level}");
    assert!(level <= 1.2, "exposure {level}:\n{text}");
}
