//! Stream definitions: a stream derived from a topic, record by record, with
//! the tables' expression engine (filter, projection with renames, literals,
//! arithmetic and nested output fields, re-key).
//!
//! ```sql
//! CREATE STREAM big_orders AS
//!   SELECT id, customer_id, amount * 100 AS cents FROM orders
//!   WHERE amount > 1000 PARTITION BY customer_id
//! ```
//!
//! or the same in JSON: `{"name": "big_orders", "source": "orders", "select":
//! {"id": "id", "customer_id": "customer_id", "cents": "amount * 100"}, "filter":
//! "amount > 1000", "key": "customer_id"}`. A `select` of `*` keeps the whole value
//! (and adds the other columns to it); an output name with dots (`"customer.id"`)
//! builds nested objects. Tombstones pass through with their key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlparser::ast::SelectItem;

use crate::Error;
use crate::def::{AsSelect, SqlJoin, parse_create_as_select};
use crate::expr::{Filter, Scalar, key_string};

/// A derived stream, as defined.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDef {
    /// The stream's name: the topic it writes.
    pub name: String,
    /// The topic it reads.
    pub source: String,
    /// Output field to SQL expression; `"*"` as a field keeps the whole input
    /// value. Absent: the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<BTreeMap<String, String>>,
    /// Records the SQL boolean expression holds for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The output key, a SQL expression (`PARTITION BY`); absent: the input key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Partitions of the output topic; absent: as many as the source has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u32>,
    /// What a record the stream cannot derive (a value that is not JSON) does.
    #[serde(default, skip_serializing_if = "OnError::is_default")]
    pub on_error: OnError,
    /// A table each record is joined with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<Join>,
}

/// A stream–table join: each record looks up one row of the table, by key,
/// in the table's committed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Join {
    /// The table.
    pub table: String,
    /// The name the row goes by in expressions (`c.name`); the table's name
    /// by default.
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The name the stream's record goes by (`o.id`, the same as `id`); the
    /// source topic's name by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_as: Option<String>,
    /// A SQL expression over the stream's record: the key of the row to join.
    pub on: String,
    /// The table's column `on` is compared with, as written (`c.id`), when
    /// the definition came from SQL: it must be what keys the table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_column: Option<String>,
    /// `left` (default: a record without a row is joined with null) or `inner`
    /// (it is passed over).
    #[serde(default, rename = "type")]
    pub kind: JoinKind,
    /// Before joining a batch, wait up to this long until the table has
    /// applied everything its source held once the batch was read, so a row
    /// written before the stream record is found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// Which records a join keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinKind {
    /// Every record; the row is null when there is none.
    #[default]
    Left,
    /// Records that have a row.
    Inner,
}

/// The longest wait a join may ask for.
pub const MAX_JOIN_WAIT_MS: u64 = 60_000;

impl Join {
    /// The name the row goes by.
    pub fn row_alias(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.table)
    }
}

/// What happens to an input record a stream cannot derive an output from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// It goes to the stream's dead-letter topic, `<name>.dead-letters`, with
    /// the reason in the header `sluice-error`.
    #[default]
    DeadLetter,
    /// It is passed over and counted.
    Skip,
    /// The stream stops (failed) before it.
    Stop,
}

impl OnError {
    fn is_default(&self) -> bool {
        *self == OnError::DeadLetter
    }
}

/// A record a stream writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Derived {
    pub key: Option<String>,
    /// `None`: a tombstone.
    pub value: Option<Value>,
}

/// A checked stream definition, ready to apply.
#[derive(Debug, Clone)]
pub struct CompiledStream {
    pub def: StreamDef,
    /// The join's key expression.
    join_on: Option<Scalar>,
    filter: Option<Filter>,
    /// Keep the whole input value, then set the columns.
    all: bool,
    columns: Vec<(Vec<String>, Scalar)>,
    key: Option<Scalar>,
}

fn bad(m: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("SQL: {m}"))
}

