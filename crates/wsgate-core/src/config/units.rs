//! Parsers for the unit-bearing scalars of the YAML file: durations (`500ms`, `30s`, `5m`,
//! `24h`, also combined as `1h30m`) and sizes (`512B`, `64KiB`, `1MiB`). Bare numbers are
//! refused for both, because a unit-less `timeout: 30` is exactly the ambiguity we avoid.

use std::time::Duration;

/// The longest duration anything accepts: ten years. Every duration is added to a clock
/// somewhere (a deadline, a revocation's end); this keeps each such sum far from overflowing.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Parses `500ms`, `30s`, `5m`, `24h` or a sequence such as `1h30m`; `us` (microseconds) for
/// the few settings that small. At most [`MAX_DURATION`].
pub fn duration(text: &str) -> Result<Duration, String> {
    let expected = "expected a duration with a unit, such as 500ms, 30s, 5m or 24h";
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(expected.to_owned());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(expected.to_owned());
        }
        let value: u64 = rest[..digits].parse().map_err(|_| expected.to_owned())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let part = match &rest[..unit_len] {
            "us" => Duration::from_micros(value),
            "ms" => Duration::from_millis(value),
            "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => return Err(expected.to_owned()),
        };
        rest = &rest[unit_len..];
        total = total
            .checked_add(part)
            .filter(|total| *total <= MAX_DURATION)
            .ok_or(TOO_LONG)?;
    }
    Ok(total)
}

const TOO_LONG: &str = "duration is too large (at most 87600h, ten years)";

/// Parses `512B`, `64KiB`, `1MiB`, `1GiB` (also `KB`/`MB`/`GB` as powers of 1000).
pub fn size(text: &str) -> Result<u64, String> {
    let expected = "expected a size with a unit, such as 512B, 64KiB or 1MiB";
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(expected.to_owned());
    }
    let value: u64 = text[..digits].parse().map_err(|_| expected.to_owned())?;
    let factor: u64 = match text[digits..].trim_start() {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(expected.to_owned()),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| "size is too large".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(duration("50us"), Ok(Duration::from_micros(50)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        assert_eq!(duration("87600h"), Ok(MAX_DURATION));
        assert_eq!(duration("87600h1s"), Err(TOO_LONG.to_owned()));
        assert_eq!(duration("18446744073709551615s"), Err(TOO_LONG.to_owned()));
        assert_eq!(duration("5124095576030431h"), Err(TOO_LONG.to_owned()));
        for bad in [
            "",
            "30",
            "s",
            "5 min",
            "-5s",
            "1.5s",
            "5sec",
            "99999999999999999999s",
        ] {
            assert!(duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size("512B"), Ok(512));
        assert_eq!(size("64KiB"), Ok(65_536));
        assert_eq!(size("1MiB"), Ok(1_048_576));
        assert_eq!(size("2 GiB"), Ok(2 << 30));
        assert_eq!(size("10KB"), Ok(10_000));
        for bad in [
            "",
            "1024",
            "MiB",
            "1.5MiB",
            "1mib",
            "-1KiB",
            "99999999999999GiB",
        ] {
            assert!(size(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
