//! The image test's application probe: the health path fetched on the test
//! instance itself through SSM Run Command, on the port the group's target
//! group checks. EC2 status checks only say the machine booted; this says
//! the application on the new image answers, before anything is published.

use crate::patching::Platform;
use crate::AwsProvider;
use repave_core::provider::{tag, CommandDocument, CommandRequest, Commands, HealthProbe, Result};
use repave_core::InstanceId;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// Printed by the probe before the HTTP status it got.
pub const MARKER: &str = "repave-health-probe";

/// How long one probe waits for its command's result.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

fn script(platform: Platform) -> &'static str {
    match platform {
        Platform::Linux => concat!(
            "# repave-health-probe\n",
            "code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 ",
            "\"http://127.0.0.1:${REPAVE_PROBE_PORT}${REPAVE_PROBE_PATH}\") || code=000\n",
            "echo \"repave-health-probe $code\"\n"
        ),
        Platform::Windows => concat!(
            "# repave-health-probe\n",
            "try { $r = Invoke-WebRequest -UseBasicParsing -TimeoutSec 5 -Uri ",
            "(\"http://127.0.0.1:\" + $env:REPAVE_PROBE_PORT + $env:REPAVE_PROBE_PATH); $code = [int]$r.StatusCode } ",
            "catch { $code = if ($_.Exception.Response) { [int]$_.Exception.Response.StatusCode } else { 0 } }\n",
            "Write-Output \"repave-health-probe $code\"\n"
        ),
    }
}

/// The HTTP status in the probe's output.
pub(crate) fn status_code(stdout: &str) -> Option<u16> {
    stdout
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(MARKER))
        .and_then(|rest| rest.trim().parse().ok())
}

impl AwsProvider {
    /// `None` for an instance not launched like a group's (no
    /// `repave:group` tag): there is no application port to ask.
    pub(crate) async fn app_probe(&self, id: &InstanceId, path: &str) -> Result<Option<HealthProbe>> {
        let found = self.describe_visible(id).await?;
        let Some(group) = found
            .tags()
            .iter()
            .find(|t| t.key() == Some(tag::GROUP))
            .and_then(|t| t.value())
            .map(str::to_string)
        else {
            return Ok(None);
        };
        let port = self.probe_port(&group).await?;
        let mut env = BTreeMap::new();
        env.insert("REPAVE_PROBE_PORT".to_string(), port.to_string());
        env.insert("REPAVE_PROBE_PATH".to_string(), path.to_string());
        let platform = self.platform(id).await?;
        let req = CommandRequest {
            instance: id.clone(),
            document: CommandDocument::Shell {
                script: script(platform).to_string(),
                env,
            },
            timeout: PROBE_TIMEOUT,
            token: format!("probe-{id}"),
        };
        let cmd = match self.send_command(req).await {
            Ok(c) => c,
            // Not registered with SSM yet: not healthy yet either.
            Err(e) if e.is_retryable() || e.is_not_found() => {
                return Ok(Some(HealthProbe {
                    healthy: false,
                    detail: format!("SSM cannot reach {id} yet: {e}"),
                }))
            }
            Err(e) => return Err(e),
        };
        let deadline = Instant::now() + PROBE_TIMEOUT;
        loop {
            let r = self.command_result(&cmd).await?;
            if r.status.is_terminal() {
                let code = status_code(&r.stdout);
                let healthy = code.is_some_and(|c| (200..400).contains(&c));
                return Ok(Some(HealthProbe {
                    healthy,
                    detail: match code {
                        Some(c) => format!("GET http://127.0.0.1:{port}{path} on {id} answered {c}"),
                        None => format!(
                            "GET http://127.0.0.1:{port}{path} on {id}: no answer ({:?}: {})",
                            r.status,
                            r.stderr.trim()
                        ),
                    },
                }));
            }
            if Instant::now() >= deadline {
                return Ok(Some(HealthProbe {
                    healthy: false,
                    detail: format!("the health probe on {id} did not finish within {PROBE_TIMEOUT:?}"),
                }));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The port the group's (first) target group checks: its health check
    /// port, else its traffic port; 80 without a target group.
    async fn probe_port(&self, group: &str) -> Result<u16> {
        if let Some(p) = self.probe_ports.lock().expect("probe ports lock").get(group) {
            return Ok(*p);
        }
        let timing = self.read_health_timing(group).await?;
        let port = timing.checks.iter().find_map(|c| c.port).unwrap_or(80);
        self.probe_ports
            .lock()
            .expect("probe ports lock")
            .insert(group.to_string(), port);
        Ok(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_status_the_probe_printed() {
        assert_eq!(status_code("repave-health-probe 200\n"), Some(200));
        assert_eq!(status_code("noise\nrepave-health-probe 503"), Some(503));
        assert_eq!(status_code("repave-health-probe 000"), Some(0));
        assert_eq!(status_code(""), None);
        for p in [Platform::Linux, Platform::Windows] {
            assert!(script(p).contains(MARKER));
            assert!(
                !script(p).contains("/health"),
                "the path goes in the environment, not the script"
            );
        }
    }
}
