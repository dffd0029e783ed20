//! The conditions an alert can have, in one table: each one's name as
//! `price_alerts.condition` holds it, and what it is. Judging a price
//! (`evaluate::judge`), checking an alert an operator adds (`admin`) and
//! the help both read them here.

/// The conditions of `price_alerts.condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// price >= target_price
    Above,
    /// price <= target_price
    Below,
    /// the previous observed price was below target_price, and price is at or above it
    CrossingUp,
    /// the previous observed price was above target_price, and price is at or below it
    CrossingDown,
    /// price has risen by at least target_price percent from reference_price
    MovingUpPct,
    /// price has fallen by at least target_price percent from reference_price
    MovingDownPct,
    /// price is in the channel: target_price <= price <= upper_price
    Inside,
    /// price is out of the channel: below target_price or above upper_price
    Outside,
    /// the previous observed price was out of the channel, and price is in it
    Entering,
    /// the previous observed price was in the channel, and price is out of it
    Exiting,
}

impl Condition {
    /// Every condition, with its name, in the order the help lists them.
    pub const ALL: [(Condition, &'static str); 10] = [
        (Condition::Above, "above"),
        (Condition::Below, "below"),
        (Condition::CrossingUp, "crossing_up"),
        (Condition::CrossingDown, "crossing_down"),
        (Condition::MovingUpPct, "moving_up_pct"),
        (Condition::MovingDownPct, "moving_down_pct"),
        (Condition::Inside, "inside"),
        (Condition::Outside, "outside"),
        (Condition::Entering, "entering"),
        (Condition::Exiting, "exiting"),
    ];

    /// The condition `price_alerts.condition` names, if any.
    pub fn parse(text: &str) -> Option<Condition> {
        Condition::ALL
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(condition, _)| *condition)
    }

    /// Its name, as `price_alerts.condition` holds it.
    pub fn name(self) -> &'static str {
        Condition::ALL
            .iter()
            .find(|(condition, _)| *condition == self)
            .map(|(_, name)| *name)
            .expect("every condition is in the table")
    }

    /// Every name, for people: "above, below, ... entering or exiting".
    pub fn names() -> String {
        let names: Vec<&str> = Condition::ALL.iter().map(|(_, name)| *name).collect();
        let (last, rest) = names.split_last().expect("conditions exist");
        format!("{} or {last}", rest.join(", "))
    }

    /// A banded alert of this condition comes back when its price is back
    /// inside its channel by the band (both return levels hold), not
    /// outside it or past a level (either holds).
    pub fn returns_inside(self) -> bool {
        matches!(self, Condition::Outside | Condition::Exiting)
    }

    /// Between two levels: `target_price` and `upper_price`.
    pub fn is_channel(self) -> bool {
        matches!(
            self,
            Condition::Inside | Condition::Outside | Condition::Entering | Condition::Exiting
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_condition_has_one_name_that_parses_back_to_it() {
        for (condition, name) in Condition::ALL {
            assert_eq!(condition.name(), name);
            assert_eq!(Condition::parse(name), Some(condition));
        }
        assert_eq!(Condition::parse("sideways"), None);
        assert_eq!(
            Condition::names(),
            "above, below, crossing_up, crossing_down, moving_up_pct, moving_down_pct, \
             inside, outside, entering or exiting"
        );
    }
}
