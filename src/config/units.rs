//! Human units in the config: durations like `"1h30m"` and sizes like `"512MiB"`.
//!
//! Errors are complete sentences that name what was found and what is allowed, ready
//! to be shown next to a key path and line.

use std::time::Duration;

/// The examples every duration error shows.
const DURATION_LIKE: &str = r#"expected a duration like "500ms", "2s" or "1m""#;
/// The examples every size error shows.
const SIZE_LIKE: &str = r#"expected a size like "512B", "32KiB", "100MB" or "1GiB""#;

/// Duration units, longest first so that `ms` is tried before `m`.
const DURATION_UNITS: &[(&str, u128)] = &[
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Size units, compared without regard to case (`kib` = `KiB`).
const SIZE_UNITS: &[(&str, u128)] = &[
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Parses a duration: one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`,
/// `d`, numbers with an optional fraction (`"500ms"`, `"1h30m"`, `"1.5s"`).
///
/// A number without a unit is rejected with a message asking for one.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let fail = |why: &str| Err(format!("{DURATION_LIKE}, found {text:?}{why}"));
    if text.trim().is_empty() {
        return fail("");
    }
    if is_plain_number(text) {
        return Err(bare_number_duration(text));
    }
    let mut nanos: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (number, after) = split_number(rest);
        if number.is_empty() {
            return fail("");
        }
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        if unit.is_empty() {
            let why = if after.is_empty() {
                ": every number needs a unit (ms, s, m, h)"
            } else {
                ""
            };
            return fail(why);
        }
        let Some(&(_, scale)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
            return fail(&format!(": unknown unit {unit:?}; use ms, s, m, h or d"));
        };
        let Some(part) = scaled(number, scale) else {
            return fail(": too large");
        };
        nanos = match nanos.checked_add(part) {
            Some(n) => n,
            None => return fail(": too large"),
        };
        rest = after;
    }
    match u64::try_from(nanos) {
        Ok(n) => Ok(Duration::from_nanos(n)),
        Err(_) => fail(": too large"),
    }
}

/// The message for a duration written as a bare number (a TOML integer or float, or a
/// string of digits): it asks for a unit.
pub fn bare_number_duration(number: &str) -> String {
    format!(
        r#"{DURATION_LIKE}, found the bare number {number}: add a unit, e.g. "{number}s" or "{number}ms""#
    )
}

/// Parses a size in bytes: `"512B"`, `"32KiB"`, `"100MB"`, `"1GiB"`, or a bare number of
/// bytes (`"4096"`). Units are KB/MB/GB/TB (powers of 1000) and KiB/MiB/GiB/TiB (powers of
/// 1024), in any case; fractions (`"1.5GiB"`) round down to whole bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let fail = |why: &str| Err(format!("{SIZE_LIKE}, found {text:?}{why}"));
    let (number, unit) = split_number(text);
    if number.is_empty() {
        return fail("");
    }
    let scale = if unit.is_empty() {
        1
    } else {
        match SIZE_UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        {
            Some(&(_, scale)) => scale,
            None => {
                return fail(&format!(
                    ": unknown unit {unit:?}; use B, KB, MB, GB, KiB, MiB or GiB"
                ))
            }
        }
    };
    match scaled(number, scale).map(u64::try_from) {
        Some(Ok(bytes)) => Ok(bytes),
        _ => fail(": too large"),
    }
}

/// True for `"12"` or `"1.5"`: digits with at most one fraction.
fn is_plain_number(text: &str) -> bool {
    let (number, rest) = split_number(text);
    !number.is_empty() && rest.is_empty()
}

/// Splits a leading `digits[.digits]` off `text`. Returns `("", text)` when `text` does not
/// start with a digit or the fraction has no digits.
fn split_number(text: &str) -> (&str, &str) {
    let int_len = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if int_len == 0 {
        return ("", text);
    }
    let after_int = &text[int_len..];
    let Some(fraction) = after_int.strip_prefix('.') else {
        return text.split_at(int_len);
    };
    let frac_len = fraction
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(fraction.len());
    if frac_len == 0 {
        return ("", text);
    }
    text.split_at(int_len + 1 + frac_len)
}

/// `number * scale`, exact for the integer part, rounded down for the fraction.
/// `None` on overflow.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let int: u128 = int.parse().ok()?;
    let mut total = int.checked_mul(scale)?;
    // Digits past the 18th change the result by less than one nanosecond or byte; cut,
    // digits < 10^18 < 2^60 and scale < 2^47, so the product fits in u128.
    let frac = &frac[..frac.len().min(18)];
    if !frac.is_empty() {
        let digits: u128 = frac.parse().ok()?;
        let part = digits * scale / 10u128.pow(frac.len() as u32);
        total = total.checked_add(part)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(ms(500)));
        assert_eq!(parse_duration("2s"), Ok(ms(2_000)));
        assert_eq!(parse_duration("1m"), Ok(ms(60_000)));
        assert_eq!(parse_duration("1h"), Ok(ms(3_600_000)));
        assert_eq!(parse_duration("1d"), Ok(ms(86_400_000)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn durations_combine_and_take_fractions() {
        assert_eq!(parse_duration("1h30m"), Ok(ms(5_400_000)));
        assert_eq!(parse_duration("1m30s500ms"), Ok(ms(90_500)));
        assert_eq!(parse_duration("1.5s"), Ok(ms(1_500)));
        assert_eq!(parse_duration("0.25h"), Ok(ms(900_000)));
        assert_eq!(parse_duration("1.0000000001s"), Ok(Duration::new(1, 0)));
    }

    #[test]
    fn bare_numbers_ask_for_a_unit() {
        let err = parse_duration("5").unwrap_err();
        assert!(err.contains("add a unit"), "{err}");
        assert!(err.contains(r#""5s""#), "{err}");
        assert!(parse_duration("1.5").unwrap_err().contains("add a unit"));
        assert!(bare_number_duration("30").contains(r#""30s""#));
    }

    #[test]
    fn bad_durations_say_what_is_allowed() {
        let err = parse_duration("5 seconds").unwrap_err();
        assert_eq!(
            err,
            r#"expected a duration like "500ms", "2s" or "1m", found "5 seconds""#
        );
        let err = parse_duration("5sec").unwrap_err();
        assert!(err.contains(r#"unknown unit "sec""#), "{err}");
        let err = parse_duration("1h30").unwrap_err();
        assert!(err.contains("needs a unit"), "{err}");
        for bad in [
            "",
            "s",
            "-1s",
            "1.s",
            ".5s",
            "1h 30m",
            "99999999999999999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
    }

    #[test]
    fn sizes_in_binary_and_decimal_units() {
        assert_eq!(parse_size("32KiB"), Ok(32 * 1024));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("100KB"), Ok(100_000));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("2mib"), Ok(2 << 20));
    }

    #[test]
    fn bad_sizes_say_what_is_allowed() {
        let err = parse_size("12 parsecs").unwrap_err();
        assert!(err.starts_with("expected a size like"), "{err}");
        assert!(err.contains(r#"found "12 parsecs""#), "{err}");
        let err = parse_size("5XB").unwrap_err();
        assert!(err.contains(r#"unknown unit "XB""#), "{err}");
        for bad in ["", "MiB", "-1KiB", "99999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should fail");
        }
    }
}
