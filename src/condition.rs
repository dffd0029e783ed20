//! The conditions an alert can have, in one table: each one's name as
//! `price_alerts.condition` holds it, the levels it takes, when it fires,
//! where a banded alert's price must come back to, and which alerts a price
//! move can reach (as data, which each engine renders as SQL over its level
//! indexes). Parsing a row (`alert`), judging it (`evaluate::judge`), the
//! store's reads and the CLI's help all read them here.
//!
//! Adding a condition is one edit here (a variant, its row in [`Condition::ALL`],
//! its arm in each `match`, its ranges in [`REACH`]) and, if its level is not
//! its target, the level expression of the store's indexes with a migration.

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
    /// A condition is in [`REACH`] too, and in the `match`es below.
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

    /// The levels it takes.
    pub fn shape(self) -> Shape {
        match self {
            Condition::Above
            | Condition::Below
            | Condition::CrossingUp
            | Condition::CrossingDown => Shape::Level,
            Condition::MovingUpPct | Condition::MovingDownPct => Shape::Move,
            Condition::Inside | Condition::Outside | Condition::Entering | Condition::Exiting => {
                Shape::Channel
            }
        }
    }

    /// Whether an alert of this condition with `levels` (of its
    /// [`shape`](Condition::shape)) fires at `price`, the daemon having
    /// observed `previous` before.
    pub fn fires(self, levels: Levels, price: f64, previous: Option<f64>) -> bool {
        match (self, levels) {
            (Condition::Above, Levels::Level(target)) => price >= target,
            (Condition::Below, Levels::Level(target)) => price <= target,
            (Condition::CrossingUp, Levels::Level(target)) => {
                previous.is_some_and(|previous| previous < target) && price >= target
            }
            (Condition::CrossingDown, Levels::Level(target)) => {
                previous.is_some_and(|previous| previous > target) && price <= target
            }
            (Condition::MovingUpPct, Levels::Move { percent, reference }) => {
                (price - reference) / reference * 100.0 >= percent
            }
            (Condition::MovingDownPct, Levels::Move { percent, reference }) => {
                -((price - reference) / reference * 100.0) >= percent
            }
            (Condition::Inside, Levels::Channel(channel)) => channel.holds(price),
            (Condition::Outside, Levels::Channel(channel)) => !channel.holds(price),
            (Condition::Entering, Levels::Channel(channel)) => {
                previous.is_some_and(|previous| !channel.holds(previous)) && channel.holds(price)
            }
            (Condition::Exiting, Levels::Channel(channel)) => {
                previous.is_some_and(|previous| channel.holds(previous)) && !channel.holds(price)
            }
            (condition, levels) => {
                unreachable!("{condition:?} does not take {levels:?}: `alert` builds its shape")
            }
        }
    }

    /// Where the price of a banded alert of this condition with `levels`
    /// must come back to, once it fired, before it is re-armed, `band`
    /// percent past its level: at or below the first, at or above the
    /// second (both must hold when [`returns_inside`](Self::returns_inside),
    /// either otherwise). `above 200` with 1%: at or below 198; a moving-%
    /// alert's move back within its percent less the band, against its
    /// reference; a channel's price out of it by the band (`inside`,
    /// `entering`) or back inside it by the band (`outside`, `exiting`).
    pub fn return_levels(self, levels: Levels, band: f64) -> (Option<f64>, Option<f64>) {
        let (down, up) = (1.0 - band / 100.0, 1.0 + band / 100.0);
        let (below, above) = match (self, levels) {
            (Condition::Above | Condition::CrossingUp, Levels::Level(target)) => {
                (Some(target * down), None)
            }
            (Condition::Below | Condition::CrossingDown, Levels::Level(target)) => {
                (None, Some(target * up))
            }
            (Condition::MovingUpPct, Levels::Move { percent, reference }) => {
                (Some(reference * (1.0 + (percent - band) / 100.0)), None)
            }
            (Condition::MovingDownPct, Levels::Move { percent, reference }) => {
                (None, Some(reference * (1.0 - (percent - band) / 100.0)))
            }
            (
                Condition::Inside | Condition::Entering,
                Levels::Channel(Channel { lower, upper }),
            ) => (Some(lower * down), Some(upper * up)),
            (
                Condition::Outside | Condition::Exiting,
                Levels::Channel(Channel { lower, upper }),
            ) => (Some(upper * down), Some(lower * up)),
            (condition, levels) => {
                unreachable!("{condition:?} does not take {levels:?}: `alert` builds its shape")
            }
        };
        let finite = |level: Option<f64>| level.filter(|level| level.is_finite());
        (finite(below), finite(above))
    }
}

