//! Times on the wire are RFC 3339 UTC strings with whole seconds (`2026-11-25T17:46:03Z`).
//! Whole seconds keep the type `Copy`, cheap and identical on native and wasm.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A point in time, as Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time from the OS clock. Not on wasm: the browser derives its clock from
    /// the server's `server_time` so SSR and hydration render the same text.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn now() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Timestamp(secs)
    }

    pub fn secs(self) -> i64 {
        self.0
    }

    /// RFC 3339 has four-digit years: 0000-01-01T00:00:00Z ..= 9999-12-31T23:59:59Z.
    pub const MIN: Timestamp = Timestamp(-62_167_219_200);
    pub const MAX: Timestamp = Timestamp(253_402_300_799);

    /// RFC 3339 (`T`, `t` or a space between date and time, any fraction of a second,
    /// `Z` or an offset), to whole UTC seconds. Hand-written rather than chrono's, which
    /// weighs more in the browser's wasm than everything else here (P5 in docs/BENCHMARKS.md: ≤ 300 kB brotli); tests
    /// and a fuzz target hold it to chrono's `parse_from_rfc3339`.
    pub fn parse(s: &str) -> Result<Self, TimeError> {
        let b = s.as_bytes();
        let num = |range: std::ops::Range<usize>| -> Result<i64, TimeError> {
            let digits = b.get(range).ok_or(TimeError)?;
            digits.iter().try_fold(0i64, |n, &c| {
                c.is_ascii_digit()
                    .then(|| n * 10 + i64::from(c - b'0'))
                    .ok_or(TimeError)
            })
        };
        let at = |i: usize, allowed: &[u8]| match b.get(i) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(TimeError),
        };
        let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
        at(4, b"-")?;
        at(7, b"-")?;
        at(10, b"Tt ")?;
        let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
        at(13, b":")?;
        at(16, b":")?;
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            // 60: a leap second, which counts as the second before it (as chrono does).
            || second > 60
        {
            return Err(TimeError);
        }
        let mut i = 19;
        if b.get(i) == Some(&b'.') {
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return Err(TimeError);
            }
            i += 1 + digits;
        }
        let offset = match b.get(i) {
            Some(b'Z' | b'z') if b.len() == i + 1 => 0,
            Some(sign @ (b'+' | b'-')) if b.len() == i + 6 => {
                at(i + 3, b":")?;
                let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
                if oh > 23 || om > 59 {
                    return Err(TimeError);
                }
                let offset = oh * 3600 + om * 60;
                if *sign == b'-' {
                    -offset
                } else {
                    offset
                }
            }
            _ => return Err(TimeError),
        };
        let local =
            days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second.min(59);
        let t = Timestamp(local - offset);
        // Found by fuzzing: a UTC offset can carry 9999-12-31T23:00:00-05:00 past year
        // 9999, which then cannot be written back as RFC 3339.
        if (Self::MIN..=Self::MAX).contains(&t) {
            Ok(t)
        } else {
            Err(TimeError)
        }
    }

    /// `HH:MM:SS` in UTC, for log lines.
    pub fn clock(self) -> String {
        let secs = self.0.clamp(Self::MIN.0, Self::MAX.0).rem_euclid(86_400);
        format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse: (year, month, day) of a day count from 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A time that is not an RFC 3339 UTC time with a four-digit year.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeError;

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected an RFC 3339 time between years 0000 and 9999")
    }
}

impl std::error::Error for TimeError {}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.clamp(Self::MIN.0, Self::MAX.0);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let s = secs.rem_euclid(86_400);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
            s / 3600,
            s / 60 % 60,
            s % 60
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// On the wire a time is a string (see `Serialize` above), so that is its schema.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some(
                "RFC 3339 UTC with whole seconds, e.g. 2026-11-25T17:46:03Z",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Timestamp {}