impl StreamDef {
    /// Checks the definition and compiles its expressions.
    pub fn compile(&self) -> Result<CompiledStream, Error> {
        for (what, name) in [("stream", &self.name), ("source", &self.source)] {
            if !sluice_log::valid_name(name) {
                return Err(Error::Invalid(format!(
                    "{what} names are 1 to 249 characters of [A-Za-z0-9._-]"
                )));
            }
        }
        if self.name == self.source {
            return Err(Error::Invalid("a stream cannot read its own output".into()));
        }
        if self
            .partitions
            .is_some_and(|n| !(1..=sluice_log::MAX_PARTITIONS).contains(&n))
        {
            return Err(Error::Invalid(format!(
                "partitions is 1 to {}",
                sluice_log::MAX_PARTITIONS
            )));
        }
        let alias = self
            .join
            .as_ref()
            .map(|j| j.source_as.as_deref().unwrap_or(&self.source));
        let join_on = match &self.join {
            Some(j) => {
                if !sluice_log::valid_name(&j.table) {
                    return Err(Error::Invalid(format!("'{}' is not a table name", j.table)));
                }
                if j.wait_ms.is_some_and(|w| w > MAX_JOIN_WAIT_MS) {
                    return Err(Error::Invalid(format!(
                        "a join waits at most {MAX_JOIN_WAIT_MS} ms"
                    )));
                }
                if alias == Some(j.row_alias()) {
                    return Err(Error::Invalid(
                        "the stream and the table need different names in a join".into(),
                    ));
                }
                Some(Scalar::parse_in(&j.on, alias)?)
            }
            None => None,
        };
        let mut all = self.select.is_none();
        let mut columns = Vec::new();
        for (name, sql) in self.select.iter().flatten() {
            if name == "*" || sql.trim() == "*" {
                all = true;
                continue;
            }
            let path: Vec<String> = name.split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(Error::Invalid(format!(
                    "output field '{name}' has an empty part"
                )));
            }
            columns.push((path, Scalar::parse_in(sql, alias)?));
        }
        Ok(CompiledStream {
            def: self.clone(),
            join_on,
            filter: self
                .filter
                .as_deref()
                .map(|f| Filter::parse_in(f, alias))
                .transpose()?,
            all,
            columns,
            key: self
                .key
                .as_deref()
                .map(|k| Scalar::parse_in(k, alias))
                .transpose()?,
        })
    }

    /// Compiles `CREATE STREAM name AS SELECT ... FROM topic [WHERE ...]
    /// [PARTITION BY expr]` into a definition.
    pub fn from_sql(sql: &str) -> Result<StreamDef, Error> {
        Self::from_sql_replacing(sql).map(|(def, _)| def)
    }

    /// [`StreamDef::from_sql`], also taking `CREATE OR REPLACE STREAM`; says
    /// whether it was that.
    pub fn from_sql_replacing(sql: &str) -> Result<(StreamDef, bool), Error> {
        let trimmed = sql.trim().trim_end_matches(';');
        let upper = trimmed.to_ascii_uppercase();
        let create = upper
            .strip_prefix("CREATE")
            .map(str::trim_start)
            .ok_or_else(|| bad("expected CREATE STREAM <name> AS SELECT ..."))?;
        let (replace, create) = match create.strip_prefix("OR") {
            Some(r) if r.starts_with(char::is_whitespace) => (
                true,
                r.trim_start()
                    .strip_prefix("REPLACE")
                    .map(str::trim_start)
                    .ok_or_else(|| bad("expected CREATE OR REPLACE STREAM"))?,
            ),
            _ => (false, create),
        };
        let rest = create
            .strip_prefix("STREAM")
            .ok_or_else(|| bad("expected CREATE STREAM <name> AS SELECT ..."))?;
        let after_create = trimmed.len() - rest.len();
        // sqlparser knows CREATE TABLE ... AS SELECT; PARTITION BY goes last.
        let (body, key) = match upper.rfind(" PARTITION BY ") {
            Some(at) if at > after_create => (
                &trimmed[after_create..at],
                Some(trimmed[at + " PARTITION BY ".len()..].trim().to_string()),
            ),
            _ => (&trimmed[after_create..], None),
        };
        let AsSelect {
            name,
            select,
            source,
            alias,
            join,
        } = parse_create_as_select(&format!("CREATE TABLE{body}"), "STREAM")?;
        let join = join.map(|j| sql_join(j, alias, &source)).transpose()?;
        let mut select_map = BTreeMap::new();
        for item in &select.projection {
            match item {
                SelectItem::Wildcard(_) => {
                    select_map.insert("*".to_string(), "*".to_string());
                }
                SelectItem::UnnamedExpr(e) => {
                    let name = match e {
                        sqlparser::ast::Expr::Identifier(i) => i.value.clone(),
                        sqlparser::ast::Expr::CompoundIdentifier(p) => {
                            p.last().map(|i| i.value.clone()).unwrap_or_default()
                        }
                        other => return Err(bad(format!("name the column `{other}` with AS"))),
                    };
                    select_map.insert(name, e.to_string());
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    select_map.insert(alias.value.clone(), expr.to_string());
                }
                other => return Err(bad(format!("`{other}` is not supported"))),
            }
        }
        let def = StreamDef {
            name,
            source,
            select: Some(select_map),
            filter: select.selection.as_ref().map(ToString::to_string),
            key,
            partitions: None,
            on_error: OnError::default(),
            join,
        };
        def.compile()?;
        Ok((def, replace))
    }
}

