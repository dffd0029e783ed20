//! Every key of a configuration file as written, each with a fingerprint of
//! its value, so that a reload can say which keys changed without keeping
//! or showing a value (a secret's included).

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};

/// The keys of a file: `section.key`, a job's as `jobs[name].key` (by its
/// name, so that adding a job does not move the others'), each with a
/// fingerprint of its value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings(BTreeMap<String, u64>);

impl Settings {
    /// The keys of `text`, a file that parses as TOML (anything else has no
    /// keys).
    pub fn of(text: &str) -> Settings {
        let mut settings = Settings::default();
        if let Ok(table) = text.parse::<toml::Table>() {
            settings.add_table("", &table);
        }
        settings
    }

    /// The keys set, unset or changed from `self` to `newer`, in order.
    pub fn changed(&self, newer: &Settings) -> Vec<String> {
        let mut keys: Vec<String> = self
            .0
            .iter()
            .filter(|(key, value)| newer.0.get(*key) != Some(value))
            .chain(newer.0.iter().filter(|(key, _)| !self.0.contains_key(*key)))
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    fn add_table(&mut self, prefix: &str, table: &toml::Table) {
        for (key, value) in table {
            let path = format!("{prefix}{key}");
            match value {
                toml::Value::Table(inner) => self.add_table(&format!("{path}."), inner),
                toml::Value::Array(jobs) if path == "jobs" => {
                    for (index, job) in jobs.iter().enumerate() {
                        let name = job.get("name").and_then(toml::Value::as_str);
                        let job_path = match name {
                            Some(name) => format!("jobs[{name}]"),
                            None => format!("jobs[{index}]"),
                        };
                        match job {
                            toml::Value::Table(job) => self.add_table(&format!("{job_path}."), job),
                            other => self.add(job_path, other),
                        }
                    }
                }
                other => self.add(path, other),
            }
        }
    }

    fn add(&mut self, path: String, value: &toml::Value) {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        value.to_string().hash(&mut hasher);
        self.0.insert(path, hasher.finish());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_names_its_keys_and_a_job_by_its_name() {
        let before = Settings::of(
            "[log]\nlevel = \"info\"\n[webhook]\nsecret = \"a\"\n\
             [[jobs]]\nname = \"a\"\nschedule = \"1\"\n[[jobs]]\nname = \"b\"\nschedule = \"2\"\n",
        );
        let after = Settings::of(
            "[log]\nlevel = \"debug\"\n[webhook]\nsecret = \"b\"\n[metrics]\nlisten = \"x\"\n\
             [[jobs]]\nname = \"z\"\nschedule = \"0\"\n\
             [[jobs]]\nname = \"a\"\nschedule = \"1\"\n[[jobs]]\nname = \"b\"\nschedule = \"3\"\n",
        );
        assert_eq!(
            before.changed(&after),
            [
                "jobs[b].schedule",
                "jobs[z].name",
                "jobs[z].schedule",
                "log.level",
                "metrics.listen",
                "webhook.secret",
            ]
        );
        assert!(before.changed(&before.clone()).is_empty());
        // Only keys: no value reaches what it says.
        assert!(!format!("{after:?}").contains("debug"));
    }
}