/// The levels a condition takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One level: `target_price`.
    Level,
    /// A move of `target_price` percent from `reference_price`.
    Move,
    /// A channel from `target_price` up to `upper_price`.
    Channel,
}

/// An alert's levels, valid for its condition's [`Shape`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Levels {
    /// A finite price.
    Level(f64),
    /// A finite percent, from a positive reference price.
    Move {
        percent: f64,
        reference: f64,
    },
    Channel(Channel),
}

/// Two finite levels, the lower below the upper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Channel {
    pub lower: f64,
    pub upper: f64,
}

impl Channel {
    /// Whether `price` is in the channel (its levels included).
    pub fn holds(self, price: f64) -> bool {
        self.lower <= price && price <= self.upper
    }
}

/// Which alerts a price move can reach, as ranges of the store's level
/// indexes: every alert [`Condition::fires`] could fire at the new price is
/// in one of its condition's ranges (and few that cannot, which are judged
/// and held). An alert's level is the number its condition compares the
/// price with: its target, the price at which a moving-% alert's move is
/// reached, or a channel's lower level; a channel's upper level has an
/// index of its own. Each engine renders each range as SQL.
pub const REACH: &[Range] = &[
    Range::new(
        Condition::Above,
        Direction::Any,
        &[(Indexed::Level, Cmp::Le, Value::Price)],
    ),
    Range::new(
        Condition::Below,
        Direction::Any,
        &[(Indexed::Level, Cmp::Ge, Value::Price)],
    ),
    Range::new(
        Condition::MovingUpPct,
        Direction::Any,
        &[(Indexed::Level, Cmp::Le, Value::PriceWidenedUp)],
    ),
    Range::new(
        Condition::MovingDownPct,
        Direction::Any,
        &[(Indexed::Level, Cmp::Ge, Value::PriceWidenedDown)],
    ),
    Range::new(
        Condition::Inside,
        Direction::Any,
        &[
            (Indexed::Level, Cmp::Le, Value::Price),
            (Indexed::Upper, Cmp::Ge, Value::Price),
        ],
    ),
    Range::new(
        Condition::Outside,
        Direction::Any,
        &[(Indexed::Level, Cmp::Gt, Value::Price)],
    ),
    Range::new(
        Condition::Outside,
        Direction::Any,
        &[(Indexed::Upper, Cmp::Lt, Value::Price)],
    ),
    Range::new(
        Condition::CrossingUp,
        Direction::Up,
        &[
            (Indexed::Level, Cmp::Gt, Value::Previous),
            (Indexed::Level, Cmp::Le, Value::Price),
        ],
    ),
    Range::new(
        Condition::CrossingDown,
        Direction::Down,
        &[
            (Indexed::Level, Cmp::Lt, Value::Previous),
            (Indexed::Level, Cmp::Ge, Value::Price),
        ],
    ),
    // In through the lower level on the way up, through the upper on the
    // way down.
    Range::new(
        Condition::Entering,
        Direction::Up,
        &[
            (Indexed::Level, Cmp::Gt, Value::Previous),
            (Indexed::Level, Cmp::Le, Value::Price),
            (Indexed::Upper, Cmp::Ge, Value::Price),
        ],
    ),
    Range::new(
        Condition::Entering,
        Direction::Down,
        &[
            (Indexed::Upper, Cmp::Lt, Value::Previous),
            (Indexed::Upper, Cmp::Ge, Value::Price),
            (Indexed::Level, Cmp::Le, Value::Price),
        ],
    ),
    // Out through the upper level on the way up, through the lower on the
    // way down.
    Range::new(
        Condition::Exiting,
        Direction::Up,
        &[
            (Indexed::Upper, Cmp::Ge, Value::Previous),
            (Indexed::Upper, Cmp::Lt, Value::Price),
            (Indexed::Level, Cmp::Le, Value::Previous),
        ],
    ),
    Range::new(
        Condition::Exiting,
        Direction::Down,
        &[
            (Indexed::Level, Cmp::Gt, Value::Price),
            (Indexed::Level, Cmp::Le, Value::Previous),
            (Indexed::Upper, Cmp::Ge, Value::Previous),
        ],
    ),
];

/// One range of [`REACH`]: the alerts of `condition` whose levels hold
/// every bound, read only on a move of its kind. The first bound's column
/// is the index it reads.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    pub condition: Condition,
    pub on: Direction,
    pub bounds: &'static [(Indexed, Cmp, Value)],
}

