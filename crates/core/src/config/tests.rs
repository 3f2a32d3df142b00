//! Table-driven tests: each malformed config names its exact position,
//! field and message.

use super::*;

/// A valid config; cases append to it or replace a line of it.
const BASE: &str = r#"[providers.local.groups.web]
min = 1
desired = 2
max = 4
port = 8080

[pipelines.web]
provider = "local"
group = "web"
parameter = "latestAmi"
"#;

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

fn replace(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

struct Case {
    name: &'static str,
    src: Vec<u8>,
    line: usize,
    col: usize,
    field: Option<&'static str>,
    message: &'static str,
}

fn case(
    name: &'static str,
    src: impl Into<Vec<u8>>,
    pos: (usize, usize),
    field: Option<&'static str>,
    message: &'static str,
) -> Case {
    Case {
        name,
        src: src.into(),
        line: pos.0,
        col: pos.1,
        field,
        message,
    }
}

fn cases() -> Vec<Case> {
    let rollout = |body: &str| with(&format!("\n[pipelines.web.rollout]\n{body}\n"));
    let patch = |body: &str| with(&format!("\n[pipelines.web.patch]\n{body}\n"));
    vec![
        case(
            "syntax error",
            with("[pipelines.api\n"),
            (11, 15),
            None,
            "invalid table header",
        ),
        case(
            "wrong type",
            replace("port = 8080", "port = \"8080\""),
            (5, 8),
            Some("providers.local.groups.web.port"),
            "invalid type: string \"8080\", expected u16",
        ),
        case(
            "negative count",
            replace("min = 1", "min = -1"),
            (2, 7),
            Some("providers.local.groups.web.min"),
            "expected u32",
        ),
        case(
            "unknown top-level field",
            format!("colour = \"red\"\n{BASE}"),
            (1, 1),
            Some("colour"),
            "unknown field `colour`, expected one of `state_dir`, `providers`, `pipelines`",
        ),
        case(
            "unknown rollout field",
            rollout("min_healty_percent = 50"),
            (13, 1),
            Some("pipelines.web.rollout.min_healty_percent"),
            "unknown field `min_healty_percent`, expected one of `strategy`, `min_healthy_percent`",
        ),
        case(
            "unknown patch field",
            patch("severity = [\"Critical\"]"),
            (13, 1),
            Some("pipelines.web.patch.severity"),
            "unknown field `severity`, expected one of `severities`",
        ),
        case(
            "missing field",
            replace("parameter = \"latestAmi\"\n", ""),
            (7, 1),
            Some("pipelines.web"),
            "missing field `parameter`",
        ),
        case(
            "scaling target of zero",
            replace(
                "port = 8080",
                "port = 8080\nscaling = { target_requests_per_instance = 0 }",
            ),
            (6, 13),
            Some("providers.local.groups.web.scaling.target_requests_per_instance"),
            "must be at least 1 request per second",
        ),
        case(
            "unknown scaling field",
            replace("port = 8080", "port = 8080\nscaling = { target_cpu = 50 }"),
            (6, 13),
            Some("providers.local.groups.web.scaling.target_cpu"),
            "unknown field `target_cpu`, expected `target_requests_per_instance` or `scale_in_cooldown`",
        ),
        case(
            "percentage out of range",
            rollout("min_healthy_percent = 101"),
            (13, 1),
            Some("pipelines.web.rollout.min_healthy_percent"),
            "101 is out of range 0..=100",
        ),
        case(
            "max percentage out of range",
            rollout("max_healthy_percent = 250"),
            (13, 1),
            Some("pipelines.web.rollout.max_healthy_percent"),
            "out of range 100..=200",
        ),
        case(
            "100/100",
            rollout("min_healthy_percent = 100\nmax_healthy_percent = 100"),
            (14, 1),
            Some("pipelines.web.rollout.max_healthy_percent"),
            "leaves no room to replace an instance",
        ),
        case(
            "inline rollout table",
            with("rollout = { max_healthy_percent = 100 }\n"),
            (11, 13),
            Some("pipelines.web.rollout.max_healthy_percent"),
            "leaves no room",
        ),
        case(
            "bad duration",
            rollout("warmup = \"5 minutes\""),
            (13, 10),
            Some("pipelines.web.rollout.warmup"),
            "invalid duration \"5 minutes\"",
        ),
        case(
            "bare number duration",
            rollout("timeout = 30"),
            (13, 11),
            Some("pipelines.web.rollout.timeout"),
            "invalid type: integer `30`, expected a string",
        ),
        case(
            "zero timeout",
            rollout("timeout = \"0s\""),
            (13, 1),
            Some("pipelines.web.rollout.timeout"),
            "must be greater than zero",
        ),
        case(
            "native on local",
            rollout("strategy = \"native\""),
            (13, 1),
            Some("pipelines.web.rollout.strategy"),
            "needs provider \"aws\"",
        ),
        case(
            "unknown strategy",
            rollout("strategy = \"blue-green\""),
            (13, 12),
            Some("pipelines.web.rollout.strategy"),
            "unknown variant `blue-green`, expected `rolling` or `native`",
        ),
        case(
            "standby replace",
            rollout("standby = \"replace\""),
            (13, 1),
            Some("pipelines.web.rollout.standby"),
            "\"replace\" is for protected instances only",
        ),
        case(
            "max_unhealthy_new 0",
            rollout("max_unhealthy_new = 0"),
            (13, 1),
            Some("pipelines.web.rollout.max_unhealthy_new"),
            "must be at least 1",
        ),
        case(
            "max_unhealthy_new_percent 0",
            rollout("max_unhealthy_new_percent = 0"),
            (13, 1),
            Some("pipelines.web.rollout.max_unhealthy_new_percent"),
            "0 is out of range 1..=100",
        ),
        case(
            "checkpoints not ascending",
            rollout("checkpoints = [50, 25]"),
            (13, 20),
            Some("pipelines.web.rollout.checkpoints[1]"),
            "25 is not above the checkpoint before it (50)",
        ),
        case(
            "checkpoint at 100",
            rollout("checkpoints = [100]"),
            (13, 16),
            Some("pipelines.web.rollout.checkpoints[0]"),
            "100 is out of range 1..=99",
        ),
        case(
            "canary without bake time",
            rollout("canary = 2\nbake_time = \"0s\""),
            (14, 1),
            Some("pipelines.web.rollout.bake_time"),
            "must be greater than zero",
        ),
        case(
            "zero hold timeout",
            rollout("hold_timeout = \"0s\""),
            (13, 1),
            Some("pipelines.web.rollout.hold_timeout"),
            "must be greater than zero",
        ),
        case(
            "zero window cutoff",
            rollout("window_cutoff = \"0m\""),
            (13, 1),
            Some("pipelines.web.rollout.window_cutoff"),
            "must be greater than zero",
        ),
        case(
            "simulate variance over 100",
            with("\n[pipelines.web.simulate]\nvariance_percent = 150\n"),
            (13, 1),
            Some("pipelines.web.simulate.variance_percent"),
            "150 is out of range 0..=100",
        ),
        case(
            "unknown simulate field",
            with("\n[pipelines.web.simulate]\nboot_time = \"5m\"\n"),
            (13, 1),
            Some("pipelines.web.simulate.boot_time"),
            "unknown field",
        ),
        case(
            "unknown held mode",
            rollout("protected = \"ignore\""),
            (13, 13),
            Some("pipelines.web.rollout.protected"),
            "unknown variant `ignore`, expected one of `skip`, `wait`, `fail`",
        ),
        case(
            "unknown severity",
            patch("severities = [\"Critical\", \"Severe\"]"),
            (13, 27),
            Some("pipelines.web.patch.severities[1]"),
            "unknown severity \"Severe\"",
        ),
        case(
            "unknown classification",
            patch("classifications = [\"Securty\"]"),
            (13, 20),
            Some("pipelines.web.patch.classifications[0]"),
            "unknown classification \"Securty\" (expected windows:",
        ),
        case(
            "windows words on amazon linux",
            with("\n[pipelines.web.builder]\nplatform = \"amazon-linux\"\n[pipelines.web.patch]\nclassifications = [\"SecurityUpdates\"]\n"),
            (15, 20),
            Some("pipelines.web.patch.classifications[0]"),
            "unknown classification \"SecurityUpdates\" on amazon-linux (expected amazon-linux: Security, Bugfix",
        ),
        case(
            "Moderate is not an Amazon Linux severity",
            with("\n[pipelines.web.builder]\nplatform = \"amazon-linux\"\n[pipelines.web.patch]\nseverities = [\"Critical\", \"Moderate\"]\n"),
            (15, 27),
            Some("pipelines.web.patch.severities[1]"),
            "unknown severity \"Moderate\" on amazon-linux",
        ),
        case(
            "ubuntu has priorities, not severities",
            with("\n[pipelines.web.builder]\nplatform = \"ubuntu\"\n[pipelines.web.patch]\nseverities = [\"Critical\"]\n"),
            (15, 1),
            Some("pipelines.web.patch.severities"),
            "ubuntu patches have no severities; write `priorities` instead",
        ),
        case(
            "no approval delay on debian",
            with("\n[pipelines.web.builder]\nplatform = \"debian\"\n[pipelines.web.patch]\nmin_age_days = 7\n"),
            (15, 1),
            Some("pipelines.web.patch.min_age_days"),
            "cannot delay approval on debian",
        ),
        case(
            "unknown when_empty",
            patch("when_empty = \"skip\""),
            (13, 14),
            Some("pipelines.web.patch.when_empty"),
            "unknown variant `skip`, expected `stop` or `publish`",
        ),
        case(
            "include and exclude overlap",
            patch("include = [\"KB1\"]\nexclude = [\"KB2\", \"KB1\"]"),
            (14, 19),
            Some("pipelines.web.patch.exclude[1]"),
            "\"KB1\" is in both include and exclude",
        ),
        case(
            "too many reboots",
            patch("max_reboots = 11"),
            (13, 1),
            Some("pipelines.web.patch.max_reboots"),
            "11 is more than 10",
        ),
        case(
            "unknown provider",
            replace("provider = \"local\"", "provider = \"gcp\""),
            (8, 12),
            Some("pipelines.web.provider"),
            "unknown variant `gcp`, expected one of `local`, `aws`, `sim`",
        ),
        case(
            "the simulator's provider",
            replace("provider = \"local\"", "provider = \"sim\""),
            (8, 1),
            Some("pipelines.web.provider"),
            "is the simulator's (repave simulate)",
        ),
        case(
            "missing provider table",
            replace("provider = \"local\"", "provider = \"aws\""),
            (8, 1),
            Some("pipelines.web.provider"),
            "add a [providers.aws] table",
        ),
        case(
            "missing group",
            replace("group = \"web\"", "group = \"api\""),
            (9, 1),
            Some("pipelines.web.group"),
            "no group \"api\" in [providers.local.groups] (defined: web)",
        ),
        case(
            "bad port",
            replace("port = 8080", "port = 80"),
            (5, 1),
            Some("providers.local.groups.web.port"),
            "port 80 is privileged",
        ),
        case(
            "port too large",
            replace("port = 8080", "port = 70000"),
            (5, 8),
            Some("providers.local.groups.web.port"),
            "expected u16",
        ),
        case(
            "command without {port}",
            replace(
                "port = 8080\n",
                "port = 8080\ncommand = [\"python3\", \"-m\", \"http.server\"]\n",
            ),
            (6, 1),
            Some("providers.local.groups.web.command"),
            "must contain `{port}`",
        ),
        case(
            "desired > max",
            replace("desired = 2", "desired = 9"),
            (3, 1),
            Some("providers.local.groups.web.desired"),
            "desired (9) must be between min (1) and max (4)",
        ),
        case(
            "min > max",
            replace("min = 1", "min = 5"),
            (2, 1),
            Some("providers.local.groups.web.min"),
            "min (5) is greater than max (4)",
        ),
        case(
            "max too large",
            replace("max = 4", "max = 300"),
            (4, 1),
            Some("providers.local.groups.web.max"),
            "300 is more than 256",
        ),
        case(
            "unknown builtin image",
            replace("port = 8080\n", "port = 8080\nimage = \"builtin:nginx\"\n"),
            (6, 1),
            Some("providers.local.groups.web.image"),
            "unknown builtin image",
        ),
        case(
            "health check path",
            with("\n[providers.local.groups.web.health_check]\npath = \"health\"\n"),
            (13, 1),
            Some("providers.local.groups.web.health_check.path"),
            "must start with \"/\"",
        ),
        case(
            "health threshold",
            with("\n[providers.local.groups.web.health_check]\nhealthy_threshold = 0\n"),
            (13, 1),
            Some("providers.local.groups.web.health_check.healthy_threshold"),
            "out of range 1..=10",
        ),
        case("empty file", "", (1, 1), Some("pipelines"), "no pipelines defined"),
        case(
            "only comments",
            "# nothing yet\n",
            (1, 1),
            Some("pipelines"),
            "no pipelines defined",
        ),
        case(
            "bad pipeline name",
            replace("[pipelines.web]", "[pipelines.Web]"),
            (7, 12),
            Some("pipelines.Web"),
            "invalid pipeline name \"Web\"",
        ),
        case(
            "bad group name",
            replace("[providers.local.groups.web]", "[providers.local.groups.\"my group\"]")
                .replace("group = \"web\"", "group = \"my group\""),
            (1, 25),
            Some("providers.local.groups.\"my group\""),
            "invalid group name \"my group\"",
        ),
        case(
            "keep = 0",
            with("\n[pipelines.web.retention]\nkeep = 0\n"),
            (13, 1),
            Some("pipelines.web.retention.keep"),
            "must be at least 1",
        ),
        case(
            "bad parameter",
            replace("parameter = \"latestAmi\"", "parameter = \"latest ami\""),
            (10, 1),
            Some("pipelines.web.parameter"),
            "invalid character ' '",
        ),
        case(
            "long parameter",
            replace(
                "parameter = \"latestAmi\"",
                &format!("parameter = \"{}\"", "a".repeat(2049)),
            ),
            (10, 1),
            Some("pipelines.web.parameter"),
            "2049 characters long",
        ),
        case(
            "bad platform",
            with("builder.platform = \"macos\"\n"),
            (11, 20),
            Some("pipelines.web.builder.platform"),
            "unknown platform \"macos\"; expected one of \"auto\", \"linux\"",
        ),
        case(
            "state_dir with ..",
            format!("state_dir = \"../elsewhere\"\n{BASE}"),
            (1, 1),
            Some("state_dir"),
            "must not contain `..`",
        ),
        case(
            "duplicate key",
            replace("max = 4", "max = 4\nmax = 5"),
            (5, 1),
            None,
            "duplicate key `max`",
        ),
        case(
            "non-UTF-8 bytes",
            [b"[pipelines.web]\nparameter = \"caf".as_slice(), &[0xe9], b"\"\n"].concat(),
            (2, 17),
            None,
            "not valid UTF-8 (byte 0xe9",
        ),
        case(
            "NUL byte",
            [b"[pipelines.web]\nprovider = \"lo".as_slice(), &[0], b"cal\"\n"].concat(),
            (2, 15),
            None,
            "NUL byte",
        ),
    ]
}

#[test]
fn malformed_configs_point_at_the_problem() {
    let mut failures = Vec::new();
    let all = cases();
    assert!(all.len() >= 20);
    for c in all {
        let err = match parse_bytes(&c.src, "repave.toml") {
            Ok(_) => {
                failures.push(format!("{}: parsed without error", c.name));
                continue;
            }
            Err(e) => e,
        };
        let ok = err.file == "repave.toml"
            && (err.line, err.col) == (c.line, c.col)
            && err.field.as_deref() == c.field
            && err.message.contains(c.message);
        if !ok {
            failures.push(format!(
                "{}: got {}:{} {:?} {:?}; want {}:{} {:?} ~{:?}",
                c.name, err.line, err.col, err.field, err.message, c.line, c.col, c.field, c.message
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn display_is_file_line_col_field_message() {
    let err = parse(&replace("port = 8080", "port = 80"), "etc/repave.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "etc/repave.toml:5:1: providers.local.groups.web.port: port 80 is privileged; use 1024 or higher"
    );
}

#[test]
fn huge_file_is_rejected_before_parsing() {
    let big = format!("# {}\n{BASE}", "x".repeat(MAX_CONFIG_BYTES));
    for err in [
        parse_bytes(big.as_bytes(), "big.toml").unwrap_err(),
        parse(&big, "big.toml").unwrap_err(),
    ] {
        assert_eq!((err.line, err.col, err.field.as_deref()), (1, 1, None));
        assert!(err.message.contains("at most 1048576 bytes (1 MiB)"), "{}", err.message);
    }
}

#[test]
fn parse_all_reports_every_problem_in_order() {
    let src = replace("port = 8080", "port = 80").replace("desired = 2", "desired = 9");
    let errors = parse_all(&src, "r.toml").unwrap_err();
    let fields: Vec<_> = errors.iter().map(|e| e.field.clone().unwrap_or_default()).collect();
    assert_eq!(
        fields,
        ["providers.local.groups.web.desired", "providers.local.groups.web.port"]
    );
}

#[test]
fn defaults_fill_in_and_base_is_valid() {
    let config = parse(BASE, "r.toml").unwrap();
    let p = &config.pipelines["web"];
    assert_eq!(p.rollout, Rollout::default());
    assert_eq!(config.providers.local.unwrap().groups["web"].command, default_command());
}

#[test]
fn starter_config_parses_validates_and_round_trips() {
    let config = parse(starter_config(), "repave.toml").unwrap();
    let web = &config.pipelines["web"];
    assert_eq!(
        (web.provider.as_str(), web.group.as_str(), web.parameter.as_str()),
        ("local", "web", "latestAmi")
    );
    assert_eq!(web.patch.severities, ["Critical", "Important"]);
    assert_eq!(web.patch.min_age_days, 0);
    assert_eq!(
        (web.rollout.min_healthy_percent, web.rollout.max_healthy_percent),
        (100, 150)
    );
    assert_eq!(web.retention.keep, 3);
    let group = &config.providers.local.as_ref().unwrap().groups["web"];
    assert_eq!((group.desired, group.min, group.max, group.port), (4, 2, 8, 8080));
    // Every table in the starter is explained by a comment right above it.
    let lines: Vec<&str> = starter_config().lines().collect();
    for (i, line) in lines.iter().enumerate().filter(|(_, l)| l.starts_with('[')) {
        assert!(lines[i - 1].starts_with('#'), "section {line} has no comment above it");
    }
    // Serializing and parsing again gives the same config.
    let again = parse(&toml::to_string(&config).unwrap(), "again.toml").unwrap();
    assert_eq!(again, config);
}

#[test]
fn names() {
    for ok in ["web", "a", "0api", "web_2-x", &"a".repeat(63)] {
        assert!(is_valid_name(ok), "{ok}");
    }
    for bad in ["", "Web", "-web", "_web", "web.api", "web api", &"a".repeat(64)] {
        assert!(!is_valid_name(bad), "{bad}");
    }
}

proptest::proptest! {
    /// Arbitrary text spliced into the starter never panics the loader, and
    /// every error points inside the file.
    #[test]
    fn errors_always_point_inside_the_file(cut in 0usize..5000, insert in "\\PC{0,12}") {
        let base = starter_config();
        let mut at = cut.min(base.len());
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let src = format!("{}{insert}{}", &base[..at], &base[at..]);
        if let Err(e) = parse(&src, "p.toml") {
            let line = src.split('\n').nth(e.line - 1);
            proptest::prop_assert!(line.is_some(), "{e}");
            proptest::prop_assert!(e.col >= 1 && e.col <= line.unwrap().chars().count() + 1, "{e}");
        }
    }
}

/// `[pipelines.X.window]` and `[server]` (issue 5), in the same table form.
fn serve_cases() -> Vec<Case> {
    let window = |body: &str| with(&format!("\n[pipelines.web.window]\n{body}\n"));
    let server = |body: &str| format!("[server]\n{body}\n\n{BASE}");
    vec![
        case(
            "window without duration",
            window("cron = \"0 2 * * *\""),
            (12, 1),
            Some("pipelines.web.window"),
            "missing field `duration`",
        ),
        case(
            "empty cron",
            window("cron = \" \"\nduration = \"4h\""),
            (13, 1),
            Some("pipelines.web.window.cron"),
            "must not be empty",
        ),
        case(
            "zero duration",
            window("cron = \"0 2 * * *\"\nduration = \"0s\""),
            (14, 1),
            Some("pipelines.web.window.duration"),
            "must be greater than zero",
        ),
        case(
            "cutoff as long as the window",
            window("cron = \"0 2 * * *\"\nduration = \"1h\"\ncutoff = \"1h\""),
            (15, 1),
            Some("pipelines.web.window.cutoff"),
            "leaves no time to roll in a 1h window",
        ),
        case(
            "unknown only_if",
            window("cron = \"0 2 * * *\"\nduration = \"1h\"\nonly_if = \"always\""),
            (15, 11),
            Some("pipelines.web.window.only_if"),
            "unknown variant `always`, expected `updates_available`",
        ),
        case(
            "zero failures allowed",
            window("cron = \"0 2 * * *\"\nduration = \"1h\"\nmax_consecutive_failures = 0"),
            (15, 1),
            Some("pipelines.web.window.max_consecutive_failures"),
            "must be at least 1",
        ),
        case(
            "unknown window field",
            window("cron = \"0 2 * * *\"\nduration = \"1h\"\nstart = 1"),
            (15, 1),
            Some("pipelines.web.window.start"),
            "unknown field `start`",
        ),
        case(
            "bad listen",
            server("listen = \"localhost\""),
            (2, 1),
            Some("server.listen"),
            "\"localhost\" is not an address",
        ),
        case(
            "short token",
            server("token = \"abc\""),
            (2, 1),
            Some("server.token"),
            "at least 16 characters",
        ),
        case(
            "token and token_env",
            server("token = \"0123456789abcdef\"\ntoken_env = \"T\""),
            (3, 1),
            Some("server.token_env"),
            "either `token` or `token_env`",
        ),
        case(
            "webhook url",
            server("[[server.webhooks]]\nurl = \"ftp://x\""),
            (2, 10),
            Some("server.webhooks[0]"),
            "must start with http:// or https://",
        ),
        case(
            "webhook format",
            server("[[server.webhooks]]\nurl = \"http://127.0.0.1:9/\"\nformat = \"teams\""),
            (4, 10),
            Some("server.webhooks[0].format"),
            "unknown variant `teams`, expected `json` or `slack`",
        ),
        case(
            "webhook event",
            server("[[server.webhooks]]\nurl = \"http://127.0.0.1:9/\"\nevents = [\"started\", \"deployed\"]"),
            (4, 22),
            Some("server.webhooks[0].events[1]"),
            "unknown variant `deployed`, expected one of `started`, `succeeded`, `failed`, `rolled_back`",
        ),
    ]
}

#[test]
fn malformed_serve_configs_point_at_the_problem() {
    let mut failures = Vec::new();
    for c in serve_cases() {
        match parse_bytes(&c.src, "repave.toml") {
            Ok(_) => failures.push(format!("{}: parsed without error", c.name)),
            Err(err) => {
                if (err.line, err.col) != (c.line, c.col)
                    || err.field.as_deref() != c.field
                    || !err.message.contains(c.message)
                {
                    failures.push(format!(
                        "{}: got {}:{} {:?} {:?}; want {}:{} {:?} ~{:?}",
                        c.name, err.line, err.col, err.field, err.message, c.line, c.col, c.field, c.message
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn window_and_server_parse_with_defaults() {
    let src = with("window = { cron = \"cron(0 1 ? * SUN *)\", duration = \"4h\", cutoff = \"1h\" }\n");
    let config = parse(&src, "repave.toml").unwrap();
    let w = config.pipelines["web"].window.as_ref().unwrap();
    assert_eq!(
        (w.timezone.as_str(), w.max_consecutive_failures, w.only_if),
        ("UTC", 3, None)
    );
    assert_eq!(config.server.listen, "127.0.0.1:8787");
    assert!(config.server.webhooks.is_empty());
}

/// An AWS pipeline; `[pipelines.web.aws]` cases append to it (line 9 on).
const AWS_BASE: &str = r#"[providers.aws]
region = "us-east-1"

[pipelines.web]
provider = "aws"
group = "web-asg"
parameter = "latestAmi"

[pipelines.web.aws]
"#;

fn aws_cases() -> Vec<Case> {
    let aws = |body: &str| format!("{AWS_BASE}{body}\n");
    vec![
        case(
            "role_arn is not an ARN",
            aws("role_arn = \"repave\""),
            (10, 1),
            Some("pipelines.web.aws.role_arn"),
            "is not an ARN",
        ),
        case(
            "role_arn with a short account",
            aws("role_arn = \"arn:aws:iam::12345:role/repave\""),
            (10, 1),
            Some("pipelines.web.aws.role_arn"),
            "must be 12 digits",
        ),
        case(
            "role_arn naming a user",
            aws("role_arn = \"arn:aws:iam::123456789012:user/bob\""),
            (10, 1),
            Some("pipelines.web.aws.role_arn"),
            "not a role",
        ),
        case(
            "role_arn of another service",
            aws("role_arn = \"arn:aws:sts::123456789012:role/repave\""),
            (10, 1),
            Some("pipelines.web.aws.role_arn"),
            "not an IAM role ARN",
        ),
        case(
            "role_arn in the wrong partition for the region",
            aws("region = \"cn-north-1\"\nrole_arn = \"arn:aws:iam::123456789012:role/repave\""),
            (11, 1),
            Some("pipelines.web.aws.role_arn"),
            "region cn-north-1 is in \"aws-cn\"",
        ),
        case(
            "external_id without role_arn",
            aws("region = \"eu-west-1\"\nexternal_id = \"abc123\""),
            (11, 1),
            Some("pipelines.web.aws.external_id"),
            "only means something with `role_arn`",
        ),
        case(
            "session_name without role_arn",
            aws("session_name = \"ci\""),
            (10, 1),
            Some("pipelines.web.aws.session_name"),
            "only means something with `role_arn`",
        ),
        case(
            "external_id with a space",
            aws("role_arn = \"arn:aws:iam::123456789012:role/repave\"\nexternal_id = \"a b\""),
            (11, 1),
            Some("pipelines.web.aws.external_id"),
            "2-1224 letters",
        ),
        case(
            "session_name too long",
            aws(&format!(
                "role_arn = \"arn:aws:iam::123456789012:role/repave\"\nsession_name = \"{}\"",
                "s".repeat(65)
            )),
            (11, 1),
            Some("pipelines.web.aws.session_name"),
            "2-64 letters",
        ),
        case(
            "session shorter than STS allows",
            aws("role_arn = \"arn:aws:iam::123456789012:role/repave\"\nsession_duration = \"5m\""),
            (11, 1),
            Some("pipelines.web.aws.session_duration"),
            "out of range 15m..=12h",
        ),
        case(
            "region that is no region",
            aws("region = \"Frankfurt\""),
            (10, 1),
            Some("pipelines.web.aws.region"),
            "is not an AWS region",
        ),
        case(
            "unknown key",
            aws("role = \"arn:aws:iam::123456789012:role/repave\""),
            (10, 1),
            Some("pipelines.web.aws.role"),
            "unknown field `role`",
        ),
        case(
            "aws table on a local pipeline",
            replace(
                "parameter = \"latestAmi\"\n",
                "parameter = \"latestAmi\"\n\n[pipelines.web.aws]\nregion = \"eu-west-1\"\n",
            ),
            (12, 16),
            Some("pipelines.web.aws"),
            "is for provider = \"aws\" pipelines",
        ),
    ]
}

#[test]
fn malformed_pipeline_aws_configs_point_at_the_problem() {
    let mut failures = Vec::new();
    for c in aws_cases() {
        match parse_bytes(&c.src, "repave.toml") {
            Ok(_) => failures.push(format!("{}: parsed without error", c.name)),
            Err(err) => {
                if (err.line, err.col) != (c.line, c.col)
                    || err.field.as_deref() != c.field
                    || !err.message.contains(c.message)
                {
                    failures.push(format!(
                        "{}: got {}:{} {:?} {:?}; want {}:{} {:?} ~{:?}",
                        c.name, err.line, err.col, err.field, err.message, c.line, c.col, c.field, c.message
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn a_pipeline_in_another_account_and_region_parses() {
    let src = format!(
        "{AWS_BASE}region = \"cn-north-1\"\nrole_arn = \"arn:aws-cn:iam::123456789012:role/ops/repave\"\nexternal_id = \"tenant-42\"\nsession_duration = \"1h\"\n"
    );
    let config = parse(&src, "repave.toml").unwrap();
    let aws = config.pipelines["web"].aws.as_ref().unwrap();
    assert_eq!(aws.role_account(), Some("123456789012"));
    let role = RoleArn::parse(aws.role_arn.as_deref().unwrap()).unwrap();
    assert_eq!((role.partition, role.resource), ("aws-cn", "ops/repave"));
    assert_eq!(partition_of("cn-north-1"), "aws-cn");
    assert_eq!(partition_of("us-gov-west-1"), "aws-us-gov");
    assert_eq!(partition_of("eu-west-1"), "aws");
}