/// A SQL join as a definition's: `ON` compares the stream's expression with
/// the table's key column, in either order.
fn sql_join(j: SqlJoin, alias: Option<String>, source: &str) -> Result<Join, Error> {
    use sqlparser::ast::{BinaryOperator, Expr};
    let row_alias = j.alias.clone().unwrap_or_else(|| j.table.clone());
    let stream_alias = alias.clone().unwrap_or_else(|| source.to_string());
    let Expr::BinaryOp {
        left,
        op: BinaryOperator::Eq,
        right,
    } = &j.on
    else {
        return Err(bad("a join's ON is <stream expression> = <table>.<key>"));
    };
    let column = |e: &Expr| match e {
        Expr::CompoundIdentifier(p) if p.len() == 2 && p[0].value == row_alias => {
            Some(p[1].value.clone())
        }
        _ => None,
    };
    let (on, key_column) = match (column(left), column(right)) {
        (Some(c), None) => (right, c),
        (None, Some(c)) => (left, c),
        _ => {
            return Err(bad(format!(
                "a join's ON compares one expression of the stream '{stream_alias}' with \
                 '{row_alias}.<key>'"
            )));
        }
    };
    Ok(Join {
        table: j.table,
        alias: j.alias,
        source_as: alias,
        on: on.to_string(),
        key_column: Some(key_column),
        kind: if j.left {
            JoinKind::Left
        } else {
            JoinKind::Inner
        },
        wait_ms: None,
    })
}

