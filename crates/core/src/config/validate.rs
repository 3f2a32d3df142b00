//! Semantic checks run once after the config deserialized: ranges, names,
//! cross references. Each problem names the path of the offending key; the
//! caller turns the path into a position.

use super::locate::Seg;
use super::{Config, ConfigError, HealthCheck, LocalGroup, Pipeline, ProviderKind, Rollout, SimConfig};
use crate::duration::HumanDuration;
use std::path::Component;

/// Builds a positioned error for a path; supplied by the loader.
pub(crate) type MakeError<'a> = &'a dyn Fn(&[Seg], String) -> ConfigError;

/// Every problem in `config`, in check order.
pub(crate) fn check(config: &Config, make: MakeError<'_>) -> Vec<ConfigError> {
    let mut c = Checker {
        make,
        errors: Vec::new(),
    };
    c.state_dir(config);
    c.providers(config);
    if config.pipelines.is_empty() {
        c.err(
            &["pipelines"],
            "no pipelines defined; add a [pipelines.<name>] table (`repave init` writes a starter)",
        );
    }
    for (name, pipeline) in &config.pipelines {
        c.pipeline(config, name, pipeline);
    }
    c.serve(config);
    c.errors
}

/// Pipeline and group names: `[a-z0-9][a-z0-9_-]{0,62}` (they end up in
/// tags, file names and URLs).
pub fn is_valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    let body = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-';
    !b.is_empty() && b.len() <= 63 && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit()) && b[1..].iter().all(body)
}

const NAME_RULE: &str = "use 1-63 lowercase letters, digits, '_' or '-', starting with a letter or digit";

struct Checker<'a> {
    make: MakeError<'a>,
    errors: Vec<ConfigError>,
}

fn keys(path: &[&str]) -> Vec<Seg> {
    path.iter().map(|k| Seg::Key(k.to_string())).collect()
}

