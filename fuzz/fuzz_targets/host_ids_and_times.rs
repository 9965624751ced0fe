//! Small validators and the time type.
//!
//! Properties:
//! - `is_valid_host_id` agrees with an independent, regex-free reading of the contract's
//!   `[a-z0-9][a-z0-9._-]{0,62}` (whole string; 1 to 63 characters);
//! - `is_valid_theme_color` agrees with a reading of `#rrggbb`;
//! - `Timestamp::parse` never panics and accepts exactly what chrono's RFC 3339 parser
//!   accepts (within years 0000-9999), giving the same instant; a parsed timestamp's Display (what goes on the wire)
//!   parses back to the same timestamp, as does its JSON form; `clock()` is `HH:MM:SS`;
//! - the same for a well-formed time built from the first 9 bytes (any year 0000-9999, any
//!   offset), which `Timestamp::parse` must accept unless its UTC year leaves 0000-9999.
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::{is_valid_host_id, is_valid_theme_color, Timestamp};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let s: &str = &text;

    assert_eq!(
        is_valid_host_id(s),
        reference_host_id(s),
        "is_valid_host_id disagrees with the contract for {s:?}"
    );
    // Also every line on its own, so short ids are tried often.
    for part in s.split('\n') {
        assert_eq!(is_valid_host_id(part), reference_host_id(part), "host id {part:?}");
        assert_eq!(is_valid_theme_color(part), reference_color(part), "colour {part:?}");
        check_time(part);
    }
    check_time(s);

    // Also a well-formed RFC 3339 time built from the first bytes, so every year 0000-9999
    // and every offset is reached quickly, not only what mutation makes of the seeds.
    if let Some((year, built)) = time_from_bytes(data) {
        // Years 0000 and 9999 with an offset may leave the four-digit range in UTC; a parser
        // may reject those. Everything in between must be accepted.
        if (1..=9998).contains(&year) {
            assert!(Timestamp::parse(&built).is_ok(), "a well-formed time was rejected: {built:?}");
        }
        check_time(&built);
    }
});

fn time_from_bytes(d: &[u8]) -> Option<(u16, String)> {
    let b: [u8; 9] = d.get(..9)?.try_into().ok()?;
    let (year, month, day) = if b[2] >= 0xf0 {
        // One input in sixteen sits on the first or last day RFC 3339 can write.
        if b[0] & 1 == 0 {
            (0, 1, 1)
        } else {
            (9999, 12, 31)
        }
    } else {
        (u16::from_le_bytes([b[0], b[1]]) % 10_000, b[2] % 12 + 1, b[3] % 28 + 1)
    };
    let (hour, min, sec) = (b[4] % 24, b[5] % 60, b[6] % 60);
    let offset = i16::from_le_bytes([b[7], b[8]]) % (24 * 60); // -23:59 ..= +23:59
    let zone = if offset == 0 {
        "Z".to_string()
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let o = offset.unsigned_abs();
        format!("{sign}{:02}:{:02}", o / 60, o % 60)
    };
    Some((year, format!("{year:04}-{month:02}-{day:02}T{hour:02}:{min:02}:{sec:02}{zone}")))
}

/// `[a-z0-9][a-z0-9._-]{0,62}`, anchored, counted in characters (a regex counts characters,
/// not bytes; any non-ASCII character fails the class anyway).
fn reference_host_id(s: &str) -> bool {
    let mut count = 0usize;
    for (i, c) in s.chars().enumerate() {
        let ok = if i == 0 {
            c.is_ascii_lowercase() || c.is_ascii_digit()
        } else {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '_' || c == '-'
        };
        if !ok {
            return false;
        }
        count += 1;
    }
    (1..=63).contains(&count)
}

fn reference_color(s: &str) -> bool {
    let mut chars = s.chars();
    if chars.next() != Some('#') {
        return false;
    }
    let rest: Vec<char> = chars.collect();
    rest.len() == 6 && rest.iter().all(|c| c.is_ascii_hexdigit())
}

fn check_time(s: &str) {
    let reference = chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| Timestamp(t.timestamp()))
        .filter(|t| (Timestamp::MIN..=Timestamp::MAX).contains(t));
    assert_eq!(Timestamp::parse(s).ok(), reference, "parse disagrees with chrono on {s:?}");
    let Ok(t) = Timestamp::parse(s) else {
        return;
    };
    let shown = t.to_string();
    match Timestamp::parse(&shown) {
        Ok(again) => assert_eq!(t, again, "Display of {s:?} is {shown:?}, which is another time"),
        Err(e) => panic!("Display of a parsed time does not re-parse: {s:?} -> {shown:?}: {e}"),
    }
    let json = serde_json::to_string(&t).unwrap();
    let back: Timestamp = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("JSON of a parsed time does not re-parse: {s:?} -> {json}: {e}"));
    assert_eq!(back, t);
    let clock = t.clock();
    assert!(clock.len() == 8 && clock.as_bytes()[2] == b':' && clock.as_bytes()[5] == b':', "clock {clock:?}");
}