fn set(out: &mut Map<String, Value>, path: &[String], v: Value) {
    let (last, parents) = path.split_last().expect("a path has a part");
    let mut at = out;
    for p in parents {
        let slot = at
            .entry(p.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        at = slot.as_object_mut().expect("an object");
    }
    at.insert(last.clone(), v);
}

impl CompiledStream {
    /// What the stream writes for an input record (`value` `None`: a
    /// tombstone); `None` when the filter passes it over.
    pub fn apply(&self, key: Option<&str>, value: Option<&Value>) -> Option<Derived> {
        let Some(v) = value else {
            return Some(Derived {
                key: key.map(str::to_string),
                value: None,
            });
        };
        if let Some(f) = &self.filter
            && !f.matches(v)
        {
            return None;
        }
        let mut out = match (self.all, v) {
            (true, Value::Object(m)) => m.clone(),
            (true, other) if self.columns.is_empty() => {
                return Some(Derived {
                    key: self.key_of(key, v),
                    value: Some(other.clone()),
                });
            }
            _ => Map::new(),
        };
        for (path, e) in &self.columns {
            set(&mut out, path, e.eval(v));
        }
        Some(Derived {
            key: self.key_of(key, v),
            value: Some(Value::Object(out)),
        })
    }

    /// The key of the row a record joins (`None`: no row can match).
    pub fn join_key(&self, value: &Value) -> Option<String> {
        key_string(&self.join_on.as_ref()?.eval(value))
    }

    /// A record joined with its row (`None`: no row): the record's fields with
    /// the row under the table's alias; `None` when an inner join has no row.
    pub fn joined(&self, value: &Value, row: Option<Value>) -> Option<Value> {
        let j = self.def.join.as_ref()?;
        if row.is_none() && j.kind == JoinKind::Inner {
            return None;
        }
        let mut m = match value {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        m.insert(j.row_alias().to_string(), row.unwrap_or(Value::Null));
        Some(Value::Object(m))
    }

    fn key_of(&self, key: Option<&str>, v: &Value) -> Option<String> {
        match &self.key {
            Some(e) => key_string(&e.eval(v)),
            None => key.map(str::to_string),
        }
    }

    /// Whether the stream passes a value through as it is (no filter, no
    /// columns, no key expression), so any value, JSON or not, can be written.
    pub fn passes_values(&self) -> bool {
        self.all
            && self.columns.is_empty()
            && self.filter.is_none()
            && self.key.is_none()
            && self.def.join.is_none()
    }

    /// Whether the output key is the input key (so the output partition can be
    /// the input partition when the partition counts match).
    pub fn keeps_key(&self) -> bool {
        self.key.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_example_of_the_contract() {
        let def = StreamDef::from_sql(
            "CREATE STREAM big_orders AS SELECT id, customer_id, amount * 100 AS cents \
             FROM orders WHERE amount > 1000 PARTITION BY customer_id",
        )
        .unwrap();
        assert_eq!(def.name, "big_orders");
        assert_eq!(def.source, "orders");
        assert_eq!(def.key.as_deref(), Some("customer_id"));
        let s = def.compile().unwrap();
        assert!(!s.keeps_key());
        let out = s
            .apply(
                Some("o-1"),
                Some(&json!({"id": "o-1", "customer_id": 42, "amount": 1500.5, "note": "x"})),
            )
            .unwrap();
        assert_eq!(out.key.as_deref(), Some("42"));
        assert_eq!(
            out.value,
            Some(json!({"id": "o-1", "customer_id": 42, "cents": 150050}))
        );
        assert!(s.apply(Some("o-2"), Some(&json!({"amount": 10}))).is_none());
        assert_eq!(
            s.apply(Some("o-3"), None),
            Some(Derived {
                key: Some("o-3".into()),
                value: None
            }),
            "a tombstone passes with its key"
        );
        // The definition round-trips through JSON.
        let again: StreamDef = serde_json::from_value(serde_json::to_value(&def).unwrap()).unwrap();
        assert_eq!(again, def);
    }

    #[test]
    fn star_nested_names_and_refusals() {
        let s = StreamDef {
            name: "enriched".into(),
            source: "orders".into(),
            select: Some(BTreeMap::from([
                ("*".into(), "*".into()),
                ("total.cents".into(), "amount * 100".into()),
                ("label".into(), "'order ' || id".into()),
            ])),
            filter: None,
            key: None,
            partitions: None,
            on_error: OnError::Skip,
            join: None,
        }
        .compile()
        .unwrap();
        let out = s
            .apply(Some("k"), Some(&json!({"id": 7, "amount": 2})))
            .unwrap();
        assert_eq!(
            out.value,
            Some(json!({"id": 7, "amount": 2, "total": {"cents": 200}, "label": "order 7"}))
        );
        assert_eq!(out.key.as_deref(), Some("k"));
        for (sql, why) in [
            ("CREATE TABLE t AS SELECT a FROM x", "CREATE STREAM"),
            (
                "CREATE STREAM s AS SELECT a FROM x RIGHT JOIN y ON x.a = y.a",
                "LEFT JOIN or (INNER) JOIN",
            ),
            (
                "CREATE STREAM s AS SELECT a FROM x JOIN y ON x.a = x.b",
                "compares one expression",
            ),
            (
                "CREATE STREAM s AS SELECT f(a) AS b FROM x",
                "not supported",
            ),
            ("CREATE STREAM s AS SELECT a + 1 FROM x", "AS"),
            ("CREATE STREAM x AS SELECT a FROM x", "its own output"),
        ] {
            let e = StreamDef::from_sql(sql).unwrap_err().to_string();
            assert!(e.contains(why), "{sql}: {e}");
        }
    }

    #[test]
    fn a_join_sees_the_record_and_the_row() {
        let (def, replace) = StreamDef::from_sql_replacing(
            "CREATE OR REPLACE STREAM named AS SELECT o.id AS id, c.name AS who, amount * 2 AS twice \
             FROM orders o LEFT JOIN customers c ON c.id = o.customer_id WHERE o.amount > 1",
        )
        .unwrap();
        assert!(replace);
        let j = def.join.clone().unwrap();
        assert_eq!(
            (
                j.table.as_str(),
                j.row_alias(),
                j.on.as_str(),
                j.key_column.as_deref(),
                j.kind
            ),
            (
                "customers",
                "c",
                "o.customer_id",
                Some("id"),
                JoinKind::Left
            )
        );
        let s = def.compile().unwrap();
        let order = json!({"id": 1, "customer_id": "c9", "amount": 5});
        assert_eq!(s.join_key(&order).as_deref(), Some("c9"));
        let joined = s
            .joined(&order, Some(json!({"id": "c9", "name": "Ada"})))
            .unwrap();
        let out = s.apply(Some("k"), Some(&joined)).unwrap();
        assert_eq!(out.value, Some(json!({"id": 1, "who": "Ada", "twice": 10})));
        // Left: no row joins null; inner: passed over.
        let joined = s.joined(&order, None).unwrap();
        assert_eq!(
            s.apply(None, Some(&joined)).unwrap().value,
            Some(json!({"id": 1, "who": null, "twice": 10}))
        );
        let mut inner = def.clone();
        inner.join.as_mut().unwrap().kind = JoinKind::Inner;
        assert!(inner.compile().unwrap().joined(&order, None).is_none());
    }
}
