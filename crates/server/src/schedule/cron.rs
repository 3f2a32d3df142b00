//! Parsing the three schedule forms a window accepts:
//!
//! - standard 5-field cron `m h dom mon dow` (dow 0-7, 0 and 7 = Sunday),
//! - AWS `cron(m h dom mon dow year)` (dow 1-7, 1 = Sunday; one of dom / dow
//!   must be `?`),
//! - AWS `rate(7 days)`.
//!
//! Day-of-week items may be `TUE#2` (second Tuesday) or `5L` / `FRIL` (last
//! Friday). A `+N` suffix on the day-of-week field moves every matching day
//! N days later: `TUE#2+3` is "Patch Tuesday + 3 days", the pattern Azure
//! and SSM call a schedule offset.

use jiff::civil::Date;
use std::time::Duration;

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Cron(CronSpec),
    /// Fires at every multiple of the period since the Unix epoch, so the
    /// fire times survive restarts without remembering a start.
    Rate(Duration),
}

/// The cron fields, as sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSpec {
    /// Bit i: minute i.
    minutes: u64,
    /// Bit i: hour i.
    hours: u32,
    /// `None`: any day of the month (`*` or `?`).
    days: Option<Vec<DayItem>>,
    /// Bit i: month i (1-12).
    months: u16,
    /// `None`: any day of the week.
    weekdays: Option<Vec<WeekdayItem>>,
    /// AWS year field; `None`: every year.
    years: Option<Vec<(i16, i16, i16)>>,
    /// Matching days are moved this many days later.
    offset_days: i32,
    /// Standard cron ORs a restricted day-of-month with a restricted
    /// day-of-week; AWS forbids restricting both.
    aws: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DayItem {
    /// Bit i: day i.
    Set(u32),
    /// `L`: the month's last day.
    Last,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum WeekdayItem {
    /// Bit i: i days after Sunday.
    Set(u8),
    /// `TUE#2`: the n-th such weekday of the month.
    Nth(u8, u8),
    /// `FRIL`: the last such weekday of the month.
    Last(u8),
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Parse any of the three forms.
pub fn parse(expr: &str) -> Result<Schedule, String> {
    let e = expr.trim();
    if let Some(inner) = e.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
        return parse_rate(inner).map(Schedule::Rate);
    }
    if let Some(inner) = e.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) {
        let f: Vec<&str> = inner.split_whitespace().collect();
        if f.len() != 6 {
            return Err(format!(
                "cron({inner}) has {} fields; AWS cron has 6: minute hour day-of-month month day-of-week year",
                f.len()
            ));
        }
        return parse_fields(&f, true).map(Schedule::Cron);
    }
    let f: Vec<&str> = e.split_whitespace().collect();
    if f.len() != 5 {
        return Err(format!(
            "{e:?} has {} fields; write 5-field cron \"minute hour day-of-month month day-of-week\", cron(...) or rate(...)",
            f.len()
        ));
    }
    parse_fields(&f, false).map(Schedule::Cron)
}

fn parse_rate(inner: &str) -> Result<Duration, String> {
    let mut it = inner.split_whitespace();
    let (Some(n), Some(unit), None) = (it.next(), it.next(), it.next()) else {
        return Err(format!("rate({inner}): write rate(N minutes|hours|days)"));
    };
    let n: u64 = n.parse().map_err(|_| format!("rate({inner}): {n:?} is not a number"))?;
    if n == 0 {
        return Err(format!("rate({inner}): the period must be at least 1"));
    }
    let secs = match unit {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        other => {
            return Err(format!(
                "rate({inner}): unknown unit {other:?}; use minutes, hours or days"
            ))
        }
    };
    Ok(Duration::from_secs(n * secs))
}

fn parse_fields(f: &[&str], aws: bool) -> Result<CronSpec, String> {
    let minutes = set_field(f[0], "minute", 0, 59, &[])?;
    let hours = set_field(f[1], "hour", 0, 23, &[])? as u32;
    let days = if is_any(f[2]) { None } else { Some(day_items(f[2])?) };
    let months = set_field(f[3], "month", 1, 12, &MONTHS)? as u16;
    let (dow, offset_days) = match f[4].split_once('+') {
        Some((d, n)) => (
            d,
            n.parse::<i32>()
                .map_err(|_| format!("day-of-week offset {n:?} is not a number of days"))?,
        ),
        None => (f[4], 0),
    };
    if !(0..=31).contains(&offset_days) {
        return Err(format!("day-of-week offset +{offset_days} is out of range 0..=31 days"));
    }
    let weekdays = if is_any(dow) {
        None
    } else {
        Some(weekday_items(dow, aws)?)
    };
    let years = if aws && !is_any(f[5]) {
        Some(year_items(f[5])?)
    } else {
        None
    };
    if aws && (f[2] == "?") == (dow == "?") {
        return Err("AWS cron: exactly one of day-of-month and day-of-week must be `?`".into());
    }
    if offset_days > 0 && weekdays.is_none() && days.is_none() {
        return Err("a day offset needs a day-of-week such as TUE#2+3".into());
    }
    Ok(CronSpec {
        minutes,
        hours,
        days,
        months,
        weekdays,
        years,
        offset_days,
        aws,
    })
}

fn is_any(s: &str) -> bool {
    s == "*" || s == "?"
}

