//! Values from outside as the daemon shows them, in logs and in errors: cut
//! to a bound, so that no row, file or answer can make a line grow without
//! bound.

/// The longest value from outside (a database row, a remote answer) a log
/// line shows whole.
const LOGGED_VALUE_CHARS: usize = 64;

/// A value from outside as a log line may show it: at most
/// [`LOGGED_VALUE_CHARS`] characters, a longer one cut and marked with its
/// length, so that no row or answer can make a log line grow without bound.
pub fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(LOGGED_VALUE_CHARS) {
        None => std::borrow::Cow::Borrowed(text),
        Some((cut, _)) => {
            std::borrow::Cow::Owned(format!("{}… ({} bytes in all)", &text[..cut], text.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_outside_are_cut_to_a_bound() {
        assert_eq!(bounded("AAPL"), "AAPL");
        let long = "é".repeat(25_000);
        let shown = bounded(&long);
        assert_eq!(
            shown,
            format!("{}… (50000 bytes in all)", "é".repeat(LOGGED_VALUE_CHARS))
        );
    }
}
