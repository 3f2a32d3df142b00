//! Next-fire times, table-driven: DST changes in New York and Berlin, a
//! zone without DST (Taipei), the AWS forms, Patch Tuesday + N.

use super::*;
use repave_core::duration::HumanDuration;

fn ts(s: &str) -> Timestamp {
    Timestamp(s.parse::<jiff::Timestamp>().expect(s).as_millisecond())
}

fn show(t: Timestamp) -> String {
    jiff::Timestamp::from_millisecond(t.0).unwrap().to_string()
}

fn window(cron: &str, tz: &str) -> Window {
    Window {
        cron: cron.into(),
        timezone: tz.into(),
        duration: HumanDuration::from_secs(4 * 3600),
        cutoff: Some(HumanDuration::from_secs(3600)),
        only_if: None,
        max_consecutive_failures: 3,
    }
}

#[test]
fn next_fire_table() {
    // (expression, zone, after, expected next fire; all instants in UTC)
    let table = [
        // New York springs forward 2026-03-08 02:00 EST → 03:00 EDT: 02:30
        // does not exist that night and fires an hour later on the clock.
        (
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T12:00:00Z",
            "2026-03-08T07:30:00Z",
        ),
        (
            "30 2 * * *",
            "America/New_York",
            "2026-03-08T08:00:00Z",
            "2026-03-09T06:30:00Z",
        ),
        (
            "0 9 * * *",
            "America/New_York",
            "2026-03-07T15:00:00Z",
            "2026-03-08T13:00:00Z",
        ),
        // Falls back 2026-11-01 02:00 EDT → 01:00 EST: 01:30 happens twice
        // and fires once, the first time.
        (
            "30 1 * * *",
            "America/New_York",
            "2026-10-31T12:00:00Z",
            "2026-11-01T05:30:00Z",
        ),
        (
            "30 1 * * *",
            "America/New_York",
            "2026-11-01T05:30:00Z",
            "2026-11-02T06:30:00Z",
        ),
        (
            "*/30 * * * *",
            "America/New_York",
            "2026-11-01T05:30:00Z",
            "2026-11-01T07:00:00Z",
        ),
        // Berlin: 2026-03-29 02:00 CET → 03:00 CEST; 2026-10-25 03:00 → 02:00.
        (
            "0 2 * * SUN",
            "Europe/Berlin",
            "2026-03-28T12:00:00Z",
            "2026-03-29T01:00:00Z",
        ),
        (
            "0 2 * * SUN",
            "Europe/Berlin",
            "2026-03-29T01:00:00Z",
            "2026-04-05T00:00:00Z",
        ),
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00Z",
            "2026-10-25T00:30:00Z",
        ),
        (
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-25T00:30:00Z",
            "2026-10-26T01:30:00Z",
        ),
        // Taipei: UTC+8 all year.
        (
            "0 1 * * SUN",
            "Asia/Taipei",
            "2026-11-26T00:00:00Z",
            "2026-11-28T17:00:00Z",
        ),
        (
            "0 22 * * *",
            "Asia/Taipei",
            "2026-11-26T06:33:00Z",
            "2026-11-26T14:00:00Z",
        ),
        // AWS forms: dow 1 = Sunday, year field, `?`.
        (
            "cron(0 1 ? * SUN *)",
            "UTC",
            "2026-11-26T06:00:00Z",
            "2026-11-29T01:00:00Z",
        ),
        (
            "cron(0 1 ? * 1 *)",
            "UTC",
            "2026-11-26T06:00:00Z",
            "2026-11-29T01:00:00Z",
        ),
        (
            "cron(0 1 ? * SUN *)",
            "Asia/Taipei",
            "2026-11-26T06:00:00Z",
            "2026-11-28T17:00:00Z",
        ),
        (
            "cron(0 0 1 1 ? 2028)",
            "UTC",
            "2026-11-26T06:00:00Z",
            "2028-01-01T00:00:00Z",
        ),
        (
            "cron(15 10 ? * 6L 2026-2027)",
            "UTC",
            "2026-11-01T00:00:00Z",
            "2026-11-27T10:15:00Z",
        ),
        // Patch Tuesday (second Tuesday) and Patch Tuesday + N days.
        ("0 2 * * TUE#2", "UTC", "2026-11-01T00:00:00Z", "2026-11-10T02:00:00Z"),
        ("0 2 * * TUE#2+3", "UTC", "2026-11-01T00:00:00Z", "2026-11-13T02:00:00Z"),
        ("0 2 * * TUE#2+3", "UTC", "2026-11-14T00:00:00Z", "2026-12-11T02:00:00Z"),
        ("0 2 * * TUE#4+7", "UTC", "2026-11-25T00:00:00Z", "2026-12-01T02:00:00Z"),
        (
            "cron(0 2 ? * 3#2+1 *)",
            "UTC",
            "2026-11-01T00:00:00Z",
            "2026-11-11T02:00:00Z",
        ),
        (
            "0 3 * * 2#2+3",
            "America/New_York",
            "2026-03-01T00:00:00Z",
            "2026-03-13T07:00:00Z",
        ),
        // rate(): multiples of the period since the Unix epoch.
        ("rate(7 days)", "UTC", "2026-11-26T06:33:00Z", "2026-12-03T00:00:00Z"),
        (
            "rate(1 hour)",
            "Europe/Berlin",
            "2026-11-26T10:15:00Z",
            "2026-11-26T11:00:00Z",
        ),
        // Plain 5-field features.
        ("*/15 * * * *", "UTC", "2026-11-26T10:07:00Z", "2026-11-26T10:15:00Z"),
        (
            "0 9-17/4 1,15 * *",
            "UTC",
            "2026-11-15T13:00:00Z",
            "2026-11-15T17:00:00Z",
        ),
        ("0 3 * * 5L", "UTC", "2026-11-26T00:00:00Z", "2026-11-27T03:00:00Z"),
        ("0 0 L * *", "UTC", "2026-02-01T00:00:00Z", "2026-02-28T00:00:00Z"),
        ("0 0 1 * MON", "UTC", "2026-11-26T06:00:00Z", "2026-11-30T00:00:00Z"),
        ("0 0 * JUN-AUG 0", "UTC", "2026-11-26T06:00:00Z", "2027-06-06T00:00:00Z"),
        ("0 0 * * 7", "UTC", "2026-11-26T06:00:00Z", "2026-11-29T00:00:00Z"),
    ];
    let mut failures = Vec::new();
    for (cron, tz, after, want) in table {
        match next_fire(ts(after), &window(cron, tz)) {
            Ok(got) if got == ts(want) => {}
            Ok(got) => failures.push(format!("{cron} in {tz} after {after}: got {}, want {want}", show(got))),
            Err(e) => failures.push(format!("{cron} in {tz}: {e}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_repeated_hour_fires_once_and_a_skipped_one_still_fires() {
    // Every day for a year in New York and Berlin, "30 1" / "30 2" fires
    // exactly once per local day.
    for (cron, tz) in [
        ("30 1 * * *", "America/New_York"),
        ("30 2 * * *", "Europe/Berlin"),
        ("30 2 * * *", "America/New_York"),
    ] {
        let s = WindowSchedule::parse(&window(cron, tz)).unwrap();
        let mut t = ts("2026-01-01T00:00:00Z");
        let mut fires = 0;
        while t < ts("2027-01-01T00:00:00Z") {
            let next = s.next_fire(t).unwrap();
            assert!(next > t);
            if next >= ts("2027-01-01T00:00:00Z") {
                break;
            }
            let gap = next.since(t);
            assert!(
                fires == 0 || gap >= Duration::from_secs(23 * 3600),
                "{cron} {tz}: {} after {}",
                show(next),
                show(t)
            );
            t = next;
            fires += 1;
        }
        assert_eq!(fires, 365, "{cron} in {tz}");
    }
}

#[test]
fn bad_expressions_say_why() {
    let table = [
        ("0 2 * *", "has 4 fields"),
        ("cron(0 1 * * SUN *)", "must be `?`"),
        ("cron(0 1 ? * SUN)", "AWS cron has 6"),
        ("61 * * * *", "minute: 61 is out of range 0..=59"),
        ("0 2 * * TUE#6", "week must be 1..=5"),
        ("0 2 * * FUNDAY", "not a number or name"),
        ("rate(0 days)", "at least 1"),
        ("rate(7 weeks)", "unknown unit \"weeks\""),
        ("0 2 30W * *", "W is not supported"),
        ("0 0 * * *+3", "needs a day-of-week"),
        ("0 0 * * TUE#2+x", "not a number of days"),
        ("0 5-2 * * *", "runs backwards"),
        ("*/0 * * * *", "step must be at least 1"),
    ];
    for (expr, want) in table {
        let err = parse(expr).expect_err(expr);
        assert!(err.contains(want), "{expr}: {err:?} does not contain {want:?}");
    }
    let mut w = window("0 2 * * *", "Mars/Olympus_Mons");
    assert!(next_fire(Timestamp(0), &w)
        .unwrap_err()
        .contains("unknown IANA time zone"));
    w = window("cron(0 0 30 2 ? *)", "UTC");
    assert!(next_fire(Timestamp(0), &w).unwrap_err().contains("never fires"));
}

#[test]
fn openings_end_and_cut_off() {
    let s = WindowSchedule::parse(&window("0 2 * * *", "UTC")).unwrap();
    let open = s.open_at(ts("2026-11-26T03:00:00Z")).expect("open at 03:00");
    assert_eq!(open.start, ts("2026-11-26T02:00:00Z"));
    assert_eq!(open.end, ts("2026-11-26T06:00:00Z"));
    assert_eq!(open.cutoff, ts("2026-11-26T05:00:00Z"));
    assert_eq!(s.open_at(ts("2026-11-26T06:00:00Z")), None);
    assert_eq!(s.open_at(ts("2026-11-26T01:59:59Z")), None);
    assert_eq!(
        s.open_at(ts("2026-11-26T02:00:00Z")).map(|o| o.start),
        Some(ts("2026-11-26T02:00:00Z"))
    );
    assert_eq!(
        s.next_opening(ts("2026-11-26T03:00:00Z")).unwrap().start,
        ts("2026-11-27T02:00:00Z")
    );
}