/// A comma list of `*`, `a`, `a-b`, with optional `/step`, as a bitset.
fn set_field(s: &str, what: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in s.split(',') {
        let (a, b, step) = range(item, what, lo, hi, names)?;
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

/// `*`, `a`, `a-b`, `a/s`, `a-b/s`, `*/s` → (first, last, step).
fn range(item: &str, what: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(u32, u32, u32), String> {
    let (body, step) = match item.split_once('/') {
        Some((b, s)) => {
            let step: u32 = s.parse().map_err(|_| format!("{what}: step {s:?} is not a number"))?;
            if step == 0 {
                return Err(format!("{what}: step must be at least 1"));
            }
            (b, Some(step))
        }
        None => (item, None),
    };
    let (a, b) = if body == "*" || body == "?" {
        (lo, hi)
    } else if let Some((a, b)) = body.split_once('-') {
        (value(a, what, lo, hi, names)?, value(b, what, lo, hi, names)?)
    } else {
        let a = value(body, what, lo, hi, names)?;
        // `5/15` means 5, 20, 35, 50: a start with a step runs to the end.
        (a, if step.is_some() { hi } else { a })
    };
    if a > b {
        return Err(format!("{what}: range {body:?} runs backwards"));
    }
    Ok((a, b, step.unwrap_or(1)))
}

fn value(s: &str, what: &str, lo: u32, hi: u32, names: &[&str]) -> Result<u32, String> {
    let upper = s.to_ascii_uppercase();
    if let Some(i) = names.iter().position(|n| *n == upper) {
        // Month names count from 1, day names from 0.
        return Ok(i as u32 + lo);
    }
    let v: u32 = s
        .parse()
        .map_err(|_| format!("{what}: {s:?} is not a number or name"))?;
    if v < lo || v > hi {
        return Err(format!("{what}: {v} is out of range {lo}..={hi}"));
    }
    Ok(v)
}

fn day_items(s: &str) -> Result<Vec<DayItem>, String> {
    s.split(',')
        .map(|item| match item {
            "L" => Ok(DayItem::Last),
            i if i.ends_with('W') => Err(format!(
                "day-of-month: {i:?}: the nearest-weekday form W is not supported"
            )),
            i => {
                let (a, b, step) = range(i, "day-of-month", 1, 31, &[])?;
                Ok(DayItem::Set(
                    (a..=b).step_by(step as usize).fold(0, |bits, d| bits | 1 << d),
                ))
            }
        })
        .collect()
}

/// Day number (0 = Sunday) of a weekday value in either numbering.
fn weekday(s: &str, aws: bool) -> Result<u8, String> {
    let (lo, hi) = if aws { (1, 7) } else { (0, 7) };
    let v = value(s, "day-of-week", lo, hi, &DAYS)?;
    Ok(if aws { (v - 1) as u8 } else { (v % 7) as u8 })
}

fn weekday_items(s: &str, aws: bool) -> Result<Vec<WeekdayItem>, String> {
    s.split(',')
        .map(|item| {
            if let Some((d, n)) = item.split_once('#') {
                let n: u8 = n
                    .parse()
                    .map_err(|_| format!("day-of-week: {item:?}: {n:?} is not a number"))?;
                if !(1..=5).contains(&n) {
                    return Err(format!("day-of-week: {item:?}: the week must be 1..=5"));
                }
                return Ok(WeekdayItem::Nth(weekday(d, aws)?, n));
            }
            if let Some(d) = item.strip_suffix('L').filter(|d| !d.is_empty()) {
                return Ok(WeekdayItem::Last(weekday(d, aws)?));
            }
            let (lo, hi) = if aws { (1, 7) } else { (0, 7) };
            // Names map to lo.. so that AWS 1 = SUN and standard 0 = SUN.
            let (a, b, step) = range(item, "day-of-week", lo, hi, &DAYS)?;
            let bits = (a..=b).step_by(step as usize).fold(0u8, |bits, v| {
                let d = if aws { v - 1 } else { v % 7 };
                bits | 1 << d
            });
            Ok(WeekdayItem::Set(bits))
        })
        .collect()
}

fn year_items(s: &str) -> Result<Vec<(i16, i16, i16)>, String> {
    s.split(',')
        .map(|item| {
            let (a, b, step) = range(item, "year", 1970, 2199, &[])?;
            Ok((a as i16, b as i16, step as i16))
        })
        .collect()
}

impl CronSpec {
    pub(crate) fn has_minute(&self, m: i8) -> bool {
        self.minutes & (1 << m) != 0
    }
    pub(crate) fn has_hour(&self, h: i8) -> bool {
        self.hours & (1 << h) != 0
    }

    /// Whether the schedule fires on local date `date` (offset applied).
    pub(crate) fn has_date(&self, date: Date) -> bool {
        match date.checked_sub(jiff::Span::new().days(self.offset_days)) {
            Ok(base) => self.matches_day(base),
            Err(_) => false,
        }
    }

    fn matches_day(&self, d: Date) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        if let Some(years) = &self.years {
            let y = d.year();
            if !years.iter().any(|&(a, b, s)| y >= a && y <= b && (y - a) % s == 0) {
                return false;
            }
        }
        let dom = self.days.as_ref().map(|items| {
            items.iter().any(|i| match i {
                DayItem::Set(bits) => bits & (1 << d.day()) != 0,
                DayItem::Last => d.day() == d.days_in_month(),
            })
        });
        let dow = self.weekdays.as_ref().map(|items| {
            let wd = d.weekday().to_sunday_zero_offset() as u8;
            items.iter().any(|i| match *i {
                WeekdayItem::Set(bits) => bits & (1 << wd) != 0,
                WeekdayItem::Nth(w, n) => w == wd && (d.day() - 1) / 7 + 1 == n as i8,
                WeekdayItem::Last(w) => w == wd && d.day() + 7 > d.days_in_month(),
            })
        });
        match (dom, dow) {
            (None, None) => true,
            (Some(a), None) | (None, Some(a)) => a,
            // Vixie cron: both restricted means either matches.
            (Some(a), Some(b)) => {
                debug_assert!(!self.aws, "AWS cron restricts only one");
                a || b
            }
        }
    }
}
