//! Reducing records to row changes. A batch of records becomes one change per key
//! (the latest row, a delete, or partial aggregates), which the commit then merges
//! into the stored rows: aggregates merge associatively, so folding a batch first
//! and merging once gives the same rows as applying record by record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sluice_log::{RecordView, ValueKind};

use crate::def::{AggKind, Compiled, KeySpec, Kind};
use crate::expr::{key_string, number};

/// One aggregate's running state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Acc {
    Count(u64),
    Sum(f64),
    Min(Option<f64>),
    Max(Option<f64>),
    Avg { sum: f64, count: u64 },
    Latest(Value),
}

impl Acc {
    fn empty(kind: AggKind) -> Acc {
        match kind {
            AggKind::Count => Acc::Count(0),
            AggKind::Sum => Acc::Sum(0.0),
            AggKind::Min => Acc::Min(None),
            AggKind::Max => Acc::Max(None),
            AggKind::Avg => Acc::Avg { sum: 0.0, count: 0 },
            AggKind::Latest => Acc::Latest(Value::Null),
        }
    }

    /// Merges `later` (which follows `self` in the log) into `self`.
    fn merge(&mut self, later: &Acc) {
        match (self, later) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Sum(a), Acc::Sum(b)) => *a += b,
            (Acc::Min(a), Acc::Min(b)) => *a = opt(*a, *b, f64::min),
            (Acc::Max(a), Acc::Max(b)) => *a = opt(*a, *b, f64::max),
            (Acc::Avg { sum, count }, Acc::Avg { sum: s, count: c }) => {
                *sum += s;
                *count += c;
            }
            (Acc::Latest(a), Acc::Latest(b)) => *a = b.clone(),
            _ => {}
        }
    }

    fn render(&self) -> Value {
        match self {
            Acc::Count(n) => Value::from(*n),
            Acc::Sum(s) => number(*s),
            Acc::Min(m) | Acc::Max(m) => m.map_or(Value::Null, number),
            Acc::Avg { sum, count } if *count > 0 => number(sum / *count as f64),
            Acc::Avg { .. } => Value::Null,
            Acc::Latest(v) => v.clone(),
        }
    }
}

fn opt(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (x, None) | (None, x) => x,
    }
}

/// A state table's stored row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StateRow {
    pub group: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<(u64, u64)>,
    pub aggs: Vec<Acc>,
    /// The newest record timestamp merged in.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ts: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl StateRow {
    /// Merges a batch's partial state into this row.
    pub fn merge(&mut self, later: &StateRow) {
        for (a, b) in self.aggs.iter_mut().zip(&later.aggs) {
            a.merge(b);
        }
        self.ts = self.ts.max(later.ts);
    }

    /// One row from the parts several shards keep of it (see
    /// `sluice_log::shard_key`): sums, counts, minimums and maximums combine
    /// whatever the order, and `latest` is the newest part's.
    pub fn merge_parts(mut parts: Vec<StateRow>) -> Option<StateRow> {
        parts.sort_by_key(|p| p.ts);
        let mut parts = parts.into_iter();
        let mut row = parts.next()?;
        for part in parts {
            row.merge(&part);
        }
        Some(row)
    }

    /// The row clients see.
    pub fn render(&self, c: &Compiled) -> Value {
        let Kind::State {
            group_by,
            aggregates,
            ..
        } = &c.kind
        else {
            return Value::Null;
        };
        let mut m = Map::new();
        let group_name = match group_by {
            KeySpec::RecordKey => "key".to_string(),
            KeySpec::Path(_) => c
                .def
                .group_by
                .as_deref()
                .and_then(|p| p.rsplit('.').next())
                .unwrap_or("group")
                .to_string(),
        };
        m.insert(group_name, self.group.clone());
        for ((name, _, _), acc) in aggregates.iter().zip(&self.aggs) {
            m.insert(name.clone(), acc.render());
        }
        if let Some((start, end)) = self.window {
            m.insert("window_start".into(), Value::from(start));
            m.insert("window_end".into(), Value::from(end));
        }
        Value::Object(m)
    }
}

