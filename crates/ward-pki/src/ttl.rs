//! Human durations: `90s`, `15m`, `1h`, `30d`, and sums like `1h30m`.

use std::time::Duration;

use crate::Error;

/// Parses a duration written as one or more `<number><unit>` parts, with
/// units `s`, `m`, `h`, `d` and `w`.
pub fn parse_duration(input: &str) -> Result<Duration, Error> {
    let invalid = |reason| Error::InvalidDuration {
        input: input.to_owned(),
        reason,
    };
    let mut rest = input.trim();
    if rest.is_empty() {
        return Err(invalid("empty"));
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid("expected a number followed by s, m, h, d or w"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| invalid("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let scale = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 7 * 86_400,
            "" => return Err(invalid("missing unit (s, m, h, d or w)")),
            _ => return Err(invalid("unknown unit (expected s, m, h, d or w)")),
        };
        rest = &rest[unit_len..];
        total = value
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| invalid("duration too large"))?;
    }
    if total == 0 {
        return Err(invalid("must be longer than zero"));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        for (input, secs) in [
            ("90s", 90),
            ("15m", 900),
            ("1h", 3600),
            ("30d", 2_592_000),
            ("2w", 1_209_600),
            ("1h30m", 5400),
        ] {
            assert_eq!(parse_duration(input).unwrap(), Duration::from_secs(secs));
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "1",
            "h",
            "1x",
            "-1h",
            "0s",
            "1.5h",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