impl Range {
    const fn new(
        condition: Condition,
        on: Direction,
        bounds: &'static [(Indexed, Cmp, Value)],
    ) -> Range {
        Range {
            condition,
            on,
            bounds,
        }
    }

    /// The index it reads.
    pub fn index(&self) -> Indexed {
        self.bounds[0].0
    }

    /// Whether a move from `previous` to `price` can reach anything in it.
    pub fn applies(&self, price: f64, previous: Option<f64>) -> bool {
        match self.on {
            Direction::Any => true,
            Direction::Up => previous.is_some_and(|previous| previous < price),
            Direction::Down => previous.is_some_and(|previous| previous > price),
        }
    }
}

/// The moves a range is read on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Any,
    /// From a lower observed price.
    Up,
    /// From a higher observed price.
    Down,
}

/// What a bound compares: an alert's level, or a channel's upper level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexed {
    Level,
    Upper,
}

/// How a bound compares its column with its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// What a bound compares a column with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    /// The new price.
    Price,
    /// The price observed before.
    Previous,
    /// The new price, [`ROUNDING`] higher.
    PriceWidenedUp,
    /// The new price, [`ROUNDING`] lower.
    PriceWidenedDown,
}

impl Value {
    /// Its number for a move from `previous` to `price` (NaN, which no
    /// bound holds, for a previous price never observed).
    pub fn of(self, price: f64, previous: Option<f64>) -> f64 {
        match self {
            Value::Price => price,
            Value::Previous => previous.unwrap_or(f64::NAN),
            Value::PriceWidenedUp => price * (1.0 + ROUNDING),
            Value::PriceWidenedDown => price * (1.0 - ROUNDING),
        }
    }
}

/// How far the moving-% bounds are widened, relative to the price: the
/// index computes the level one way and [`Condition::fires`] the
/// percentage another, and their rounding may differ in the last bits.
/// Rows read in excess are judged and held.
pub const ROUNDING: f64 = 1e-9;

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Whether an alert of `condition` with `levels` is in one of its
    /// ranges that a move from `previous` to `price` reads, with its levels
    /// as the store's indexes hold them.
    fn reached(condition: Condition, levels: Levels, price: f64, previous: Option<f64>) -> bool {
        let (level, upper) = match levels {
            Levels::Level(target) => (target, f64::NAN),
            Levels::Move { percent, reference } if condition == Condition::MovingUpPct => {
                (reference * (1.0 + percent / 100.0), f64::NAN)
            }
            Levels::Move { percent, reference } => (reference * (1.0 - percent / 100.0), f64::NAN),
            Levels::Channel(Channel { lower, upper }) => (lower, upper),
        };
        REACH
            .iter()
            .filter(|range| range.condition == condition && range.applies(price, previous))
            .any(|range| {
                range.bounds.iter().all(|&(indexed, cmp, value)| {
                    let column = match indexed {
                        Indexed::Level => level,
                        Indexed::Upper => upper,
                    };
                    let value = value.of(price, previous);
                    match cmp {
                        Cmp::Lt => column < value,
                        Cmp::Le => column <= value,
                        Cmp::Gt => column > value,
                        Cmp::Ge => column >= value,
                    }
                })
            })
    }

    fn price() -> impl Strategy<Value = f64> {
        prop_oneof![0.01f64..1_000.0, (1u32..1_000).prop_map(f64::from)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Every alert a move fires is in a range of [`REACH`] that the
        /// move reads: the table misses nothing `fires` decides.
        #[test]
        fn every_alert_a_move_fires_is_in_a_range_it_reads(
            at in 0..Condition::ALL.len(),
            target in price(),
            percent in -50.0f64..200.0,
            width in price(),
            (price_at, price) in (0..6usize, price()),
            (previous_at, previous) in (0..7usize, price()),
        ) {
            // Prices on the levels, or either side of them, most of the
            // time: the ranges' edges.
            let near_a_level = |at: usize, random: f64| match at {
                0 => target,
                1 => target + width,
                2 => target / 2.0,
                3 => target + width * 2.0,
                _ => random,
            };
            let price = near_a_level(price_at, price);
            let previous = (previous_at < 6).then(|| near_a_level(previous_at, previous));
            let condition = Condition::ALL[at].0;
            let levels = match condition.shape() {
                Shape::Level => Levels::Level(target),
                Shape::Move => Levels::Move { percent, reference: target },
                Shape::Channel => Levels::Channel(Channel { lower: target, upper: target + width }),
            };
            if condition.fires(levels, price, previous) {
                prop_assert!(
                    reached(condition, levels, price, previous),
                    "{condition:?} {levels:?} fires at {price} from {previous:?} but no range reads it"
                );
            }
        }
    }

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
