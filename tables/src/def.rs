//! Table definitions: the JSON form (stored and returned as is) and the SQL subset
//! that compiles to it.
//!
//! ```sql
//! CREATE TABLE customers AS SELECT id, name, tier FROM customer_events WHERE tier IS NOT NULL
//! CREATE TABLE per_customer AS SELECT customer_id, COUNT(*) AS n, SUM(amount) AS total
//!   FROM payments GROUP BY customer_id WINDOW TUMBLING (SIZE 1 MINUTE)
//! ```
//! A projection's first column is its key (`_key` names the record key); a state
//! table's key is its GROUP BY column. Nested fields are `a.b` in SQL, `$.a.b` in JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlparser::ast::{
    CreateTable, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Select,
    SelectItem, SetExpr, Statement, TableFactor,
};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::Error;
use crate::expr::{Filter, Path};

/// A table definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    /// Table name.
    pub name: String,
    /// Source topic.
    pub source: String,
    /// Projection: what keys a row: `key` (the record key) or a `$.path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Projection: the row's columns, name to `$.path`; absent keeps the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<BTreeMap<String, String>>,
    /// State table: what groups records: `key` or a `$.path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// State table: aggregate name to `{"count":{}}`, `{"sum":"$.amount"}`, `min`,
    /// `max`, `avg`, `latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregates: Option<BTreeMap<String, Aggregate>>,
    /// State table: tumbling windows by record timestamp; rows are keyed
    /// `<group>@<window start in ms, 13 digits>` and carry `window_start`/`window_end`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Only records matching this SQL expression count (`amount > 10 AND tier = 'gold'`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// A topic the table makes and appends every row change to, in the commit
    /// that changes the row: `{"key", "op": "upsert"|"delete", "row"}`, keyed by
    /// the row key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changelog: Option<String>,
}

/// One aggregate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Aggregate {
    /// Number of records.
    Count(serde_json::Map<String, serde_json::Value>),
    /// Sum of a numeric field.
    Sum(String),
    /// Smallest value of a numeric field.
    Min(String),
    /// Largest value of a numeric field.
    Max(String),
    /// Mean of a numeric field.
    Avg(String),
    /// The field's value in the latest record.
    Latest(String),
}

/// A tumbling window.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Window length in milliseconds.
    pub tumbling_ms: u64,
    /// Delete a window's row this long after the window closed, measured in record
    /// time (the newest record applied); absent keeps every window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
}

/// What a record is reduced to, compiled from a definition.
#[derive(Debug, Clone)]
pub enum Kind {
    Projection {
        key: KeySpec,
        columns: Option<Vec<(String, Path)>>,
    },
    State {
        group_by: KeySpec,
        aggregates: Vec<(String, AggKind, Option<Path>)>,
        window: Option<u64>,
    },
}

#[derive(Debug, Clone)]
pub enum KeySpec {
    RecordKey,
    Path(Path),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    Latest,
}

/// A definition, checked and compiled.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub def: TableDef,
    pub kind: Kind,
    pub filter: Option<Filter>,
}

fn key_spec(s: &str) -> Result<KeySpec, Error> {
    if s == "key" {
        Ok(KeySpec::RecordKey)
    } else {
        Ok(KeySpec::Path(Path::parse(s)?))
    }
}

