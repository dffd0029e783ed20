//! How a problem in the file is reported: every error at once, each with its
//! key and `line:col`, serde's included (the entry it rejected is taken out
//! and the rest tried again).

use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::raw;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The dotted key the problem is about, e.g. `jobs[1].schedule`; empty for syntax errors.
    pub key: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // About the file, not a place in it (e.g. it cannot be read).
            f.write_str(&self.message)
        } else if self.key.is_empty() {
            write!(f, "{}:{}: {}", self.line, self.column, self.message)
        } else {
            write!(
                f,
                "{}:{}: {}: {}",
                self.line, self.column, self.key, self.message
            )
        }
    }
}

/// Every problem found in one file.
#[derive(Debug)]
pub struct ConfigErrors {
    pub origin: String,
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.errors.len();
        write!(
            f,
            "{}: {count} error{}",
            self.origin,
            if count == 1 { "" } else { "s" }
        )?;
        for error in &self.errors {
            if error.line == 0 {
                write!(f, "\n  {}: {error}", self.origin)?;
            } else {
                write!(f, "\n  {}:{error}", self.origin)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Deserializes the mirror, collecting every serde error: after each error the
/// offending entry is taken out of the table and the rest is tried again.
pub(super) fn deserialize_all(
    mut table: Spanned<DeTable<'_>>,
    lines: &LineIndex,
    errors: &mut Vec<ConfigError>,
) -> Option<raw::RawFile> {
    loop {
        let attempt = raw::RawFile::deserialize(toml::de::Deserializer::from(table.clone()));
        let error = match attempt {
            Ok(file) => return Some(file),
            Err(error) => error,
        };
        let span = error.span().unwrap_or(0..0);
        let mut path = Vec::new();
        let found = take_entry(table.get_mut(), &span, &mut path);
        let (line, column) = lines.locate(span.start);
        errors.push(ConfigError {
            key: path.join(".").replace(".[", "["),
            line,
            column,
            message: error.message().to_owned(),
        });
        if !found {
            return None;
        }
    }
}

/// Removes the innermost entry (key and value, or array element) whose span
/// holds `span`, recording its path. Returns false if no entry holds it.
/// Searches every entry: the span of a `[section]` covers only its header.
fn take_entry(table: &mut DeTable<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    let keys: Vec<String> = table.keys().map(|key| key.get_ref().to_string()).collect();
    for key in keys {
        let entry = table
            .get_mut(key.as_str())
            .expect("the key was just listed");
        path.push(key.clone());
        if take_in_value(entry.get_mut(), span, path) {
            return true;
        }
        let (key_span, value_span) = match table.get_key_value(key.as_str()) {
            Some((key, value)) => (key.span(), value.span()),
            None => unreachable!("the key was just listed"),
        };
        if holds(&key_span, span) || holds(&value_span, span) {
            table.remove(key.as_str());
            return true;
        }
        path.pop();
    }
    false
}

fn take_in_value(value: &mut DeValue<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
    match value {
        DeValue::Table(inner) => take_entry(inner, span, path),
        DeValue::Array(items) => {
            let slice: &mut [Spanned<DeValue<'_>>] = items;
            let mut at_fault = None;
            for (index, item) in slice.iter_mut().enumerate() {
                path.push(format!("[{index}]"));
                if take_in_value(item.get_mut(), span, path) {
                    return true;
                }
                if holds(&item.span(), span) {
                    at_fault = Some(index);
                    break;
                }
                path.pop();
            }
            // The element itself is at fault (e.g. a table of the wrong type): drop it.
            let Some(index) = at_fault else { return false };
            let mut kept = toml::de::DeArray::new();
            for (at, item) in items.iter().enumerate() {
                if at != index {
                    kept.push(item.clone());
                }
            }
            *items = kept;
            true
        }
        _ => false,
    }
}

fn holds(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    *inner != (0..0) && outer.start <= inner.start && inner.end <= outer.end
}

/// Where validation reports a problem: the key, its span in the file, what is wrong.
pub(super) trait Report: FnMut(&str, Range<usize>, String) {}

impl<F: FnMut(&str, Range<usize>, String)> Report for F {}

/// A value of the file as an error may show it: cut to a bound.
pub(super) fn logging_value(text: &str) -> std::borrow::Cow<'_, str> {
    crate::bounded::bounded(text)
}

/// Turns byte offsets into 1-based line and column numbers.
pub(super) struct LineIndex {
    starts: Vec<usize>,
    text_len: usize,
    text: String,
}

impl LineIndex {
    pub(super) fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        LineIndex {
            starts,
            text_len: text.len(),
            text: text.to_owned(),
        }
    }

    pub(super) fn locate(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text_len);
        let line = self.starts.partition_point(|&start| start <= offset);
        let start = self.starts[line - 1];
        let column = self.text[start..offset].chars().count() + 1;
        (line, column)
    }
}
