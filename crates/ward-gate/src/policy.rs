//! Rego authorization policies (regorus), for when allow rules are not
//! expressive enough (SPEC §6, issue 4 item 3).
//!
//! Convention: a policy file declares `package ward.gate` and defines
//! `allow` (the request passes only when it is exactly `true`) and
//! optionally `deny`, a set of messages: any message denies, whatever
//! `allow` says, and the messages go into the 403 body. The input document
//! is [`PolicyInput`]. A policy is parsed and analysed once per (re)load by
//! `ward_pki::rego::Evaluator` (the engine and execution limit lint
//! policies use too); each evaluation clones the prepared engine (cheap:
//! reference-counted modules) and fails closed on any error, including
//! running past the evaluator's time limit.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use ward_pki::rego::Evaluator;

use crate::Error;
use crate::authz::Allow;
use crate::config::AllowRules;
use crate::identity::Identity;

/// The package every gate policy declares.
const PACKAGE: &str = "data.ward.gate";
/// The rule that must be `true`.
const ALLOW: &str = "data.ward.gate.allow";
/// The optional set of denial messages.
const DENY: &str = "data.ward.gate.deny";
/// Largest policy file accepted.
const MAX_POLICY_BYTES: u64 = 1024 * 1024;
/// At most this many deny messages (each cut to `MAX_MESSAGE` chars) reach the client.
const MAX_MESSAGES: usize = 8;
const MAX_MESSAGE: usize = 200;

/// The identity part of the input.
#[derive(Debug, Serialize)]
pub struct IdentityInput<'a> {
    /// The SPIFFE ID, or null.
    pub spiffe_id: Option<&'a str>,
    /// Every SAN as a string: URIs first, then DNS names.
    pub sans: Vec<&'a str>,
    /// Subject DN.
    pub subject: &'a str,
    /// Serial, lowercase hex.
    pub serial: &'a str,
    /// SHA-256 of the leaf DER, lowercase hex.
    pub fingerprint: &'a str,
}

impl<'a> IdentityInput<'a> {
    /// The input view of a verified identity.
    pub fn of(id: &'a Identity) -> Self {
        IdentityInput {
            spiffe_id: id.spiffe_str(),
            sans: id.sans(),
            subject: &id.subject,
            serial: &id.serial,
            fingerprint: &id.fingerprint,
        }
    }
}

/// The request part of the input (HTTP only).
#[derive(Debug, Serialize)]
pub struct RequestInput {
    /// Method, uppercase.
    pub method: String,
    /// Path, without the query.
    pub path: String,
    /// Host from `:authority`/`Host`, lowercase, no port; null when absent.
    pub host: Option<String>,
    /// Headers after identity-header stripping: lowercase name → value
    /// (repeated headers joined with ", ").
    pub headers: BTreeMap<String, String>,
    /// The gRPC call, for a gRPC request; null otherwise.
    pub grpc: Option<GrpcInput>,
}

/// The gRPC part of a request's input: `{service, method}`.
#[derive(Debug, Serialize)]
pub struct GrpcInput {
    /// `package.Service`.
    pub service: String,
    /// `Method`.
    pub method: String,
}

/// The whole input document:
/// `{identity, request, route, tenant}`; `request` and `route` are null
/// for TCP tenants.
#[derive(Debug, Serialize)]
pub struct PolicyInput<'a> {
    /// Who is calling.
    pub identity: IdentityInput<'a>,
    /// What they ask for.
    pub request: Option<RequestInput>,
    /// The matched route's name.
    pub route: Option<&'a str>,
    /// The tenant's name.
    pub tenant: &'a str,
}

/// What a policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `allow` is true and `deny` is empty.
    Allow,
    /// Denied; the policy's `deny` messages, possibly none.
    Deny(Vec<String>),
    /// Evaluation failed (treated as a denial); the reason, for the log only.
    Error(String),
}

