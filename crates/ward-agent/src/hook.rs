//! The `--on-rotate` command: run through `sh -c` after each write, with a
//! timeout; a failure is logged and counted, never fatal.
//!
//! The child never inherits `WARD_TOKEN`: the bootstrap token must not reach
//! anything but the CA.

use std::time::Duration;

use tokio::process::Command;

/// How one run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookOutcome {
    /// Exit status 0.
    Ok,
    /// Non-zero exit, killed by a signal, or could not start.
    Failed,
    /// Still running at the timeout; it was killed.
    TimedOut,
}

impl HookOutcome {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            HookOutcome::Ok => "ok",
            HookOutcome::Failed => "failed",
            HookOutcome::TimedOut => "timeout",
        }
    }
}

/// Environment variables removed from the child.
pub const SCRUBBED_ENV: &[&str] = &["WARD_TOKEN"];

/// Runs `command` with `sh -c`, waiting at most `timeout`.
pub async fn run(command: &str, timeout: Duration) -> HookOutcome {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    for name in SCRUBBED_ENV {
        cmd.env_remove(name);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::warn!(error = %e, "--on-rotate: cannot start sh");
            return HookOutcome::Failed;
        }
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => HookOutcome::Ok,
        Ok(Ok(status)) => {
            tracing::warn!(%status, "--on-rotate command failed");
            HookOutcome::Failed
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "--on-rotate: waiting for the command failed");
            HookOutcome::Failed
        }
        Err(_) => {
            let _ = child.kill().await;
            tracing::warn!(timeout = ?timeout, "--on-rotate command timed out and was killed");
            HookOutcome::TimedOut
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outcomes() {
        let t = Duration::from_secs(10);
        assert_eq!(run("true", t).await, HookOutcome::Ok);
        assert_eq!(run("exit 3", t).await, HookOutcome::Failed);
        assert_eq!(
            run("sleep 5", Duration::from_millis(100)).await,
            HookOutcome::TimedOut
        );
    }
}
