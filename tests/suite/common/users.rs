//! Other (unprivileged) identities to run a program as.

use std::path::Path;
use std::process::Command;

/// Another (unprivileged) identity to run a program as.
#[derive(Debug, Clone, Copy)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: &'static [u32],
    /// The umask the program starts with.
    pub umask: u32,
}

impl User {
    /// `nobody`, in no other group.
    pub const NOBODY: User = User {
        uid: 65534,
        gid: 65534,
        groups: &[],
        umask: 0o022,
    };

    /// `program` run as this user, through util-linux's `setpriv` (which
    /// needs no entry in /etc/passwd). The tests run as root, as CI does.
    pub fn command(&self, program: &Path) -> Command {
        let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap());
        assert_eq!(
            root, 0,
            "switching users needs root: run the tests as root (CI does) or under sudo"
        );
        let groups = if self.groups.is_empty() {
            "--clear-groups".to_owned()
        } else {
            let list: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            format!("--groups={}", list.join(","))
        };
        let mut command = Command::new("setpriv");
        command
            .args([
                format!("--reuid={}", self.uid),
                format!("--regid={}", self.gid),
                groups,
                "--".to_owned(),
                "sh".to_owned(),
                "-c".to_owned(),
                format!("umask {:04o} && exec \"$@\"", self.umask),
                "sh".to_owned(),
            ])
            .arg(program)
            .env_remove("PRICE_ALERTD_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("STATE_DIRECTORY");
        command
    }
}
