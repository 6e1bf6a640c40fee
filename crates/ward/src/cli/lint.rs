//! `ward cert lint`: run Ward's certificate lint rules on a file, and the
//! policy loading that `ward check` shares.
//!
//! The rules live in `ward_pki::lint`; this file reads files (certificates,
//! the TOML policy and the Rego file it names) and renders findings.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;
use time::OffsetDateTime;
use ward_pki::lint::{
    CertReport, Context, Facts, Finding, LintPolicy, Linter, RegoInput, RegoPolicy, Role, Severity,
    Summary,
};
use ward_pki::pem;

use super::{Format, Outcome};

/// How the first certificate of a file is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum RoleArg {
    /// A leaf, unless it is a CA certificate (cA true with keyCertSign).
    #[default]
    Auto,
    /// Always a leaf (finds CA certificates used as end entities).
    Leaf,
    /// A CA certificate.
    Ca,
}

#[derive(Debug, Args)]
pub(crate) struct LintArgs {
    /// PEM or DER file: a certificate, optionally followed by its issuers.
    cert: PathBuf,
    /// Lint policy (TOML; see docs/lint-rules.md). Default: built-in defaults.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Exit 1 when a finding is at least this severe.
    #[arg(long, default_value = "error", value_parser = severity_arg)]
    fail_on: Severity,
    /// How to treat the first certificate.
    #[arg(long, value_enum, default_value_t)]
    role: RoleArg,
    /// Print the Rego input document of each certificate instead of linting.
    #[arg(long)]
    rego_input: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// Parses a severity for clap.
pub(crate) fn severity_arg(s: &str) -> Result<Severity, String> {
    s.parse().map_err(|e: ward_pki::Error| e.to_string())
}

/// Loads the policy file (and the Rego file it names, relative to it).
pub(crate) fn load_linter(path: Option<&Path>) -> anyhow::Result<Linter> {
    let Some(path) = path else {
        return Ok(Linter::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading lint policy {}", path.display()))?;
    let policy = LintPolicy::from_toml(&text).with_context(|| format!("in {}", path.display()))?;
    let rego = match &policy.rego {
        None => None,
        Some(rel) => {
            let rego_path = path.parent().unwrap_or(Path::new(".")).join(rel);
            let source = std::fs::read_to_string(&rego_path)
                .with_context(|| format!("reading Rego policy {}", rego_path.display()))?;
            Some(RegoPolicy::compile(
                &rego_path.display().to_string(),
                &source,
            )?)
        }
    };
    Ok(Linter::new(policy, rego))
}

/// One finding as a text line.
pub(crate) fn finding_line(f: &Finding) -> String {
    format!(
        "    {:<8}{}: {}\n",
        f.severity.as_str().to_uppercase(),
        f.id,
        f.message
    )
}

#[derive(Debug, Serialize)]
struct LintReport {
    source: String,
    passed: bool,
    fail_on: Severity,
    summary: Summary,
    certificates: Vec<CertReport>,
}

pub(crate) fn run(args: LintArgs) -> anyhow::Result<Outcome> {
    let bytes =
        std::fs::read(&args.cert).with_context(|| format!("reading {}", args.cert.display()))?;
    let chain =
        pem::parse_certs_any(&bytes).with_context(|| format!("reading {}", args.cert.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", args.cert.display());
    }
    let linter = load_linter(args.policy.as_deref())?;
    let now = OffsetDateTime::now_utc();
    let first = Facts::from_der(&chain[0]).ok();
    let first_is_ca = match args.role {
        RoleArg::Leaf => false,
        RoleArg::Ca => true,
        RoleArg::Auto => first
            .as_ref()
            .is_some_and(|f| f.is_ca && f.has_key_usage("keyCertSign")),
    };
    let mut certificates = linter.lint_chain(&chain, now);
    if first_is_ca {
        // Re-lint the first certificate as a CA.
        let role = match &first {
            Some(f) if f.self_issued => Role::Root,
            _ => Role::Intermediate,
        };
        let issuer = match role {
            Role::Root => Some(chain[0].as_ref()),
            _ => chain.get(1).map(|c| c.as_ref()),
        };
        certificates[0].role = role;
        certificates[0].findings = linter.lint(&chain[0], &Context { role, issuer, now });
    }

    if args.rego_input {
        let inputs = chain
            .iter()
            .zip(&certificates)
            .map(|(der, report)| {
                let facts = Facts::from_der(der)
                    .map_err(|e| anyhow::anyhow!("certificate {}: {e}", report.index))?;
                Ok(RegoInput::new(facts, report.role, now))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        outln!("{}", serde_json::to_string_pretty(&inputs)?);
        return Ok(Outcome::Success);
    }

    let summary = Summary::of(
        certificates
            .iter()
            .flat_map(|c| &c.findings)
            .map(|f| f.severity),
    );
    let passed = !certificates
        .iter()
        .flat_map(|c| &c.findings)
        .any(|f| f.severity >= args.fail_on);
    let report = LintReport {
        source: args.cert.display().to_string(),
        passed,
        fail_on: args.fail_on,
        summary,
        certificates,
    };
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => out!("{}", render(&report)),
    }
    Ok(if passed {
        Outcome::Success
    } else {
        Outcome::Problem
    })
}

fn render(report: &LintReport) -> String {
    let mut out = String::new();
    for c in &report.certificates {
        let subject = if c.subject.is_empty() {
            "(empty subject)"
        } else {
            &c.subject
        };
        out.push_str(&format!(
            "Certificate {} ({}): {subject}\n",
            c.index,
            c.role.as_str()
        ));
        if c.findings.is_empty() {
            out.push_str("    no findings\n");
        }
        for f in &c.findings {
            out.push_str(&finding_line(f));
        }
    }
    out.push_str(&report.summary.verdict_line(report.passed, report.fail_on));
    out
}