/// A compiled policy, ready to evaluate.
#[derive(Clone)]
pub struct Policy {
    evaluator: Evaluator,
    has_deny: bool,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.evaluator.name())
            .field("has_deny", &self.has_deny)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// Reads and compiles a policy file.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let name = path.display().to_string();
        let too_big = std::fs::metadata(path)
            .map_err(|e| Error::Config(format!("reading the policy {name}: {e}")))?
            .len()
            > MAX_POLICY_BYTES;
        if too_big {
            return Err(Error::Config(format!(
                "policy {name} is larger than {MAX_POLICY_BYTES} bytes"
            )));
        }
        let source = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("reading the policy {name}: {e}")))?;
        Self::compile(&name, &source)
    }

    /// Parses and analyses `source` (named `name` in messages). It must
    /// declare `package ward.gate` and define `allow`.
    pub fn compile(name: &str, source: &str) -> Result<Self, Error> {
        let err = |e: &dyn std::fmt::Display| {
            Error::Config(format!("policy {name}: {}", tidy(&format!("{e:#}"))))
        };
        let (mut evaluator, package) = Evaluator::compile(name, source).map_err(|e| err(&e))?;
        if package != PACKAGE {
            return Err(err(&format!(
                "declare `package ward.gate` (found `package {}`)",
                package.trim_start_matches("data.")
            )));
        }
        let has_allow = evaluator.has_rule("allow").map_err(|e| err(&e))?;
        if !has_allow {
            return Err(err(&"the policy defines no `allow` rule"));
        }
        let has_deny = evaluator.has_rule("deny").map_err(|e| err(&e))?;
        // Analyses the modules (imports, functions, scheduling) now, so a
        // broken policy is a configuration error and evaluations start
        // from a prepared engine.
        evaluator.prepare(ALLOW).map_err(|e| err(&e))?;
        let policy = Policy {
            evaluator,
            has_deny,
        };
        policy.dry_run().map_err(|e| err(&e))?;
        Ok(policy)
    }

    /// Evaluates every entry rule on sample HTTP and TCP inputs: regorus
    /// resolves function names only when it reaches a call, so this is how
    /// a misspelt or unavailable builtin becomes a load error. Other
    /// errors may depend on the input and are left to request time.
    fn dry_run(&self) -> Result<(), String> {
        let sample = |request: Option<RequestInput>| PolicyInput {
            identity: IdentityInput {
                spiffe_id: Some("spiffe://example.org/sample"),
                sans: vec!["spiffe://example.org/sample"],
                subject: "CN=sample",
                serial: "01",
                fingerprint: "00",
            },
            route: request.as_ref().map(|_| "sample"),
            request,
            tenant: "sample",
        };
        let http = sample(Some(RequestInput {
            method: "GET".into(),
            path: "/".into(),
            host: Some("example.org".into()),
            headers: BTreeMap::from([("user-agent".to_owned(), "ward".to_owned())]),
            grpc: None,
        }));
        let rules = [Some(ALLOW), self.has_deny.then_some(DENY)];
        for input in [http, sample(None)] {
            let json = serde_json::to_value(&input).map_err(|e| e.to_string())?;
            for rule in rules.iter().flatten() {
                if let Err(e) = self.evaluator.with_input(json.clone()).rule(rule) {
                    let text = e.to_string();
                    if text.contains("could not find function") {
                        return Err(text);
                    }
                }
            }
        }
        Ok(())
    }

    /// The file the policy came from.
    pub fn name(&self) -> &str {
        self.evaluator.name()
    }

    /// Evaluates the policy; any failure is [`Decision::Error`].
    pub fn evaluate(&self, input: &PolicyInput<'_>) -> Decision {
        match self.try_evaluate(input) {
            Ok(d) => d,
            Err(e) => Decision::Error(e),
        }
    }

    fn try_evaluate(&self, input: &PolicyInput<'_>) -> Result<Decision, String> {
        let json = serde_json::to_value(input).map_err(|e| format!("input: {e}"))?;
        let mut bound = self.evaluator.with_input(json);
        if self.has_deny {
            let messages = deny_messages(&bound.rule(DENY).map_err(|e| format!("{DENY}: {e}"))?)?;
            if !messages.is_empty() {
                return Ok(Decision::Deny(messages));
            }
        }
        let allow = bound.rule(ALLOW).map_err(|e| format!("{ALLOW}: {e}"))?;
        match allow {
            regorus::Value::Bool(true) => Ok(Decision::Allow),
            regorus::Value::Bool(false) | regorus::Value::Undefined => {
                Ok(Decision::Deny(Vec::new()))
            }
            other => Err(format!("{ALLOW} is not a boolean: {other}")),
        }
    }
}

