//! The produce request body: one record, or `{"records": [...]}`.
//!
//! Values are kept as the producer's JSON text (`RawValue`), so the gateway stores
//! them without building a JSON tree per record.

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;
use utoipa::ToSchema;
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema};
use utoipa::openapi::{Ref, RefOr};

/// A record to produce. Give `value` (any JSON; `null` is a tombstone) or
/// `value_base64` (binary), not both. Its schema is [`ProduceRecordSchema`]: these
/// fields plus that rule.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ProduceRecordFields)]
pub struct ProduceRecord {
    /// Key: records with the same key go to the same partition (Kafka's murmur2).
    #[serde(default)]
    pub key: Option<String>,
    /// The JSON value; `null` deletes the key in projection tables.
    #[serde(default, deserialize_with = "some_raw")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub value: Option<Box<RawValue>>,
    /// A binary value, base64-encoded (standard alphabet, padded).
    #[serde(default, deserialize_with = "some_string")]
    #[schema(value_type = String, pattern = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$")]
    pub value_base64: Option<String>,
    /// String headers.
    #[serde(default)]
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    pub headers: Option<HeaderList>,
    /// Explicit partition; overrides key placement.
    #[serde(default, deserialize_with = "crate::num::opt_u32")]
    pub partition: Option<u32>,
    /// Milliseconds since the Unix epoch; default: append time.
    #[serde(default, deserialize_with = "crate::num::opt_u64")]
    pub timestamp: Option<u64>,
}

/// Present means a string: `null` is refused rather than read as absent.
fn some_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// `value: null` must arrive as `Some("null")`, not as a missing value.
fn some_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Headers in the order the producer wrote them; values must be strings.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HeaderList(pub Vec<(String, String)>);

impl Serialize for HeaderList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl<'de> Deserialize<'de> for HeaderList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of string header values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<HeaderList, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, String>()? {
                    v.push((k, val));
                }
                Ok(HeaderList(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// A produce body: either one record or a batch. Parsed in one pass, with the
/// batch's `records` and a single record's fields side by side.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceBody {
    /// The batch form.
    #[serde(default)]
    pub records: Option<Vec<MapOnly<ProduceRecord>>>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default, deserialize_with = "some_raw")]
    value: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "some_string")]
    value_base64: Option<String>,
    #[serde(default)]
    headers: Option<HeaderList>,
    #[serde(default, deserialize_with = "crate::num::opt_u32")]
    partition: Option<u32>,
    #[serde(default, deserialize_with = "crate::num::opt_u64")]
    timestamp: Option<u64>,
}

impl ProduceBody {
    /// The records of the body, or why the body mixes both forms.
    pub fn into_records(self) -> Result<Vec<ProduceRecord>, &'static str> {
        let single = ProduceRecord {
            key: self.key,
            value: self.value,
            value_base64: self.value_base64,
            headers: self.headers,
            partition: self.partition,
            timestamp: self.timestamp,
        };
        let has_single = single.key.is_some()
            || single.value.is_some()
            || single.value_base64.is_some()
            || single.headers.is_some()
            || single.partition.is_some()
            || single.timestamp.is_some();
        match self.records {
            Some(_) if has_single => {
                Err("a body has either `records` or the fields of one record, not both")
            }
            Some(r) => Ok(r.into_iter().map(|r| r.0).collect()),
            None => Ok(vec![single]),
        }
    }
}

/// `{"records": [...]}`: a batch of records, written atomically.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProduceBatch {
    /// Records in order.
    #[schema(value_type = Vec<ProduceRecordSchema>)]
    pub records: Vec<ProduceRecord>,
}

/// The schema of a record to produce: [`ProduceRecord`]'s fields, with exactly one
/// of `value` and `value_base64`.
pub struct ProduceRecordSchema;

impl utoipa::PartialSchema for ProduceRecordSchema {
    fn schema() -> RefOr<Schema> {
        let one_of = OneOfBuilder::new()
            .item(ObjectBuilder::new().required("value"))
            .item(ObjectBuilder::new().required("value_base64"));
        AllOfBuilder::new()
            .item(Ref::from_schema_name("ProduceRecordFields"))
            .item(one_of)
            .description(Some(
                "A record to produce: `value` (any JSON; `null` is a tombstone) or `value_base64` (binary), not both.",
            ))
            .examples([json!({"key": "c-42", "value": {"amount": 12.5}, "headers": {"source": "web"}})])
            .into()
    }
}

impl utoipa::ToSchema for ProduceRecordSchema {
    fn name() -> std::borrow::Cow<'static, str> {
        "ProduceRecord".into()
    }
    fn schemas(out: &mut Vec<(String, RefOr<Schema>)>) {
        out.push((
            "ProduceRecordFields".into(),
            <ProduceRecord as utoipa::PartialSchema>::schema(),
        ));
        <ProduceRecord as utoipa::ToSchema>::schemas(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_value_is_kept_apart_from_a_missing_one() {
        let b: ProduceBody = serde_json::from_str(r#"{"key":"k","value":null}"#).unwrap();
        let r = b.into_records().unwrap();
        assert_eq!(r[0].value.as_ref().map(|v| v.get()), Some("null"));
        let b: ProduceBody = serde_json::from_str(r#"{"key":"k"}"#).unwrap();
        assert!(b.into_records().unwrap()[0].value.is_none());
    }

    #[test]
    fn arrays_do_not_pass_for_records() {
        assert!(
            serde_json::from_str::<MapOnly<ProduceBody>>(r#"{"records":[[null,null]]}"#).is_err()
        );
        assert!(serde_json::from_str::<MapOnly<ProduceBody>>(r#"[null,"k",1]"#).is_err());
        let b =
            serde_json::from_str::<MapOnly<ProduceBody>>(r#"{"records":[{"value":{"a":[1]}}]}"#)
                .unwrap();
        assert_eq!(
            b.0.into_records().unwrap()[0].value.as_ref().unwrap().get(),
            r#"{"a":[1]}"#
        );
    }

    #[test]
    fn mixed_forms_are_refused() {
        let b: ProduceBody = serde_json::from_str(r#"{"records":[],"key":"k"}"#).unwrap();
        assert!(b.into_records().is_err());
    }

    #[test]
    fn headers_keep_order_and_refuse_non_strings() {
        let r: ProduceRecord =
            serde_json::from_str(r#"{"value":1,"headers":{"b":"2","a":"1"}}"#).unwrap();
        assert_eq!(
            r.headers.unwrap().0,
            vec![("b".into(), "2".into()), ("a".into(), "1".into())]
        );
        assert!(serde_json::from_str::<ProduceRecord>(r#"{"value":1,"headers":{"a":1}}"#).is_err());
    }
}

/// Deserializes `T` only from a JSON object. serde's derived structs also accept a
/// JSON array of field values in order, which no client means to send.
#[derive(Debug)]
pub struct MapOnly<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(MapOnly)
    }
}
