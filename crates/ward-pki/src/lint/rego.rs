//! Site rules written in Rego, evaluated with regorus.
//!
//! The policy declares `package ward.lint`. Each rule whose name starts with
//! `deny`, `warn` or `notice` is a set (or array) of messages; every message
//! becomes a finding with id `rego.<rule>` and severity error, warning or
//! notice. Other rules are helpers and are ignored. The input is
//! [`RegoInput`], whose JSON shape `docs/lint-input.schema.json` documents.
//! The source is handed in as text: reading files is the caller's job.
//! The engine and its execution limit are [`crate::rego::Evaluator`]'s,
//! shared with the gate's authorization policies.

use serde::Serialize;
use time::OffsetDateTime;

use super::facts::Facts;
use super::rules;
use super::{Finding, Role, Severity};
use crate::Error;
use crate::issue::rfc3339;
use crate::rego::Evaluator;

/// The package every Ward Rego policy declares.
const PACKAGE: &str = "data.ward.lint";

/// The Rego `input` document: one certificate and where it stands.
#[derive(Clone, Debug, Serialize)]
pub struct RegoInput {
    /// `leaf`, `intermediate` or `root`.
    pub role: Role,
    /// The time of the check, RFC 3339.
    pub now: String,
    /// The time of the check, Unix seconds.
    pub now_unix: i64,
    /// The certificate.
    pub certificate: Facts,
}

impl RegoInput {
    /// The input for `facts` in `role` at `now`.
    pub fn new(facts: Facts, role: Role, now: OffsetDateTime) -> Self {
        RegoInput {
            role,
            now: rfc3339(now),
            now_unix: now.unix_timestamp(),
            certificate: facts,
        }
    }
}

/// A compiled Rego policy.
#[derive(Clone)]
pub struct RegoPolicy {
    evaluator: Evaluator,
}

impl std::fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("name", &self.evaluator.name())
            .finish_non_exhaustive()
    }
}

impl RegoPolicy {
    /// Parses `source` (named `name` in messages); it must declare
    /// `package ward.lint` and use Rego v1 syntax.
    pub fn compile(name: &str, source: &str) -> Result<Self, Error> {
        let (evaluator, _) = Evaluator::compile(name, source)
            .map_err(|e| Error::Policy(format!("Rego policy {name}: {e}")))?;
        let packages = evaluator
            .packages()
            .map_err(|e| Error::Policy(format!("Rego policy {name}: {e}")))?;
        if !packages.iter().any(|p| p == PACKAGE) {
            return Err(Error::Policy(format!(
                "Rego policy {name}: declare `package ward.lint` (found {})",
                packages.join(", ")
            )));
        }
        Ok(RegoPolicy { evaluator })
    }

    /// Evaluates the policy on `input`. An evaluation error is itself a
    /// finding (`rego.error`), so a broken policy never passes silently.
    pub fn evaluate(&self, input: &RegoInput) -> Vec<Finding> {
        match self.try_evaluate(input) {
            Ok(findings) => findings,
            Err(e) => vec![rules::REGO_ERROR.finding(format!("{}: {e}", self.evaluator.name()))],
        }
    }

    fn try_evaluate(&self, input: &RegoInput) -> Result<Vec<Finding>, String> {
        let json = serde_json::to_value(input).map_err(|e| e.to_string())?;
        let Some(value) = self
            .evaluator
            .with_input(json)
            .query(PACKAGE)
            .map_err(|e| e.to_string())?
        else {
            return Ok(Vec::new());
        };
        let mut findings = Vec::new();
        let Some(rules) = value.as_object() else {
            return Ok(findings);
        };
        for (rule, messages) in rules {
            let Some(severity) = severity_of(rule) else {
                continue;
            };
            let messages = match messages {
                serde_json::Value::Array(items) => items.clone(),
                serde_json::Value::Null | serde_json::Value::Bool(false) => Vec::new(),
                other => vec![other.clone()],
            };
            for msg in messages {
                findings.push(Finding {
                    id: format!("rego.{rule}"),
                    severity,
                    message: match msg {
                        serde_json::Value::String(s) => s,
                        serde_json::Value::Object(o) if o.contains_key("msg") => o["msg"]
                            .as_str()
                            .map_or_else(|| o["msg"].to_string(), str::to_owned),
                        other => other.to_string(),
                    },
                });
            }
        }
        Ok(findings)
    }
}

fn severity_of(rule: &str) -> Option<Severity> {
    if rule.starts_with("deny") {
        Some(Severity::Error)
    } else if rule.starts_with("warn") {
        Some(Severity::Warning)
    } else if rule.starts_with("notice") {
        Some(Severity::Notice)
    } else {
        None
    }
}
