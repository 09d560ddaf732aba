//! Small value types of the config file: durations (`250ms`), sizes (`10MiB`),
//! rates (`50/s`) and ordering-key sources (`header:x-order-id`).

use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A duration written like `250ms`, `3s`, `5m`, `24h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d).map_err(|_| {
            de::Error::custom("expected a duration such as \"250ms\", \"3s\" or \"5m\"")
        })?;
        humantime::parse_duration(s.trim())
            .map(Dur)
            .map_err(|e| de::Error::custom(format!("invalid duration {s:?}: {e}")))
    }
}

impl From<Duration> for Dur {
    fn from(d: Duration) -> Self {
        Dur(d)
    }
}

/// A size in bytes written like `10MiB`, `512KiB`, `1GB` or a plain number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses `10MiB`, `1.5GB`, `512`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: expected e.g. 10MiB"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1_000,
            "kib" => 1 << 10,
            "m" | "mb" => 1_000_000,
            "mib" => 1 << 20,
            "g" | "gb" => 1_000_000_000,
            "gib" => 1 << 30,
            other => return Err(format!("invalid size unit {other:?} in {s:?}")),
        };
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d).map_err(|_| de::Error::custom("expected a size such as 10MiB"))? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(de::Error::custom),
        }
    }
}

/// A rate written like `50/s`, `600/m`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Events allowed per `per`.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)
            .map_err(|_| de::Error::custom("expected a rate such as \"50/s\""))?;
        let bad = || {
            de::Error::custom(format!(
                "invalid rate {s:?}: expected e.g. \"50/s\" or \"600/m\""
            ))
        };
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => humantime::parse_duration(other).map_err(|_| bad())?,
        };
        if count == 0 {
            return Err(bad());
        }
        Ok(Rate { count, per })
    }
}

/// Where a message's ordering key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A request header, e.g. `header:x-order-id`.
    Header(String),
    /// A JSON pointer into the body, e.g. `json:/orderId`.
    Json(String),
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.split_once(':') {
            Some(("header", h)) if !h.is_empty() => Ok(KeySource::Header(h.to_ascii_lowercase())),
            Some(("json", p)) if p.starts_with('/') => Ok(KeySource::Json(p.to_string())),
            _ => Err(de::Error::custom(format!(
                "invalid ordering key {s:?}: expected header:NAME or json:/pointer"
            ))),
        }
    }
}

/// One name or several (`secret_env: A` or `secret_env: [A, B]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        match Raw::deserialize(d)
            .map_err(|_| de::Error::custom("expected a name or a list of names"))?
        {
            Raw::One(s) => Ok(OneOrMany(vec![s])),
            Raw::Many(v) => Ok(OneOrMany(v)),
        }
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("10MiB").unwrap().0, 10 * 1024 * 1024);
        assert_eq!(ByteSize::parse("1kb").unwrap().0, 1000);
        assert_eq!(ByteSize::parse("42").unwrap().0, 42);
        assert!(ByteSize::parse("10 parsecs").is_err());
    }

    #[test]
    fn durations_rates_keys() {
        let d: Dur = serde_json::from_value(serde_json::json!("250ms")).unwrap();
        assert_eq!(d.0, Duration::from_millis(250));
        assert!(serde_json::from_value::<Dur>(serde_json::json!(5)).is_err());
        let r: Rate = serde_json::from_value(serde_json::json!("50/s")).unwrap();
        assert_eq!((r.count, r.per), (50, Duration::from_secs(1)));
        let k: KeySource = serde_json::from_value(serde_json::json!("json:/orderId")).unwrap();
        assert_eq!(k, KeySource::Json("/orderId".into()));
        assert!(serde_json::from_value::<KeySource>(serde_json::json!("body")).is_err());
    }
}
