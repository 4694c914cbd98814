//! Durations as Distribution writes them: Go's `time.ParseDuration` text,
//! such as `300ms`, `10s`, `1h30m` or `1.5h`.
//!
//! Distribution's files are read by Go, so a duration that Go takes must
//! be taken here, and one that Go refuses (`1 hour`, `2d`) must be refused
//! here too, or a file would work with one registry and not the other. A
//! duration writes back as such text, so a rendered file reads the same in
//! both.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration read from and written as Go duration text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoDuration(pub Duration);

/// Why a text is no Go duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing, or a sign (negative durations mean nothing here).
    #[error("expected a number followed by a unit (ns, us, ms, s, m, h)")]
    Empty,
    /// A number without a unit, or an unknown unit.
    #[error("{0:?} is no unit: expected ns, us, ms, s, m or h")]
    Unit(String),
    /// A unit without a number before it.
    #[error("expected a number before {0:?}")]
    Number(String),
    /// More nanoseconds than a `u64` holds (about 584 years).
    #[error("too long")]
    Overflow,
}

/// Nanoseconds in one of each unit Go knows.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

impl FromStr for GoDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<GoDuration, DurationError> {
        if text == "0" {
            return Ok(GoDuration(Duration::ZERO));
        }
        let mut rest = text.strip_prefix('+').unwrap_or(text);
        if rest.is_empty() || rest.starts_with('-') {
            return Err(DurationError::Empty);
        }
        let mut nanos: u128 = 0;
        while !rest.is_empty() {
            let number_end = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(rest.len());
            let (number, tail) = rest.split_at(number_end);
            let unit_end = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_end);
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            if whole.is_empty() && fraction.is_empty() {
                return Err(DurationError::Number(unit.to_owned()));
            }
            let scale = UNITS
                .iter()
                .find(|(name, _)| *name == unit)
                .map(|(_, scale)| *scale)
                .ok_or_else(|| DurationError::Unit(unit.to_owned()))?;
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| DurationError::Overflow)?
            };
            let mut part = whole.checked_mul(scale).ok_or(DurationError::Overflow)?;
            let mut place = scale;
            for digit in fraction.bytes() {
                place /= 10;
                part += u128::from(digit - b'0') * place;
            }
            nanos = nanos.checked_add(part).ok_or(DurationError::Overflow)?;
            rest = tail;
        }
        let nanos = u64::try_from(nanos).map_err(|_| DurationError::Overflow)?;
        Ok(GoDuration(Duration::from_nanos(nanos)))
    }
}

impl fmt::Display for GoDuration {
    /// The shortest text of whole units, e.g. `1h30m`, `1s500ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        for (name, scale) in [
            ("h", 3_600_000_000_000),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
            ("ns", 1),
        ] {
            let count = nanos / scale;
            if count > 0 {
                write!(f, "{count}{name}")?;
                nanos %= scale;
            }
        }
        Ok(())
    }
}

impl From<Duration> for GoDuration {
    fn from(duration: Duration) -> GoDuration {
        GoDuration(duration)
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<GoDuration, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Duration, DurationError> {
        text.parse::<GoDuration>().map(|d| d.0)
    }

    #[test]
    fn reads_what_go_reads() {
        for (text, expected) in [
            ("300s", Duration::from_secs(300)),
            ("1h30m", Duration::from_secs(5400)),
            ("10ms", Duration::from_millis(10)),
            ("1.5h", Duration::from_secs(5400)),
            ("168h", Duration::from_secs(168 * 3600)),
            ("2m3.5s", Duration::from_millis(123_500)),
            ("7us", Duration::from_micros(7)),
            ("7µs", Duration::from_micros(7)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        for text in ["", "1", "10", "1 hour", "2d", "h", "-1s", "1x", ".s"] {
            assert!(parse(text).is_err(), "{text}");
        }
        assert_eq!(parse("99999999999999h"), Err(DurationError::Overflow));
    }

    #[test]
    fn writes_text_that_reads_back() {
        for (duration, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_secs(168 * 3600), "168h"),
            (Duration::from_nanos(1_001), "1us1ns"),
        ] {
            let written = GoDuration(duration).to_string();
            assert_eq!(written, text);
            assert_eq!(parse(&written), Ok(duration));
        }
    }
}