/// One key's change from a batch.
#[derive(Debug, Clone)]
pub enum Change {
    /// Projection: the latest row.
    Put(Value),
    /// Projection: a tombstone.
    Delete,
    /// State table: partial aggregates to merge.
    Merge(StateRow),
}

/// A batch's changes by key, and how many records did not fit the definition.
#[derive(Debug, Default)]
pub struct Folded {
    pub changes: BTreeMap<String, Change>,
    pub skipped: u64,
    /// The newest record timestamp folded.
    pub newest: u64,
}

impl Folded {
    /// Folds one record in.
    pub fn add(&mut self, c: &Compiled, r: &RecordView<'_>) {
        self.newest = self.newest.max(r.timestamp);
        let value: Option<Value> = match r.kind {
            ValueKind::Null => None,
            ValueKind::Json => match serde_json::from_slice(r.value) {
                Ok(v) => Some(v),
                Err(_) => {
                    self.skipped += 1;
                    return;
                }
            },
            ValueKind::Binary => {
                self.skipped += 1;
                return;
            }
        };
        if let (Some(f), Some(v)) = (&c.filter, &value)
            && !f.matches(v)
        {
            return;
        }
        match &c.kind {
            Kind::Projection { key, columns } => {
                let k = match key {
                    KeySpec::RecordKey => r.key.map(str::to_string),
                    KeySpec::Path(p) => value.as_ref().and_then(|v| p.get(v)).and_then(key_string),
                };
                let Some(k) = k else {
                    self.skipped += 1;
                    return;
                };
                let change = match (value, columns) {
                    (None, _) => Change::Delete,
                    (Some(v), None) => Change::Put(v),
                    (Some(v), Some(cols)) => Change::Put(Value::Object(
                        cols.iter()
                            .map(|(name, p)| {
                                (name.clone(), p.get(&v).cloned().unwrap_or(Value::Null))
                            })
                            .collect(),
                    )),
                };
                self.changes.insert(k, change);
            }
            Kind::State {
                group_by,
                aggregates,
                window,
            } => {
                // Tombstones carry nothing to aggregate.
                let Some(v) = value else { return };
                let group = match group_by {
                    KeySpec::RecordKey => r.key.map(|k| Value::String(k.to_string())),
                    KeySpec::Path(p) => p.get(&v).filter(|g| key_string(g).is_some()).cloned(),
                };
                let Some(group) = group else {
                    self.skipped += 1;
                    return;
                };
                let mut aggs = Vec::with_capacity(aggregates.len());
                for (_, kind, path) in aggregates {
                    let field = path.as_ref().and_then(|p| p.get(&v));
                    let num = field.and_then(Value::as_f64);
                    let acc = match kind {
                        AggKind::Count => Acc::Count(1),
                        AggKind::Latest => Acc::Latest(field.cloned().unwrap_or(Value::Null)),
                        _ => {
                            let Some(x) = num else {
                                // The definition needs a number here.
                                self.skipped += 1;
                                return;
                            };
                            match kind {
                                AggKind::Sum => Acc::Sum(x),
                                AggKind::Min => Acc::Min(Some(x)),
                                AggKind::Max => Acc::Max(Some(x)),
                                _ => Acc::Avg { sum: x, count: 1 },
                            }
                        }
                    };
                    aggs.push(acc);
                }
                let window = window.map(|size| {
                    let start = r.timestamp - r.timestamp % size;
                    (start, start + size)
                });
                let mut key = key_string(&group).unwrap_or_default();
                if let Some((start, _)) = window {
                    key = format!("{key}@{start:013}");
                }
                let row = StateRow {
                    group,
                    window,
                    aggs,
                    ts: r.timestamp,
                };
                match self.changes.get_mut(&key) {
                    Some(Change::Merge(existing)) => existing.merge(&row),
                    _ => {
                        self.changes.insert(key, Change::Merge(row));
                    }
                }
            }
        }
    }
}

/// An empty state row for a definition (before any merge).
pub fn empty_state(c: &Compiled, template: &StateRow) -> StateRow {
    let Kind::State { aggregates, .. } = &c.kind else {
        return template.clone();
    };
    StateRow {
        group: template.group.clone(),
        window: template.window,
        aggs: aggregates.iter().map(|(_, k, _)| Acc::empty(*k)).collect(),
        ts: 0,
    }
}
