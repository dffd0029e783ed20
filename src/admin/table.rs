//! Tables for a terminal: columns sized from their cells.

use std::io::Write;

/// How a column lines its cells up.
#[derive(Clone, Copy)]
pub(super) enum Align {
    Left,
    /// Numbers.
    Right,
}

/// A table for a terminal: each column as wide as its widest cell, so that
/// no value pushes the rest of its row under the wrong heading; the last
/// column is not padded.
pub(super) struct Table {
    columns: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(columns: &[(&'static str, Align)]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.columns.len());
        self.rows.push(cells);
    }

    pub(super) fn write(&self, indent: &str, out: &mut impl Write) -> std::io::Result<()> {
        let headings: Vec<String> = self
            .columns
            .iter()
            .map(|(heading, _)| heading.to_string())
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|at| {
                std::iter::once(&headings)
                    .chain(&self.rows)
                    .map(|row| row[at].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in std::iter::once(&headings).chain(&self.rows) {
            let mut line = indent.to_owned();
            for (at, cell) in row.iter().enumerate() {
                let pad = " ".repeat(widths[at] - cell.chars().count());
                match self.columns[at].1 {
                    Align::Left => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                }
                line.push_str("  ");
            }
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}