impl Checker<'_> {
    fn err(&mut self, path: &[&str], message: impl Into<String>) {
        let e = (self.make)(&keys(path), message.into());
        self.errors.push(e);
    }

    fn err_index(&mut self, path: &[&str], index: usize, message: impl Into<String>) {
        let mut segs = keys(path);
        segs.push(Seg::Index(index));
        let e = (self.make)(&segs, message.into());
        self.errors.push(e);
    }

    fn positive(&mut self, path: &[&str], d: HumanDuration) {
        if d.get().is_zero() {
            self.err(path, "must be greater than zero");
        }
    }

    fn state_dir(&mut self, config: &Config) {
        let Some(dir) = &config.state_dir else { return };
        if dir.as_os_str().is_empty() {
            self.err(
                &["state_dir"],
                "must not be empty; leave it out for the default `.repave`",
            );
        } else if dir.is_relative() && dir.components().any(|c| c == Component::ParentDir) {
            self.err(
                &["state_dir"],
                format!("relative path {dir:?} must not contain `..`; use an absolute path"),
            );
        }
    }

    fn providers(&mut self, config: &Config) {
        if let Some(aws) = &config.providers.aws {
            if aws.request_budget_percent > 100 {
                self.err(
                    &["providers", "aws", "request_budget_percent"],
                    format!("{} is out of range 0..=100 (0: no budget)", aws.request_budget_percent),
                );
            }
            if let Some(url) = &aws.endpoint_url {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    self.err(
                        &["providers", "aws", "endpoint_url"],
                        format!("{url:?} must start with http:// or https://"),
                    );
                }
            }
        }
        let Some(local) = &config.providers.local else {
            return;
        };
        if local.feed.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
            self.err(
                &["providers", "local", "feed"],
                "must not be empty; leave it out for the demo feed",
            );
        }
        let mut ports = std::collections::BTreeMap::new();
        for (name, group) in &local.groups {
            self.local_group(name, group);
            if let Some(other) = ports.insert(group.port, name) {
                let message = format!("port {} is already used by group {other:?}", group.port);
                self.err(&["providers", "local", "groups", name, "port"], message);
            }
        }
    }

    fn local_group(&mut self, name: &str, g: &LocalGroup) {
        let at = |k: &'static str| ["providers", "local", "groups", name, k];
        if !is_valid_name(name) {
            self.err(
                &["providers", "local", "groups", name],
                format!("invalid group name {name:?}: {NAME_RULE}"),
            );
        }
        if g.max == 0 {
            self.err(&at("max"), "must be at least 1");
        } else if g.max > 256 {
            self.err(&at("max"), format!("{} is more than 256 local instances", g.max));
        }
        if g.min > g.max {
            self.err(&at("min"), format!("min ({}) is greater than max ({})", g.min, g.max));
        } else if g.desired < g.min || g.desired > g.max {
            self.err(
                &at("desired"),
                format!(
                    "desired ({}) must be between min ({}) and max ({})",
                    g.desired, g.min, g.max
                ),
            );
        }
        if g.port < 1024 {
            self.err(
                &at("port"),
                format!("port {} is privileged; use 1024 or higher", g.port),
            );
        }
        if g.command.is_empty() || g.command[0].trim().is_empty() {
            self.err(&at("command"), "must name a program to run");
        } else if !g.command.iter().any(|a| a.contains("{port}")) {
            self.err(
                &at("command"),
                "must contain `{port}` so each instance listens on its own port",
            );
        }
        if g.image.trim().is_empty() {
            self.err(&at("image"), "must be \"builtin:demo\" or a directory to import");
        } else if g.image.starts_with("builtin:") && g.image != "builtin:demo" {
            self.err(
                &at("image"),
                format!("unknown builtin image {:?}; the only one is \"builtin:demo\"", g.image),
            );
        }
        self.health_check(name, &g.health_check);
        if let Some(sc) = &g.scaling {
            let at = |k: &'static str| ["providers", "local", "groups", name, "scaling", k];
            if sc.target_requests_per_instance == 0 {
                self.err(
                    &at("target_requests_per_instance"),
                    "must be at least 1 request per second",
                );
            }
            if sc.scale_in_cooldown.get() < std::time::Duration::from_secs(1) {
                self.err(&at("scale_in_cooldown"), "must be at least 1s");
            }
        }
    }

    fn health_check(&mut self, group: &str, h: &HealthCheck) {
        let at = |k: &'static str| ["providers", "local", "groups", group, "health_check", k];
        if !h.path.starts_with('/') {
            self.err(&at("path"), format!("{:?} must start with \"/\"", h.path));
        }
        self.positive(&at("interval"), h.interval);
        self.positive(&at("timeout"), h.timeout);
        for (key, v) in [
            ("healthy_threshold", h.healthy_threshold),
            ("unhealthy_threshold", h.unhealthy_threshold),
        ] {
            if !(1..=10).contains(&v) {
                self.err(&at(key), format!("{v} is out of range 1..=10"));
            }
        }
    }

    fn pipeline(&mut self, config: &Config, name: &str, p: &Pipeline) {
        let at = |k: &'static str| ["pipelines", name, k];
        if !is_valid_name(name) {
            self.err(
                &["pipelines", name],
                format!("invalid pipeline name {name:?}: {NAME_RULE}"),
            );
        }
        let exists = match p.provider {
            ProviderKind::Local => config.providers.local.is_some(),
            ProviderKind::Aws => config.providers.aws.is_some(),
            ProviderKind::Sim => {
                self.err(
                    &at("provider"),
                    "\"sim\" is the simulator's (repave simulate); a pipeline runs on \"local\" or \"aws\"",
                );
                true
            }
        };
        if !exists {
            let message = format!(
                "provider {:?} is not configured; add a [providers.{}] table",
                p.provider.as_str(),
                p.provider
            );
            self.err(&at("provider"), message);
        }
        if p.group.trim().is_empty() {
            self.err(&at("group"), "must name the scaling group to keep patched");
        } else if let (Some(local), ProviderKind::Local) = (&config.providers.local, p.provider) {
            if !local.groups.contains_key(&p.group) {
                let known: Vec<&str> = local.groups.keys().map(String::as_str).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                let message = format!("no group {:?} in [providers.local.groups] (defined: {known})", p.group);
                self.err(&at("group"), message);
            }
        }
        self.parameter(name, &p.parameter);
        self.positive(
            &["pipelines", name, "builder", "ready_timeout"],
            p.builder.ready_timeout,
        );
        self.patch(name, p);
        for (i, cmd) in p.validate.iter().enumerate() {
            if cmd.trim().is_empty() {
                self.err_index(&at("validate"), i, "empty command");
            }
        }
        if !p.test.health_path.starts_with('/') {
            self.err(
                &["pipelines", name, "test", "health_path"],
                format!("{:?} must start with \"/\"", p.test.health_path),
            );
        }
        self.positive(&["pipelines", name, "test", "timeout"], p.test.timeout);
        self.rollout(name, p.provider, &p.rollout);
        self.simulate(name, &p.simulate);
        if p.retention.keep == 0 {
            self.err(
                &["pipelines", name, "retention", "keep"],
                "must be at least 1 (the current image is kept)",
            );
        }
        self.positive(&at("image_timeout"), p.image_timeout);
        self.pipeline_aws(config, name, p);
    }

    /// `[pipelines.X.aws]`: region, role, external id, session.
    fn pipeline_aws(&mut self, config: &Config, name: &str, p: &Pipeline) {
        let Some(aws) = &p.aws else { return };
        let at = |k: &'static str| ["pipelines", name, "aws", k];
        if p.provider != ProviderKind::Aws {
            let message = format!("is for provider = \"aws\" pipelines; this one runs on {:?}", p.provider);
            self.err(&["pipelines", name, "aws"], message);
        }
        if let Some(r) = &aws.region {
            if !super::is_valid_region(r) {
                self.err(&at("region"), format!("{r:?} is not an AWS region; e.g. \"eu-west-1\""));
            }
        }
        let Some(arn) = &aws.role_arn else {
            for (key, set) in [
                ("external_id", aws.external_id.is_some()),
                ("session_name", aws.session_name.is_some()),
                ("session_duration", aws.session_duration.is_some()),
            ] {
                if set {
                    self.err(
                        &at(key),
                        "only means something with `role_arn`; add the role to assume, or remove this",
                    );
                }
            }
            return;
        };
        match super::RoleArn::parse(arn) {
            Err(message) => self.err(&at("role_arn"), message),
            Ok(role) => {
                let region = aws
                    .region
                    .as_deref()
                    .or(config.providers.aws.as_ref().and_then(|a| a.region.as_deref()));
                if let Some(region) = region.filter(|r| super::is_valid_region(r)) {
                    let want = super::partition_of(region);
                    if role.partition != want {
                        let message = format!(
                            "the role is in partition {:?} but region {region} is in {want:?}; write arn:{want}:iam::...",
                            role.partition
                        );
                        self.err(&at("role_arn"), message);
                    }
                }
            }
        }
        if let Some(id) = &aws.external_id {
            let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@:/_-".contains(c);
            if !(2..=1224).contains(&id.len()) || !id.chars().all(allowed) {
                self.err(
                    &at("external_id"),
                    "must be 2-1224 letters, digits or +=,.@:/_- (STS AssumeRole ExternalId)",
                );
            }
        }
        if let Some(s) = &aws.session_name {
            let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
            if !(2..=64).contains(&s.len()) || !s.chars().all(allowed) {
                self.err(
                    &at("session_name"),
                    "must be 2-64 letters, digits or +=,.@_- (STS AssumeRole RoleSessionName)",
                );
            }
        }
        if let Some(d) = aws.session_duration {
            let secs = d.get().as_secs();
            if !(900..=43_200).contains(&secs) {
                self.err(
                    &at("session_duration"),
                    format!("{secs}s is out of range 15m..=12h (STS AssumeRole DurationSeconds)"),
                );
            }
        }
    }

    fn parameter(&mut self, pipeline: &str, param: &str) {
        let at = ["pipelines", pipeline, "parameter"];
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/');
        if param.is_empty() {
            self.err(&at, "must name the golden parameter, e.g. \"latestAmi\"");
        } else if param.len() > 2048 {
            self.err(&at, format!("is {} characters long; at most 2048", param.len()));
        } else if let Some(bad) = param.chars().find(|c| !allowed(*c)) {
            self.err(
                &at,
                format!("invalid character {bad:?}; use letters, digits, '_', '.', '-' or '/'"),
            );
        }
    }

    fn patch(&mut self, pipeline: &str, p: &Pipeline) {
        let at = |k: &'static str| ["pipelines", pipeline, "patch", k];
        // Against every family `builder.platform` allows; the detected one
        // is checked again before a run launches anything.
        let choice = p.builder.platform;
        for problem in p.patch.problems(choice, p.provider == ProviderKind::Aws) {
            match problem.index {
                Some(i) => self.err_index(&at(problem.key), i, problem.message),
                None => self.err(&at(problem.key), problem.message),
            }
        }
        if p.patch.max_reboots > 10 {
            self.err(&at("max_reboots"), format!("{} is more than 10", p.patch.max_reboots));
        }
        self.positive(&at("timeout"), p.patch.timeout);
    }

    fn rollout(&mut self, pipeline: &str, provider: ProviderKind, r: &Rollout) {
        let at = |k: &'static str| ["pipelines", pipeline, "rollout", k];
        match r.strategy {
            crate::config::Strategy::Rolling => {}
            crate::config::Strategy::Native if provider == ProviderKind::Aws => {}
            crate::config::Strategy::Native => self.err(
                &at("strategy"),
                "\"native\" (Instance Refresh) needs provider \"aws\"; use \"rolling\"",
            ),
        }
        if r.standby == crate::config::HeldInstances::Replace {
            self.err(
                &at("standby"),
                "\"replace\" is for protected instances only; a standby instance is out of service on purpose: use \"skip\", \"wait\" or \"fail\"",
            );
        }
        let (min, max) = (r.min_healthy_percent, r.max_healthy_percent);
        if min > 100 {
            self.err(&at("min_healthy_percent"), format!("{min} is out of range 0..=100"));
        }
        if !(100..=200).contains(&max) {
            self.err(&at("max_healthy_percent"), format!("{max} is out of range 100..=200"));
        }
        // Within the ranges min <= 100 <= max, so min <= max always holds;
        // the one bad combination left is 100/100.
        if min == 100 && max == 100 {
            let message = "min_healthy_percent 100 with max_healthy_percent 100 leaves no room to replace an instance; raise max_healthy_percent or lower min_healthy_percent";
            self.err(&at("max_healthy_percent"), message);
        }
        if r.max_unhealthy_new == 0 {
            self.err(&at("max_unhealthy_new"), "must be at least 1");
        }
        if let Some(pct) = r.max_unhealthy_new_percent {
            if !(1..=100).contains(&pct) {
                self.err(
                    &at("max_unhealthy_new_percent"),
                    format!("{pct} is out of range 1..=100"),
                );
            }
        }
        if r.canary > 0 {
            self.positive(&at("bake_time"), r.bake_time);
        }
        let mut last = 0;
        for (i, &pct) in r.checkpoints.iter().enumerate() {
            if !(1..=99).contains(&pct) {
                self.err_index(
                    &at("checkpoints"),
                    i,
                    format!("{pct} is out of range 1..=99 (percent of the fleet)"),
                );
            } else if pct <= last {
                self.err_index(
                    &at("checkpoints"),
                    i,
                    format!("{pct} is not above the checkpoint before it ({last}); list them ascending"),
                );
            }
            last = last.max(pct);
        }
        self.positive(&at("hold_timeout"), r.hold_timeout);
        self.positive(&at("drain_timeout"), r.drain_timeout);
        if let Some(cutoff) = r.window_cutoff {
            self.positive(&at("window_cutoff"), cutoff);
        }
        self.positive(&at("timeout"), r.timeout);
    }

    fn simulate(&mut self, pipeline: &str, s: &SimConfig) {
        let at = |k: &'static str| ["pipelines", pipeline, "simulate", k];
        if s.variance_percent > 100 {
            self.err(
                &at("variance_percent"),
                format!("{} is out of range 0..=100", s.variance_percent),
            );
        }
        self.positive(&at("launch"), s.launch);
    }
}

