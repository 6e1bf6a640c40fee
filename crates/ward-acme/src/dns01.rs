//! dns-01 through an exec hook: `HOOK present FQDN VALUE` before the
//! validation, `HOOK cleanup FQDN VALUE` after it (the convention of lego's
//! `exec` provider, so existing scripts work). FQDN ends with a dot.

use std::path::Path;
use std::time::Duration;

use crate::Error;

/// Longest a hook may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(120);
/// Most of a failing hook's stderr quoted in the error.
const MAX_STDERR: usize = 512;

/// The record name for `domain` (a wildcard's base name).
pub fn record_name(domain: &str) -> String {
    format!("_acme-challenge.{}.", domain.trim_start_matches("*."))
}

/// Runs `hook ACTION FQDN VALUE`, failing on a non-zero exit or a timeout.
pub async fn run_hook(hook: &Path, action: &str, fqdn: &str, value: &str) -> Result<(), Error> {
    let mut command = tokio::process::Command::new(hook);
    command
        .args([action, fqdn, value])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .map_err(|e| Error::Challenge(format!("dns hook {}: {e}", hook.display())))?;
    let output = tokio::time::timeout(HOOK_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            Error::Challenge(format!(
                "dns hook {} {action} took longer than {HOOK_TIMEOUT:?}",
                hook.display()
            ))
        })?
        .map_err(|e| Error::Challenge(format!("dns hook {}: {e}", hook.display())))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr: String = stderr.chars().take(MAX_STDERR).collect();
    Err(Error::Challenge(format!(
        "dns hook {} {action} {fqdn} failed ({}): {}",
        hook.display(),
        output.status,
        stderr.trim()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names() {
        assert_eq!(record_name("a.test"), "_acme-challenge.a.test.");
        assert_eq!(record_name("*.a.test"), "_acme-challenge.a.test.");
    }

    #[tokio::test]
    async fn a_failing_hook_is_an_error_with_its_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let hook = dir.path().join("hook.sh");
        std::fs::write(&hook, "#!/bin/sh\necho \"no zone for $2\" >&2\nexit 3\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = run_hook(&hook, "present", "_acme-challenge.a.test.", "v")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no zone for _acme-challenge.a.test."), "{err}");
        let missing = run_hook(&dir.path().join("none"), "present", "x.", "v").await;
        assert!(missing.is_err());
    }
}
