//! Time as the core sees it: a plain number of milliseconds since the Unix epoch.
//!
//! The core never reads a clock. Drivers pass `now` into every call, which is what makes the
//! simulator deterministic and the operator testable. On the wire a [`Timestamp`] is an RFC 3339
//! string in UTC, as Kubernetes writes `metav1.Time`.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    pub const ZERO: Timestamp = Timestamp(0);

    pub fn from_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    pub fn millis(self) -> u64 {
        self.0
    }

    pub fn plus_ms(self, ms: u64) -> Self {
        Timestamp(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, or 0 when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Parses an RFC 3339 time with any offset (`2026-01-02T03:04:05Z`,
    /// `2026-01-02T05:04:05.5+02:00`), as the instant it names; sub-millisecond digits are
    /// dropped, and times before 1970 are refused.
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        let bad = |why: String| {
            format!("`{s}` is not an RFC 3339 time such as 2026-01-02T03:04:05Z: {why}")
        };
        let t: jiff::Timestamp = s.parse().map_err(|e: jiff::Error| bad(e.to_string()))?;
        u64::try_from(t.as_millisecond())
            .map(Timestamp)
            .map_err(|_| bad("it is before 1970".into()))
    }
}

impl fmt::Display for Timestamp {
    /// UTC with `Z`, and milliseconds only when there are some, as Kubernetes writes times.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Past jiff's last instant (9999-12-31) a time prints as that instant.
        let ms = i64::try_from(self.0).unwrap_or(i64::MAX);
        let t = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::MAX);
        let format = if self.0.is_multiple_of(1000) {
            "%Y-%m-%dT%H:%M:%SZ"
        } else {
            "%Y-%m-%dT%H:%M:%S%.3fZ"
        };
        write!(f, "{}", t.strftime(format))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc3339_and_parse_back() {
        for ms in [
            0,
            1_000,
            951_782_400_000,
            1_798_761_599_999,
            4_102_444_800_123,
        ] {
            let t = Timestamp(ms);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Ok(t), "{t}");
        }
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(
            Timestamp(951_782_400_250).to_string(),
            "2000-02-29T00:00:00.250Z"
        );
    }

    #[test]
    fn malformed_times_are_rejected_with_an_example_of_the_format() {
        for s in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-01-01 00:00:00",
            "yesterday",
        ] {
            let err = Timestamp::parse_rfc3339(s).unwrap_err();
            assert!(err.contains("RFC 3339"), "{err}");
        }
        let err = Timestamp::parse_rfc3339("1969-12-31T23:59:59Z").unwrap_err();
        assert!(err.contains("before 1970"), "{err}");
    }

    #[test]
    fn a_time_with_any_offset_parses_as_the_instant_it_names() {
        let utc = Timestamp::parse_rfc3339("2026-01-02T03:04:05.250Z").unwrap();
        for s in [
            "2026-01-02T05:04:05.250+02:00",
            "2026-01-01T22:34:05.25-04:30",
            "2026-01-02T03:04:05.250999Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(s), Ok(utc), "{s}");
        }
        assert_eq!(utc.to_string(), "2026-01-02T03:04:05.250Z");
    }
}
