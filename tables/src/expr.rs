//! JSON paths (`$.a.b`, `$.items[0]`) and WHERE filters (SQL expressions parsed by
//! sqlparser) evaluated against a record's JSON value.

use serde_json::Value;
use sqlparser::ast::{BinaryOperator, Expr, UnaryOperator, Value as SqlValue};
use sqlparser::dialect::GenericDialect;
use sqlparser::parser::Parser;

use crate::Error;

/// A parsed JSON path: `$` then `.field` and `[index]` steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path(Vec<Step>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Field(String),
    Index(usize),
}

impl Path {
    /// Parses `$.a.b[2]`.
    pub fn parse(s: &str) -> Result<Path, Error> {
        let bad = || Error::Invalid(format!("'{s}' is not a JSON path like $.a.b or $.items[0]"));
        let rest = s.strip_prefix('$').ok_or_else(bad)?;
        let mut steps = Vec::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '.' => {
                    let mut name = String::new();
                    while let Some(&c) = chars.peek() {
                        if c == '.' || c == '[' {
                            break;
                        }
                        name.push(c);
                        chars.next();
                    }
                    if name.is_empty() {
                        return Err(bad());
                    }
                    steps.push(Step::Field(name));
                }
                '[' => {
                    let mut n = String::new();
                    for c in chars.by_ref() {
                        if c == ']' {
                            break;
                        }
                        n.push(c);
                    }
                    steps.push(Step::Index(n.parse().map_err(|_| bad())?));
                }
                _ => return Err(bad()),
            }
        }
        if steps.is_empty() {
            return Err(bad());
        }
        Ok(Path(steps))
    }

    /// A path of plain field names.
    pub fn fields(names: &[String]) -> Path {
        Path(names.iter().cloned().map(Step::Field).collect())
    }

    /// The value at this path, if there is one.
    pub fn get<'a>(&self, mut v: &'a Value) -> Option<&'a Value> {
        for s in &self.0 {
            v = match s {
                Step::Field(f) => v.get(f)?,
                Step::Index(i) => v.get(*i)?,
            };
        }
        Some(v)
    }
}

/// A compiled WHERE filter.
#[derive(Debug, Clone)]
pub struct Filter {
    expr: Expr,
}

impl Filter {
    /// Parses a SQL boolean expression (`amount > 10 AND tier = 'gold'`), checking
    /// that it uses only what the evaluator supports.
    pub fn parse(sql: &str) -> Result<Filter, Error> {
        let expr = Parser::new(&GenericDialect {})
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| Error::Invalid(format!("filter: {e}")))?;
        let f = Filter { expr };
        f.check(&f.expr)?;
        Ok(f)
    }

    /// Wraps an expression sqlparser already parsed.
    pub fn from_expr(expr: Expr) -> Result<Filter, Error> {
        let f = Filter { expr };
        f.check(&f.expr)?;
        Ok(f)
    }

    fn check(&self, e: &Expr) -> Result<(), Error> {
        match e {
            Expr::BinaryOp { left, op, right } => {
                use BinaryOperator as B;
                if !matches!(
                    op,
                    B::And | B::Or | B::Eq | B::NotEq | B::Lt | B::LtEq | B::Gt | B::GtEq
                ) {
                    return Err(Error::Invalid(format!(
                        "filter: operator {op} is not supported"
                    )));
                }
                self.check(left)?;
                self.check(right)
            }
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            }
            | Expr::Nested(expr) => self.check(expr),
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr,
            } => self.check(expr),
            Expr::IsNull(e) | Expr::IsNotNull(e) => self.check(e),
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Value(_) => Ok(()),
            other => Err(Error::Invalid(format!(
                "filter: `{other}` is not supported"
            ))),
        }
    }

    /// Whether the record value passes.
    pub fn matches(&self, v: &Value) -> bool {
        truthy(&eval(&self.expr, v))
    }

    /// The filter as SQL text.
    pub fn sql(&self) -> String {
        self.expr.to_string()
    }
}

