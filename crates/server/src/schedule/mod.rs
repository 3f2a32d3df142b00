//! Maintenance windows: when a pipeline's window opens next, when it ends,
//! and when its cutoff passes. Pure functions of the time passed in.
//!
//! Time zones come from the IANA database bundled with `jiff`, so DST is
//! handled the way the zone's rules say:
//! - a wall-clock time skipped by a spring-forward change fires the same
//!   distance after the change (02:30 on a 02:00→03:00 night fires at 03:30),
//! - a wall-clock time repeated by a fall-back change fires once, at its
//!   first occurrence.

mod cron;
#[cfg(test)]
mod tests;

pub use cron::{parse, CronSpec, Schedule};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use repave_core::config::Window;
use repave_core::Timestamp;
use std::time::Duration;

/// How far ahead a cron schedule is searched before it counts as never
/// firing (e.g. `cron(0 0 30 2 ? *)`, 30 February).
const HORIZON_DAYS: i32 = 366 * 8;

/// A window whose expression and time zone parsed.
#[derive(Debug, Clone)]
pub struct WindowSchedule {
    pub schedule: Schedule,
    pub timezone: TimeZone,
    pub duration: Duration,
    pub cutoff: Duration,
}

/// One opening of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Opening {
    pub start: Timestamp,
    pub end: Timestamp,
    /// `end - cutoff`: no new replacement starts at or after it.
    pub cutoff: Timestamp,
}

impl WindowSchedule {
    /// Parse a window's cron expression and time zone.
    pub fn parse(w: &Window) -> Result<Self, String> {
        let schedule = parse(&w.cron).map_err(|e| format!("cron: {e}"))?;
        let timezone =
            TimeZone::get(&w.timezone).map_err(|_| format!("timezone: unknown IANA time zone {:?}", w.timezone))?;
        let duration = w.duration.get();
        let cutoff = w.cutoff.map(|c| c.get()).unwrap_or_default();
        Ok(Self {
            schedule,
            timezone,
            duration,
            cutoff,
        })
    }

    /// The first fire time strictly after `after`; `None` when the
    /// expression never fires within eight years.
    pub fn next_fire(&self, after: Timestamp) -> Option<Timestamp> {
        match &self.schedule {
            Schedule::Rate(period) => {
                let p = period.as_millis() as i64;
                Some(Timestamp((after.0.div_euclid(p) + 1) * p))
            }
            Schedule::Cron(spec) => next_cron(spec, &self.timezone, after),
        }
    }

    /// The window opening at `start`.
    pub fn opening(&self, start: Timestamp) -> Opening {
        let end = start.plus(self.duration);
        Opening {
            start,
            end,
            cutoff: Timestamp(end.0 - self.cutoff.as_millis() as i64),
        }
    }

    /// The window open at `now`, if any (the latest one when they overlap).
    pub fn open_at(&self, now: Timestamp) -> Option<Opening> {
        let mut t = Timestamp(now.0 - self.duration.as_millis() as i64);
        let mut open = None;
        while let Some(start) = self.next_fire(t).filter(|s| *s <= now) {
            open = Some(self.opening(start));
            t = start;
        }
        open
    }

    /// The next opening strictly after `after`.
    pub fn next_opening(&self, after: Timestamp) -> Option<Opening> {
        self.next_fire(after).map(|s| self.opening(s))
    }
}

/// `next_fire` for a config window: parse, then search.
pub fn next_fire(after: Timestamp, window: &Window) -> Result<Timestamp, String> {
    WindowSchedule::parse(window)?
        .next_fire(after)
        .ok_or_else(|| format!("{:?} never fires", window.cron))
}

fn next_cron(spec: &CronSpec, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    let after_j = jiff::Timestamp::from_millisecond(after.0).ok()?;
    // Start a day early: a time skipped by a spring-forward change on the
    // previous local day can land after `after`.
    let mut day: Date = after_j.to_zoned(tz.clone()).date().yesterday().ok()?;
    for _ in 0..HORIZON_DAYS {
        if spec.has_date(day) {
            let best = (0..24i8)
                .filter(|h| spec.has_hour(*h))
                .flat_map(|h| (0..60i8).filter(|m| spec.has_minute(*m)).map(move |m| (h, m)))
                .filter_map(|(h, m)| {
                    // `to_zoned` resolves gaps forward and folds to the
                    // earlier instant (RFC 5545 "compatible").
                    let z = day.at(h, m, 0, 0).to_zoned(tz.clone()).ok()?;
                    Some(z.timestamp().as_millisecond())
                })
                .filter(|ms| *ms > after.0)
                .min();
            if let Some(ms) = best {
                return Some(Timestamp(ms));
            }
        }
        day = day.tomorrow().ok()?;
    }
    None
}