impl TableDef {
    /// Checks the definition and compiles its paths and filter.
    pub fn compile(&self) -> Result<Compiled, Error> {
        if !sluice_log::valid_name(&self.name) {
            return Err(Error::Invalid(
                "table names are 1 to 249 characters of [A-Za-z0-9._-]".into(),
            ));
        }
        for (prefix, of) in [
            (sluice_log::SINK_STORES, "sinks"),
            (sluice_log::PROCESSOR_STORES, "processors"),
            (sluice_log::SOURCE_STORES, "sources"),
        ] {
            if self.name.starts_with(prefix) {
                return Err(Error::Invalid(format!(
                    "table names do not start with '{prefix}' (the stores of {of} do)"
                )));
            }
        }
        if let Some(c) = &self.changelog
            && (!sluice_log::valid_name(c) || *c == self.source)
        {
            return Err(Error::Invalid(
                "changelog names a new topic: 1 to 249 characters of [A-Za-z0-9._-], not the source".into(),
            ));
        }
        let filter = self.filter.as_deref().map(Filter::parse).transpose()?;
        let kind = match (&self.key, &self.group_by) {
            (Some(key), None) => {
                if self.aggregates.is_some() || self.window.is_some() {
                    return Err(Error::Invalid(
                        "a projection (key) has no aggregates or window; use group_by".into(),
                    ));
                }
                let columns = self
                    .columns
                    .as_ref()
                    .map(|cols| {
                        cols.iter()
                            .map(|(c, p)| Ok((c.clone(), Path::parse(p)?)))
                            .collect::<Result<Vec<_>, Error>>()
                    })
                    .transpose()?;
                Kind::Projection {
                    key: key_spec(key)?,
                    columns,
                }
            }
            (None, Some(g)) => {
                let aggs = self
                    .aggregates
                    .as_ref()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| {
                        Error::Invalid("a state table (group_by) needs aggregates".into())
                    })?;
                if self.columns.is_some() {
                    return Err(Error::Invalid(
                        "a state table has aggregates, not columns".into(),
                    ));
                }
                let mut out = Vec::new();
                for (name, a) in aggs {
                    let (kind, path) = match a {
                        Aggregate::Count(_) => (AggKind::Count, None),
                        Aggregate::Sum(p) => (AggKind::Sum, Some(Path::parse(p)?)),
                        Aggregate::Min(p) => (AggKind::Min, Some(Path::parse(p)?)),
                        Aggregate::Max(p) => (AggKind::Max, Some(Path::parse(p)?)),
                        Aggregate::Avg(p) => (AggKind::Avg, Some(Path::parse(p)?)),
                        Aggregate::Latest(p) => (AggKind::Latest, Some(Path::parse(p)?)),
                    };
                    out.push((name.clone(), kind, path));
                }
                let window = match self.window {
                    Some(Window { tumbling_ms: 0, .. }) => {
                        return Err(Error::Invalid("window.tumbling_ms must be positive".into()));
                    }
                    Some(w) => Some(w.tumbling_ms),
                    None => None,
                };
                Kind::State {
                    group_by: key_spec(g)?,
                    aggregates: out,
                    window,
                }
            }
            (Some(_), Some(_)) => {
                return Err(Error::Invalid(
                    "give `key` (a projection) or `group_by` (a state table), not both".into(),
                ));
            }
            (None, None) => {
                return Err(Error::Invalid(
                    "a table needs `key` (a projection) or `group_by` (a state table)".into(),
                ));
            }
        };
        Ok(Compiled {
            def: self.clone(),
            kind,
            filter,
        })
    }

    /// Compiles `CREATE TABLE name AS SELECT ...` into a definition.
    pub fn from_sql(sql: &str) -> Result<TableDef, Error> {
        let (sql, window) = strip_window(sql)?;
        let bad = |m: &str| Error::Invalid(format!("SQL: {m}"));
        let AsSelect {
            name,
            select,
            source,
            join,
            ..
        } = parse_create_as_select(&sql, "TABLE")?;
        if join.is_some() {
            return Err(bad(
                "joins are for streams (CREATE STREAM ... JOIN), not tables",
            ));
        }
        let filter = select
            .selection
            .as_ref()
            .map(|e| Filter::from_expr(e.clone()).map(|f| f.sql()))
            .transpose()?;
        let group: Vec<&Expr> = match &select.group_by {
            GroupByExpr::Expressions(e, _) => e.iter().collect(),
            GroupByExpr::All(_) => return Err(bad("GROUP BY ALL is not supported")),
        };
        let mut def = TableDef {
            name,
            source,
            key: None,
            columns: None,
            group_by: None,
            aggregates: None,
            window,
            filter,
            changelog: None,
        };
        match group.as_slice() {
            [] => {
                if window.is_some() {
                    return Err(bad("WINDOW needs GROUP BY"));
                }
                let mut columns = BTreeMap::new();
                for (i, item) in select.projection.iter().enumerate() {
                    let (expr, alias) = match item {
                        SelectItem::UnnamedExpr(e) => (e, None),
                        SelectItem::ExprWithAlias { expr, alias } => {
                            (expr, Some(alias.value.clone()))
                        }
                        _ => return Err(bad("select named columns, not *")),
                    };
                    let path = column_path(expr)?;
                    let col =
                        alias.unwrap_or_else(|| path.rsplit('.').next().unwrap_or("").to_string());
                    if i == 0 {
                        def.key = Some(if path == "$._key" {
                            "key".into()
                        } else {
                            path.clone()
                        });
                    }
                    if path != "$._key" {
                        columns.insert(col, path);
                    }
                }
                def.columns = Some(columns);
            }
            [g] => {
                let group_path = column_path(g)?;
                def.group_by = Some(if group_path == "$._key" {
                    "key".into()
                } else {
                    group_path.clone()
                });
                let mut aggs = BTreeMap::new();
                for item in &select.projection {
                    let (expr, alias) = match item {
                        SelectItem::UnnamedExpr(e) => (e, None),
                        SelectItem::ExprWithAlias { expr, alias } => {
                            (expr, Some(alias.value.clone()))
                        }
                        _ => return Err(bad("select columns and aggregates, not *")),
                    };
                    if let Expr::Function(f) = expr {
                        let fname = f.name.to_string().to_ascii_lowercase();
                        let arg = match &f.args {
                            FunctionArguments::List(l) if l.args.len() == 1 => match &l.args[0] {
                                FunctionArg::Unnamed(FunctionArgExpr::Wildcard) => None,
                                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => {
                                    Some(column_path(e)?)
                                }
                                _ => return Err(bad("aggregate arguments are columns")),
                            },
                            _ => return Err(bad("aggregates take one argument")),
                        };
                        let agg = match (fname.as_str(), arg) {
                            ("count", _) => Aggregate::Count(Default::default()),
                            ("sum", Some(p)) => Aggregate::Sum(p),
                            ("min", Some(p)) => Aggregate::Min(p),
                            ("max", Some(p)) => Aggregate::Max(p),
                            ("avg", Some(p)) => Aggregate::Avg(p),
                            ("latest", Some(p)) | ("latest_by_offset", Some(p)) => {
                                Aggregate::Latest(p)
                            }
                            (other, _) => {
                                return Err(bad(&format!(
                                    "aggregate {other} is not supported; use COUNT, SUM, MIN, MAX, AVG, LATEST"
                                )));
                            }
                        };
                        let name = alias.ok_or_else(|| bad("name each aggregate with AS"))?;
                        aggs.insert(name, agg);
                    } else if column_path(expr)? != group_path {
                        return Err(bad("besides aggregates, select only the GROUP BY column"));
                    }
                }
                def.aggregates = Some(aggs);
            }
            _ => return Err(bad("GROUP BY one column")),
        }
        def.compile()?;
        Ok(def)
    }
}

