//! Counts of findings by severity: the `summary` of `ward lint` and
//! `ward check` reports, in one definition for both.

use serde::Serialize;

use super::Severity;

/// Counts of findings by severity.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Findings of severity error.
    pub error: usize,
    /// Findings of severity warning.
    pub warning: usize,
    /// Findings of severity notice.
    pub notice: usize,
}

impl Summary {
    /// Counts findings by their severities.
    pub fn of(severities: impl IntoIterator<Item = Severity>) -> Self {
        let mut s = Summary::default();
        for severity in severities {
            match severity {
                Severity::Error => s.error += 1,
                Severity::Warning => s.warning += 1,
                Severity::Notice => s.notice += 1,
            }
        }
        s
    }

    /// "1 error, 2 warnings, 0 notices".
    pub fn text(&self) -> String {
        let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
        format!(
            "{}, {}, {}",
            plural(self.error, "error"),
            plural(self.warning, "warning"),
            plural(self.notice, "notice")
        )
    }

    /// The last line of a text report: "PASS: 0 errors, … (fail-on error)".
    pub fn verdict_line(&self, passed: bool, fail_on: Severity) -> String {
        let verdict = if passed { "PASS" } else { "FAIL" };
        format!("{verdict}: {} (fail-on {fail_on})\n", self.text())
    }
}