/// `[pipelines.X.window]` and `[server]`: the parts `repave serve` reads.
/// The cron expression and time zone are parsed by the scheduler (it owns
/// the time-zone database); here only what needs no database.
impl Checker<'_> {
    fn serve(&mut self, config: &Config) {
        for (name, p) in &config.pipelines {
            let Some(w) = &p.window else { continue };
            let at = |k: &'static str| ["pipelines", name.as_str(), "window", k];
            if w.cron.trim().is_empty() {
                self.err(
                    &at("cron"),
                    "must not be empty; e.g. \"0 2 * * TUE#2+3\" or \"cron(0 1 ? * SUN *)\"",
                );
            }
            if w.timezone.trim().is_empty() {
                self.err(&at("timezone"), "must name an IANA time zone, e.g. \"Asia/Taipei\"");
            }
            self.positive(&at("duration"), w.duration);
            if let Some(cutoff) = w.cutoff {
                if cutoff >= w.duration {
                    let message = format!(
                        "{} leaves no time to roll in a {} window; make it shorter than `duration`",
                        crate::duration::format_duration(cutoff.get()),
                        crate::duration::format_duration(w.duration.get())
                    );
                    self.err(&at("cutoff"), message);
                }
            }
            if w.max_consecutive_failures == 0 {
                self.err(&at("max_consecutive_failures"), "must be at least 1");
            }
        }
        let s = &config.server;
        if s.listen.parse::<std::net::SocketAddr>().is_err() {
            let message = format!("{:?} is not an address; write e.g. \"127.0.0.1:8787\"", s.listen);
            self.err(&["server", "listen"], message);
        }
        if s.token.is_some() && s.token_env.is_some() {
            self.err(&["server", "token_env"], "set either `token` or `token_env`, not both");
        }
        if s.token.as_deref().is_some_and(|t| t.len() < 16) {
            self.err(&["server", "token"], "must be at least 16 characters");
        }
        for (i, hook) in s.webhooks.iter().enumerate() {
            let path = ["server", "webhooks"];
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                self.err_index(
                    &path,
                    i,
                    format!("url {:?} must start with http:// or https://", hook.url),
                );
            }
        }
    }
}