fn column_path(e: &Expr) -> Result<String, Error> {
    match e {
        Expr::Identifier(i) => Ok(format!("$.{}", i.value)),
        Expr::CompoundIdentifier(parts) => Ok(format!(
            "$.{}",
            parts
                .iter()
                .map(|p| p.value.as_str())
                .collect::<Vec<_>>()
                .join(".")
        )),
        other => Err(Error::Invalid(format!("SQL: `{other}` is not a column"))),
    }
}

/// `CREATE TABLE <name> AS SELECT ... FROM <topic>` taken apart: the name, the
/// SELECT and its one source topic. `what` names the statement in errors
/// (`TABLE`, or `STREAM` for the streams written in the same form).
/// A parsed `CREATE <what> name AS SELECT ... FROM source [alias] [JOIN ...]`.
pub(crate) struct AsSelect {
    pub name: String,
    pub select: Select,
    pub source: String,
    /// The source's alias (`FROM orders o`).
    pub alias: Option<String>,
    /// One join, if there is one.
    pub join: Option<SqlJoin>,
}

/// `[LEFT | INNER] JOIN table [alias] ON a = b`.
pub(crate) struct SqlJoin {
    pub table: String,
    pub alias: Option<String>,
    pub left: bool,
    pub on: sqlparser::ast::Expr,
}

