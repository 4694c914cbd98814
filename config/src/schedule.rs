//! When the server collects garbage itself: at the times of a cron schedule
//! (`berth.gcschedule`), or every so often from its start (`berth.gcinterval`,
//! kept for existing configurations).
//!
//! A schedule takes what a Kubernetes CronJob takes, so the same text works
//! for either kind of collection: five fields (minute, hour, day of month,
//! month, day of week; names such as `MON` and `JAN` allowed; a day matches
//! when either day field does) or one of `@yearly`, `@annually`, `@monthly`,
//! `@weekly`, `@daily`, `@midnight`, `@hourly`. Times are UTC. Unlike an
//! interval, a schedule does not move when pods restart: every node
//! collects at the same times, at quiet hours if the schedule says so.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// When in-server collections run.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// At the times of a cron schedule, in UTC.
    Cron(Box<Cron>),
    /// This long after the previous run ended (the first: after the start).
    Every(Duration),
}

/// The macros Kubernetes accepts, as five fields.
const MACROS: [(&str, &str); 7] = [
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

impl Schedule {
    /// Parses a cron schedule; the error says what is wrong with it.
    pub fn cron(text: &str) -> Result<Schedule, String> {
        let text = text.trim();
        let fields = MACROS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(text))
            .map_or(text, |(_, fields)| fields);
        if fields.starts_with('@') {
            return Err(format!(
                "{text:?} is not one of {}",
                MACROS.map(|(name, _)| name).join(", ")
            ));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        parser
            .parse(fields)
            .map(|cron| Schedule::Cron(Box::new(cron)))
            .map_err(|e| {
                format!(
                    "{text:?} is not a cron schedule of five fields (minute hour day-of-month month day-of-week): {e}"
                )
            })
    }

    /// How long to wait at `now` for the next run: to the next time the
    /// schedule names, after `now`. `None` when it names none (a date that
    /// never comes, such as 30 February).
    pub fn wait(&self, now: SystemTime) -> Option<Duration> {
        match self {
            Schedule::Every(interval) => Some(*interval),
            Schedule::Cron(cron) => {
                let now = DateTime::<Utc>::from(now);
                let next = cron.find_next_occurrence(&now, false).ok()?;
                (next - now).to_std().ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> SystemTime {
        DateTime::parse_from_rfc3339(text).unwrap().into()
    }

    #[test]
    fn waits_for_the_next_scheduled_time() {
        let daily = Schedule::cron("@daily").unwrap();
        assert_eq!(
            daily.wait(at("2026-12-02T23:59:00Z")),
            Some(Duration::from_secs(60))
        );
        let nightly = Schedule::cron("30 3 * * MON-FRI").unwrap();
        // A Saturday at noon: next Monday 03:30.
        assert_eq!(
            nightly.wait(at("2026-12-05T12:00:00Z")),
            Some(Duration::from_secs((36 + 3) * 3600 + 30 * 60))
        );
        let every = Schedule::Every(Duration::from_secs(5));
        assert_eq!(every.wait(SystemTime::now()), Some(Duration::from_secs(5)));
    }

    #[test]
    fn takes_what_a_cronjob_takes() {
        for good in [
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
            "@DAILY",
            "*/15 * * * *",
            "0 3 * * 0",
            "0 0 1,15 * *",
            "5 4 * jan sun",
        ] {
            assert!(Schedule::cron(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "@reboot",
            "@every 5m",
            "* * * *",
            "0 * * * * *",
            "0 0 0 1 1 * 2030",
            "61 * * * *",
            "* 25 * * *",
            "x * * * *",
        ] {
            assert!(Schedule::cron(bad).is_err(), "{bad}");
        }
    }
}
