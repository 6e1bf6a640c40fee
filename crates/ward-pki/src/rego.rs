//! The one Rego evaluator (regorus) behind both kinds of Ward policy: lint
//! policies (`package ward.lint`, [`crate::lint`]) and the gate's
//! authorization policies (`package ward.gate`). Both get the same engine
//! settings and the same execution limit, set here.
//!
//! Pure: sources arrive as text and inputs as JSON; reading files and
//! deciding what a rule's value means are the callers' jobs.

use std::num::NonZeroU32;
use std::time::Duration;

/// Wall-clock budget of one evaluation; past it the evaluation fails
/// (and the callers fail closed: a denial, or a `rego.error` finding).
pub const EVAL_LIMIT: Duration = Duration::from_millis(100);

/// An error from the Rego engine, as its full text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RegoError(String);

impl RegoError {
    fn of(e: impl std::fmt::Display) -> Self {
        RegoError(format!("{e:#}"))
    }
}

/// A parsed policy, ready to evaluate; each evaluation works on a clone of
/// the prepared engine (cheap: reference-counted modules).
#[derive(Clone)]
pub struct Evaluator {
    engine: regorus::Engine,
    name: String,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Evaluator {
    /// Parses `source` (named `name` in messages, Rego v1 syntax); returns
    /// the evaluator and the package the source declares (`data.…`).
    pub fn compile(name: &str, source: &str) -> Result<(Self, String), RegoError> {
        let mut engine = regorus::Engine::new();
        // A failing builtin (division by zero, bad regex) is an error, not
        // an undefined rule that would silently pass.
        engine.set_strict_builtin_errors(true);
        engine.set_execution_timer_config(regorus::utils::limits::ExecutionTimerConfig {
            limit: EVAL_LIMIT,
            check_interval: NonZeroU32::MIN,
        });
        let package = engine
            .add_policy(name.to_owned(), source.to_owned())
            .map_err(RegoError::of)?;
        Ok((
            Evaluator {
                engine,
                name: name.to_owned(),
            },
            package,
        ))
    }

    /// The name the policy was compiled under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every package the policy declares (`data.…`).
    pub fn packages(&self) -> Result<Vec<String>, RegoError> {
        self.engine.get_packages().map_err(RegoError::of)
    }

    /// Whether the policy declares a rule named `rule` (at its package root).
    pub fn has_rule(&self, rule: &str) -> Result<bool, RegoError> {
        self.engine
            .has_declared_rule_rooted_at(&self.name, rule)
            .map_err(RegoError::of)
    }

    /// Analyses the modules for `entrypoint` (imports, functions,
    /// scheduling) now, so a broken policy fails at load time and
    /// evaluations start from a prepared engine.
    pub fn prepare(&mut self, entrypoint: &str) -> Result<(), RegoError> {
        self.engine
            .compile_with_entrypoint(&regorus::Rc::from(entrypoint))
            .map(|_| ())
            .map_err(RegoError::of)
    }

    /// A copy of the prepared engine with `input` set, to evaluate rules
    /// and queries on.
    pub fn with_input(&self, input: serde_json::Value) -> Bound {
        let mut engine = self.engine.clone();
        engine.set_input(regorus::Value::from(input));
        Bound { engine }
    }
}

/// A policy with its input set: one evaluation (of one or more rules).
pub struct Bound {
    engine: regorus::Engine,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound").finish_non_exhaustive()
    }
}

impl Bound {
    /// The value of the rule `rule` (a full path, `data.…`).
    pub fn rule(&mut self, rule: &str) -> Result<regorus::Value, RegoError> {
        self.engine
            .eval_rule(rule.to_owned())
            .map_err(RegoError::of)
    }

    /// The value of the query `query` (e.g. a package path) as JSON;
    /// `None` when the query is undefined.
    pub fn query(&mut self, query: &str) -> Result<Option<serde_json::Value>, RegoError> {
        let results = self
            .engine
            .eval_query(query.to_owned(), false)
            .map_err(RegoError::of)?;
        results
            .result
            .first()
            .and_then(|r| r.expressions.first())
            .map(|e| serde_json::to_value(&e.value).map_err(RegoError::of))
            .transpose()
    }
}
