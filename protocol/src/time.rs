//! Times on the wire are RFC 3339 UTC strings with whole seconds (`2026-11-25T17:46:03Z`).
//! Whole seconds keep the type `Copy`, cheap and identical on native and wasm.

use chrono::{DateTime, SecondsFormat, Utc};
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

    pub fn parse(s: &str) -> Result<Self, TimeError> {
        let t = DateTime::parse_from_rfc3339(s).map_err(|_| TimeError)?;
        let t = Timestamp(t.timestamp());
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
        let t = DateTime::<Utc>::from_timestamp(self.0, 0).unwrap_or_default();
        t.format("%H:%M:%S").to_string()
    }
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
        let t = DateTime::<Utc>::from_timestamp(secs, 0).unwrap_or_default();
        f.write_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
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

    #[test]
    fn ages() {
        assert_eq!(format_age(-3), "0s");
        assert_eq!(format_age(59), "59s");
        assert_eq!(format_age(60), "1m");
        assert_eq!(format_age(7200), "2h");
        assert_eq!(format_age(200_000), "2d");
    }
}