pub(crate) fn parse_create_as_select(sql: &str, what: &str) -> Result<AsSelect, Error> {
    use sqlparser::ast::{JoinConstraint, JoinOperator};
    let bad = |m: &str| Error::Invalid(format!("SQL: {m}"));
    let statements = Parser::parse_sql(&GenericDialect {}, sql)
        .map_err(|e| Error::Invalid(format!("SQL: {e}")))?;
    let [
        Statement::CreateTable(CreateTable {
            name,
            query: Some(query),
            ..
        }),
    ] = statements.as_slice()
    else {
        return Err(bad(&format!(
            "expected one CREATE {what} <name> AS SELECT ... statement"
        )));
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(bad("expected a plain SELECT"));
    };
    let [from] = select.from.as_slice() else {
        return Err(bad("SELECT from exactly one topic"));
    };
    let TableFactor::Table {
        name: source,
        alias,
        ..
    } = &from.relation
    else {
        return Err(bad("FROM must name a topic"));
    };
    let join = match from.joins.as_slice() {
        [] => None,
        [j] => {
            let (left, constraint) = match &j.join_operator {
                JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (true, c),
                JoinOperator::Join(c) | JoinOperator::Inner(c) => (false, c),
                _ => return Err(bad("a join is LEFT JOIN or (INNER) JOIN")),
            };
            let JoinConstraint::On(on) = constraint else {
                return Err(bad("a join needs ON <stream expression> = <table>.<key>"));
            };
            let TableFactor::Table {
                name: table,
                alias: table_alias,
                ..
            } = &j.relation
            else {
                return Err(bad("JOIN must name a table"));
            };
            Some(SqlJoin {
                table: table.to_string(),
                alias: table_alias.as_ref().map(|a| a.name.value.clone()),
                left,
                on: on.clone(),
            })
        }
        _ => return Err(bad("one join at most")),
    };
    Ok(AsSelect {
        name: name.to_string(),
        select: (**select).clone(),
        source: source.to_string(),
        alias: alias.as_ref().map(|a| a.name.value.clone()),
        join,
    })
}

/// Removes a trailing `WINDOW TUMBLING (SIZE n UNIT)` (not standard SQL) and
/// returns its length.
fn strip_window(sql: &str) -> Result<(String, Option<Window>), Error> {
    let upper = sql.to_ascii_uppercase();
    let Some(at) = upper.find("WINDOW") else {
        return Ok((sql.to_string(), None));
    };
    let clause: String = upper[at..].chars().filter(|c| !c.is_whitespace()).collect();
    let inner = clause
        .strip_prefix("WINDOWTUMBLING(SIZE")
        .and_then(|r| r.trim_end_matches(';').strip_suffix(')'))
        .ok_or_else(|| {
            Error::Invalid("SQL: write the window as WINDOW TUMBLING (SIZE <n> <unit>[, RETENTION <n> <unit>])".into())
        })?;
    let (size, retention) = match inner.split_once(",RETENTION") {
        Some((s, r)) => (s, Some(r)),
        None => (inner, None),
    };
    let tumbling_ms = duration_ms(size)?;
    let retention_ms = retention.map(duration_ms).transpose()?;
    Ok((
        sql[..at].to_string(),
        Some(Window {
            tumbling_ms,
            retention_ms,
        }),
    ))
}

