//! The process's tracing subscriber: human-readable text or JSON lines on
//! stderr, filtered by `RUST_LOG` or, when it is unset, the caller's default.
//!
//! Only the binary's `main` should call this, once; libraries only emit
//! events. It returns an error instead of panicking when a subscriber is
//! already installed (e.g. by a test harness).

use std::env::VarError;
use std::fmt;
use std::io::IsTerminal;
use std::str::FromStr;

use tracing_subscriber::EnvFilter;

use crate::Error;

/// How log lines are formatted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable text (ANSI colours when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, event fields at the top level.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown log format {other:?} (expected text or json)"
            )),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// Installs the global subscriber writing to stderr. `RUST_LOG`, when set
/// and not empty, replaces `default_filter` (e.g. `"info,ward=debug"`).
pub fn init_tracing(format: LogFormat, default_filter: &str) -> Result<(), Error> {
    let filter = filter(std::env::var("RUST_LOG"), default_filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Lines bounded in length and rate: peers drive much of what is
        // logged (see `crate::bounded`).
        .with_writer(crate::bounded::Bounded::with_rate(
            std::io::stderr,
            crate::bounded::rate_from_env(),
        ));
    let result = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .try_init(),
    };
    result.map_err(|source| Error::TracingInit { source })
}

/// The filter from `RUST_LOG` (as read from the environment) or the default.
fn filter(rust_log: Result<String, VarError>, default_filter: &str) -> Result<EnvFilter, Error> {
    let (text, origin) = match rust_log {
        Ok(value) if !value.trim().is_empty() => (value, "RUST_LOG"),
        Ok(_) | Err(VarError::NotPresent) => (default_filter.to_owned(), "default"),
        Err(VarError::NotUnicode(_)) => return Err(Error::LogFilterNotUnicode),
    };
    EnvFilter::try_new(&text).map_err(|source| Error::LogFilter {
        filter: text.clone(),
        origin,
        source: Box::new(source),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_round_trips() {
        for format in [LogFormat::Text, LogFormat::Json] {
            assert_eq!(format.to_string().parse::<LogFormat>(), Ok(format));
        }
        assert!("yaml".parse::<LogFormat>().is_err());
    }

    #[test]
    fn rust_log_overrides_default() {
        let f = filter(Ok("debug".into()), "info").unwrap();
        assert_eq!(f.to_string(), "debug");
        let f = filter(Err(VarError::NotPresent), "info,ward=debug").unwrap();
        assert_eq!(f.to_string(), "ward=debug,info");
        let f = filter(Ok("  ".into()), "warn").unwrap();
        assert_eq!(f.to_string(), "warn");
    }

    #[test]
    fn bad_filters_are_errors_not_panics() {
        let err = filter(Ok("ward=loud".into()), "info").unwrap_err();
        assert!(
            matches!(
                err,
                Error::LogFilter {
                    origin: "RUST_LOG",
                    ..
                }
            ),
            "{err}"
        );
        let err = filter(Err(VarError::NotPresent), "ward=loud").unwrap_err();
        assert!(
            matches!(
                err,
                Error::LogFilter {
                    origin: "default",
                    ..
                }
            ),
            "{err}"
        );
        let err = filter(Err(VarError::NotUnicode("\u{fffd}".into())), "info").unwrap_err();
        assert!(matches!(err, Error::LogFilterNotUnicode));
    }
}