/// Who may use a route or TCP tenant: allow rules, a policy, or both.
///
/// Without a policy the allow rules decide (none listed: nobody). With a
/// policy, the policy must allow, and so must the allow rules when any
/// are listed: a policy narrows what the rules admit, and a route with
/// only a policy is decided by the policy alone.
#[derive(Clone, Debug)]
pub struct Access {
    rules: Option<Allow>,
    policy: Option<Arc<Policy>>,
}

/// The outcome of [`Access::decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allowed,
    /// The allow rules do not admit the identity.
    DeniedByRules,
    /// The policy denied, with its `deny` messages (possibly none).
    DeniedByPolicy(Vec<String>),
    /// The policy failed to evaluate (fail closed); the reason, for the log.
    PolicyError(String),
}

impl Access {
    /// Compiles the rules (validated earlier) and pairs them with `policy`.
    pub fn new(rules: &AllowRules, policy: Option<Arc<Policy>>) -> Result<Self, String> {
        let listed = !(rules.spiffe_ids.is_empty() && rules.dns.is_empty() && rules.cn.is_empty());
        let rules = if listed || policy.is_none() {
            Some(Allow::compile(rules)?)
        } else {
            None
        };
        Ok(Access { rules, policy })
    }

    /// The policy, if any.
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_deref()
    }

    /// Decides for `id`; `input` builds the policy input only when needed.
    pub fn decide<'a>(&self, id: &Identity, input: impl FnOnce() -> PolicyInput<'a>) -> Verdict {
        if let Some(rules) = &self.rules
            && !rules.allows(id)
        {
            return Verdict::DeniedByRules;
        }
        match &self.policy {
            None => Verdict::Allowed,
            Some(p) => match p.evaluate(&input()) {
                Decision::Allow => Verdict::Allowed,
                Decision::Deny(m) => Verdict::DeniedByPolicy(m),
                Decision::Error(e) => Verdict::PolicyError(e),
            },
        }
    }
}

/// regorus errors read "--> file:line:col / snippet / error: what";
/// put "what" first so the first line of the message says it.
fn tidy(text: &str) -> String {
    let text = text.trim();
    let Some((detail, what)) = text.rsplit_once("\nerror: ") else {
        return text.to_owned();
    };
    format!("{}\n{}", what.trim(), detail.trim_end())
}

/// `deny` as messages: undefined is none; a set or array of strings.
fn deny_messages(value: &regorus::Value) -> Result<Vec<String>, String> {
    let items: Vec<&regorus::Value> = match value {
        regorus::Value::Undefined => return Ok(Vec::new()),
        regorus::Value::Set(s) => s.iter_sorted().collect(),
        regorus::Value::Array(a) => a.iter().collect(),
        other => return Err(format!("{DENY} is not a set of messages: {other}")),
    };
    Ok(items
        .into_iter()
        .take(MAX_MESSAGES)
        .map(|v| {
            let text = match v {
                regorus::Value::String(s) => s.to_string(),
                other => other.to_string(),
            };
            text.chars().take(MAX_MESSAGE).collect()
        })
        .collect())
}

#[cfg(test)]
mod tests;