/// `1MINUTE`, `30SECONDS`, `7DAYS` (spaces already removed) in milliseconds.
fn duration_ms(s: &str) -> Result<u64, Error> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().map_err(|_| {
        Error::Invalid("SQL: a window duration is a whole number and a unit".into())
    })?;
    let ms = match s[digits.len()..].trim_end_matches('S') {
        "MILLISECOND" => 1,
        "SECOND" => 1_000,
        "MINUTE" => 60_000,
        "HOUR" => 3_600_000,
        "DAY" => 86_400_000,
        other => {
            return Err(Error::Invalid(format!(
                "SQL: unknown window unit '{other}'"
            )));
        }
    };
    n.checked_mul(ms)
        .ok_or_else(|| Error::Invalid("SQL: window duration too long".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projection_from_sql() {
        let d = TableDef::from_sql("CREATE TABLE customers AS SELECT id, name, address.city AS city FROM customer_events WHERE tier IS NOT NULL").unwrap();
        assert_eq!(d.key.as_deref(), Some("$.id"));
        assert_eq!(d.source, "customer_events");
        let cols = d.columns.unwrap();
        assert_eq!(cols["city"], "$.address.city");
        assert_eq!(cols["id"], "$.id");
        assert_eq!(d.filter.as_deref(), Some("tier IS NOT NULL"));
    }

    #[test]
    fn state_table_from_sql() {
        let d = TableDef::from_sql(
            "CREATE TABLE per_customer AS SELECT customer_id, COUNT(*) AS n, SUM(amount) AS total, MAX(amount) AS biggest \
             FROM payments WHERE amount > 0 GROUP BY customer_id WINDOW TUMBLING (SIZE 1 MINUTE, RETENTION 2 HOURS)",
        )
        .unwrap();
        assert_eq!(d.group_by.as_deref(), Some("$.customer_id"));
        let a = d.aggregates.unwrap();
        assert_eq!(a["total"], Aggregate::Sum("$.amount".into()));
        assert!(matches!(a["n"], Aggregate::Count(_)));
        assert_eq!(
            d.window,
            Some(Window {
                tumbling_ms: 60_000,
                retention_ms: Some(7_200_000)
            })
        );
    }

    #[test]
    fn bad_sql_says_why() {
        for (sql, want) in [
            ("SELECT 1", "CREATE TABLE"),
            (
                "CREATE TABLE t AS SELECT a FROM x JOIN y ON x.a = y.a",
                "joins",
            ),
            (
                "CREATE TABLE t AS SELECT a, COUNT(*) FROM x GROUP BY a",
                "AS",
            ),
            (
                "CREATE TABLE t AS SELECT a, b FROM x GROUP BY a",
                "GROUP BY column",
            ),
            (
                "CREATE TABLE t AS SELECT a, MEDIAN(b) AS m FROM x GROUP BY a",
                "MEDIAN",
            ),
            ("CREATE TABLE t AS SELECT * FROM x", "*"),
            (
                "CREATE TABLE t AS SELECT a FROM x WHERE a LIKE 'x'",
                "not supported",
            ),
            (
                "CREATE TABLE t AS SELECT a, COUNT(*) AS n FROM x GROUP BY a WINDOW HOPPING (SIZE 1 MINUTE)",
                "TUMBLING",
            ),
            ("CREATE TABLE t AS SELEC a FROM x", "SQL"),
        ] {
            let e = TableDef::from_sql(sql).unwrap_err().to_string();
            assert!(
                e.to_ascii_lowercase().contains(&want.to_ascii_lowercase()),
                "{sql}: {e}"
            );
        }
    }
}