fn truthy(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

fn eval(e: &Expr, record: &Value) -> Value {
    match e {
        Expr::Identifier(i) => Path::fields(std::slice::from_ref(&i.value))
            .get(record)
            .cloned()
            .unwrap_or(Value::Null),
        Expr::CompoundIdentifier(parts) => {
            let names: Vec<String> = parts.iter().map(|p| p.value.clone()).collect();
            Path::fields(&names)
                .get(record)
                .cloned()
                .unwrap_or(Value::Null)
        }
        Expr::Value(v) => match &v.value {
            SqlValue::Number(n, _) => n
                .parse::<f64>()
                .ok()
                .and_then(|f| serde_json::Number::from_f64(f).map(Value::Number))
                .unwrap_or(Value::Null),
            SqlValue::SingleQuotedString(s) | SqlValue::DoubleQuotedString(s) => {
                Value::String(s.clone())
            }
            SqlValue::Boolean(b) => Value::Bool(*b),
            _ => Value::Null,
        },
        Expr::Nested(e) => eval(e, record),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => Value::Bool(!truthy(&eval(expr, record))),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => match eval(expr, record).as_f64() {
            Some(f) => serde_json::Number::from_f64(-f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            None => Value::Null,
        },
        Expr::IsNull(e) => Value::Bool(eval(e, record).is_null()),
        Expr::IsNotNull(e) => Value::Bool(!eval(e, record).is_null()),
        Expr::BinaryOp { left, op, right } => {
            use BinaryOperator as B;
            match op {
                B::And => Value::Bool(truthy(&eval(left, record)) && truthy(&eval(right, record))),
                B::Or => Value::Bool(truthy(&eval(left, record)) || truthy(&eval(right, record))),
                _ => {
                    let (l, r) = (eval(left, record), eval(right, record));
                    let ord = match (&l, &r) {
                        (Value::Number(a), Value::Number(b)) => a
                            .as_f64()
                            .zip(b.as_f64())
                            .and_then(|(a, b)| a.partial_cmp(&b)),
                        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                        (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
                        _ => None,
                    };
                    let Some(ord) = ord else {
                        // Comparing with a missing field or another type is false.
                        return Value::Bool(false);
                    };
                    Value::Bool(match op {
                        B::Eq => ord.is_eq(),
                        B::NotEq => ord.is_ne(),
                        B::Lt => ord.is_lt(),
                        B::LtEq => ord.is_le(),
                        B::Gt => ord.is_gt(),
                        B::GtEq => ord.is_ge(),
                        _ => false,
                    })
                }
            }
        }
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths() {
        let v = json!({"a": {"b": [10, {"c": "x"}]}});
        assert_eq!(Path::parse("$.a.b[0]").unwrap().get(&v), Some(&json!(10)));
        assert_eq!(
            Path::parse("$.a.b[1].c").unwrap().get(&v),
            Some(&json!("x"))
        );
        assert_eq!(Path::parse("$.nope").unwrap().get(&v), None);
        for bad in ["a.b", "$", "$..a", "$.a[x]", "$a"] {
            assert!(Path::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters() {
        let f =
            Filter::parse("amount > 10 AND (tier = 'gold' OR NOT vip) AND note IS NULL").unwrap();
        assert!(f.matches(&json!({"amount": 11, "tier": "gold", "vip": true})));
        assert!(f.matches(&json!({"amount": 11, "tier": "silver", "vip": false})));
        assert!(!f.matches(&json!({"amount": 9, "tier": "gold"})));
        assert!(!f.matches(&json!({"amount": 11, "tier": "gold", "note": "x"})));
        assert!(
            !f.matches(&json!({"tier": "gold"})),
            "missing field compares false"
        );
        let f = Filter::parse("customer.region = 'eu' AND amount >= -5").unwrap();
        assert!(f.matches(&json!({"customer": {"region": "eu"}, "amount": -5})));
        assert!(Filter::parse("amount LIKE 'x%'").is_err());
        assert!(Filter::parse("f(x) > 1").is_err());
        assert!(Filter::parse("amount >").is_err());
    }
}
