//! Integers as JSON Schema sees them: `3.0` is the integer 3. serde refuses floats
//! for integer fields; these deserializers accept any JSON number with no fraction
//! that fits the target type, and nothing else.

use serde::Deserializer;
use serde::de::{Error, Visitor};

struct Whole;

impl Visitor<'_> for Whole {
    type Value = u64;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a non-negative integer")
    }
    fn visit_u64<E: Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }
    fn visit_i64<E: Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format!("expected a non-negative integer, got {v}")))
    }
    fn visit_f64<E: Error>(self, v: f64) -> Result<u64, E> {
        if v.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::custom(format!(
                "expected a non-negative integer, got {v}"
            )))
        }
    }
}

fn whole<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    let v = d.deserialize_any(Whole)?;
    T::try_from(v).map_err(|_| D::Error::custom(format!("{v} is out of range")))
}

struct Opt<T>(std::marker::PhantomData<T>);

impl<'de, T: TryFrom<u64>> Visitor<'de> for Opt<T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a non-negative integer or null")
    }
    fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        whole(d).map(Some)
    }
}

/// A `u32` given as any whole JSON number.
pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    whole(d)
}

/// A `u64` given as any whole JSON number.
pub fn u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    whole(d)
}

/// A `u64` of at most 2^63 - 1 (JSON Schema's `int64`), given as any whole number.
pub fn u63<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v: u64 = whole(d)?;
    if v > i64::MAX as u64 {
        return Err(D::Error::custom(format!("{v} is above 2^63 - 1")));
    }
    Ok(v)
}

/// An optional `u32` given as any whole JSON number or null.
pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    d.deserialize_option(Opt(std::marker::PhantomData))
}

/// An optional `u64` given as any whole JSON number or null.
pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    d.deserialize_option(Opt(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct T {
        #[serde(deserialize_with = "super::u32")]
        a: u32,
        #[serde(default, deserialize_with = "super::opt_u64")]
        b: Option<u64>,
    }

    #[test]
    fn whole_floats_pass_and_fractions_fail() {
        let t: T = serde_json::from_str(r#"{"a":3.0,"b":16152.0}"#).unwrap();
        assert_eq!((t.a, t.b), (3, Some(16152)));
        let t: T = serde_json::from_str(r#"{"a":3,"b":null}"#).unwrap();
        assert_eq!((t.a, t.b), (3, None));
        for bad in [
            r#"{"a":3.5}"#,
            r#"{"a":-1}"#,
            r#"{"a":"3"}"#,
            r#"{"a":4294967296}"#,
            r#"{"a":1,"b":-2}"#,
        ] {
            assert!(serde_json::from_str::<T>(bad).is_err(), "{bad}");
        }
    }
}