/// "5s", "3m", "2h", "4d": the seed's relative age, one home for it.
pub fn format_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_contract_example() {
        let t: Timestamp = serde_json::from_str("\"2026-11-25T17:46:03Z\"").unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-11-25T17:46:03Z\""
        );
    }

    #[test]
    fn accepts_offsets_and_fractions_as_utc() {
        let t = Timestamp::parse("2026-11-25T18:46:03.250+01:00").unwrap();
        assert_eq!(t.to_string(), "2026-11-25T17:46:03Z");
        assert_eq!(t.clock(), "17:46:03");
    }

    #[test]
    fn years_stay_four_digits() {
        // Regression (fuzz/crashes/host_ids_and_times-year-10000): an offset pushing the
        // instant past 9999 used to parse, then printed as "+10000-…", which does not parse.
        assert!(Timestamp::parse("9999-12-31T23:00:00-05:00").is_err());
        assert!(Timestamp::parse("0000-01-01T00:00:00+01:00").is_err());
        assert_eq!(Timestamp::MAX.to_string(), "9999-12-31T23:59:59Z");
        assert_eq!(
            Timestamp::parse(&Timestamp::MAX.to_string()),
            Ok(Timestamp::MAX)
        );
        assert_eq!(Timestamp(i64::MAX).to_string(), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn rejects_garbage() {
        assert!(serde_json::from_str::<Timestamp>("\"yesterday\"").is_err());
        assert!(serde_json::from_str::<Timestamp>("12").is_err());
    }

    /// chrono's reading of the same text, in the same range (the reference).
    fn chrono_parse(s: &str) -> Result<Timestamp, TimeError> {
        let t = chrono::DateTime::parse_from_rfc3339(s).map_err(|_| TimeError)?;
        Some(Timestamp(t.timestamp()))
            .filter(|t| (Timestamp::MIN..=Timestamp::MAX).contains(t))
            .ok_or(TimeError)
    }

    #[test]
    fn parses_as_chrono_does() {
        let cases = [
            "2026-11-25T17:46:03Z",
            "2026-11-25t17:46:03z",
            "2026-11-25 17:46:03Z",
            "2026-11-25T17:46:03.123456789+05:30",
            "2026-11-25T17:46:03.+05:30",
            "2024-02-29T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-12-31T23:59:60Z",
            "2026-13-01T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-11-25T24:00:00Z",
            "2026-11-25T17:60:00Z",
            "2026-11-25T17:46:03+24:00",
            "2026-11-25T17:46:03+23:59",
            "2026-11-25T17:46:03-00:60",
            "2026-11-25T17:46:03",
            "2026-11-25T17:46:03Zx",
            "2026-11-25T17:46:03+0530",
            "+2026-11-25T17:46:03Z",
            "0000-01-01T00:00:00Z",
            "0000-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:59:59-00:01",
            "1969-12-31T23:59:59Z",
            "1900-03-01T00:00:00Z",
            "2000-02-29T12:00:00Z",
            "2026-1-25T17:46:03Z",
            "",
            "yesterday",
        ];
        for case in cases {
            assert_eq!(Timestamp::parse(case), chrono_parse(case), "{case:?}");
        }
    }

    #[test]
    fn writes_as_chrono_does() {
        // Every day of 400 years' cycle (and then some) around the epoch, and the edges.
        let days =
            (-200 * 366..=200 * 366).chain([Timestamp::MIN.0 / 86_400, Timestamp::MAX.0 / 86_400]);
        for d in days {
            for secs in [d * 86_400, d * 86_400 + 45_296] {
                let t = Timestamp(secs.clamp(Timestamp::MIN.0, Timestamp::MAX.0));
                let reference = chrono::DateTime::<chrono::Utc>::from_timestamp(t.0, 0)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                assert_eq!(t.to_string(), reference);
                assert_eq!(Timestamp::parse(&reference), Ok(t));
                assert_eq!(t.clock(), reference[11..19]);
            }
        }
    }

    #[test]
    fn ages() {
        assert_eq!(format_age(-3), "0s");
        assert_eq!(format_age(59), "59s");
        assert_eq!(format_age(60), "1m");
        assert_eq!(format_age(7200), "2h");
        assert_eq!(format_age(200_000), "2d");
    }
}
