//! JSON paths (`$.a.b`, `$.items[0]`), WHERE filters and scalar expressions (SQL
//! expressions parsed by sqlparser: fields, literals, comparisons, `AND`/`OR`/
//! `NOT`, `IS [NOT] NULL`, arithmetic and `||`) evaluated against a record's JSON
//! value.

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
        Filter::parse_in(sql, None)
    }

    /// Parses a SQL boolean expression in which `alias.x` means the field `x`
    /// (see [`unqualify`]).
    pub(crate) fn parse_in(sql: &str, alias: Option<&str>) -> Result<Filter, Error> {
        let mut expr = parse_expr(sql, "filter")?;
        if let Some(a) = alias {
            unqualify(&mut expr, a);
        }
        Filter::from_expr(expr)
    }

    /// Wraps an expression sqlparser already parsed.
    pub fn from_expr(expr: Expr) -> Result<Filter, Error> {
        let f = Filter { expr };
        f.check(&f.expr)?;
        Ok(f)
    }

    fn check(&self, e: &Expr) -> Result<(), Error> {
        check(e, "filter")
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

/// Checks that `e` uses only what [`eval`] supports; `what` names it in errors.
fn check(e: &Expr, what: &str) -> Result<(), Error> {
    match e {
        Expr::BinaryOp { left, op, right } => {
            use BinaryOperator as B;
            if !matches!(
                op,
                B::And
                    | B::Or
                    | B::Eq
                    | B::NotEq
                    | B::Lt
                    | B::LtEq
                    | B::Gt
                    | B::GtEq
                    | B::Plus
                    | B::Minus
                    | B::Multiply
                    | B::Divide
                    | B::Modulo
                    | B::StringConcat
            ) {
                return Err(Error::Invalid(format!(
                    "{what}: operator {op} is not supported"
                )));
            }
            check(left, what)?;
            check(right, what)
        }
        Expr::UnaryOp {
            op: UnaryOperator::Not | UnaryOperator::Minus,
            expr,
        }
        | Expr::Nested(expr) => check(expr, what),
        Expr::IsNull(e) | Expr::IsNotNull(e) => check(e, what),
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::Value(_) => Ok(()),
        other => Err(Error::Invalid(format!(
            "{what}: `{other}` is not supported"
        ))),
    }
}

/// A scalar SQL expression over a record's value: `amount * 100`,
/// `first || ' ' || last`, `customer.id`.
#[derive(Debug, Clone)]
pub struct Scalar {
    expr: Expr,
}

/// Rewrites `alias.a.b` to `a.b` throughout `expr`: names qualified with the
/// stream's own alias (in a join) are its record's fields.
pub(crate) fn unqualify(expr: &mut Expr, alias: &str) {
    use std::ops::ControlFlow;
    let _ = sqlparser::ast::visit_expressions_mut(expr, |e| {
        if let Expr::CompoundIdentifier(parts) = e
            && parts.len() >= 2
            && parts[0].value == alias
        {
            *e = match parts.len() {
                2 => Expr::Identifier(parts[1].clone()),
                _ => Expr::CompoundIdentifier(parts[1..].to_vec()),
            };
        }
        ControlFlow::<()>::Continue(())
    });
}

fn parse_expr(sql: &str, what: &str) -> Result<Expr, Error> {
    Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| Error::Invalid(format!("{what}: {e}")))
}

impl Scalar {
    /// Parses and checks a SQL expression.
    pub fn parse(sql: &str) -> Result<Scalar, Error> {
        Scalar::from_expr(parse_expr(sql, "expression")?)
    }

    /// Parses a SQL expression in which `alias.x` means the field `x` (see
    /// [`unqualify`]).
    pub(crate) fn parse_in(sql: &str, alias: Option<&str>) -> Result<Scalar, Error> {
        let mut expr = parse_expr(sql, "expression")?;
        if let Some(a) = alias {
            unqualify(&mut expr, a);
        }
        Scalar::from_expr(expr)
    }

    /// Wraps an expression sqlparser already parsed.
    pub fn from_expr(expr: Expr) -> Result<Scalar, Error> {
        check(&expr, "expression")?;
        Ok(Scalar { expr })
    }

    /// Its value for a record's value (null where a field is missing or an
    /// operation does not apply).
    pub fn eval(&self, v: &Value) -> Value {
        eval(&self.expr, v)
    }

    /// The expression as SQL text.
    pub fn sql(&self) -> String {
        self.expr.to_string()
    }
}

/// A number as JSON: whole numbers as integers.
pub(crate) fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
        Value::from(f as i64)
    } else {
        serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// A JSON scalar as a key (or as text): strings, numbers and booleans.
pub(crate) fn key_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Arithmetic and concatenation; null when an operand does not fit.
fn arithmetic(op: &BinaryOperator, l: &Value, r: &Value) -> Value {
    use BinaryOperator as B;
    if let B::StringConcat = op {
        return match (key_string(l), key_string(r)) {
            (Some(a), Some(b)) => Value::String(a + &b),
            _ => Value::Null,
        };
    }
    let (Some(a), Some(b)) = (l.as_f64(), r.as_f64()) else {
        return Value::Null;
    };
    let x = match op {
        B::Plus => a + b,
        B::Minus => a - b,
        B::Multiply => a * b,
        B::Divide if b != 0.0 => a / b,
        B::Modulo if b != 0.0 => a % b,
        _ => return Value::Null,
    };
    number(x)
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
                B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo | B::StringConcat => {
                    arithmetic(op, &eval(left, record), &eval(right, record))
                }
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
        let f = Filter::parse("price * qty > 100 AND first || last = 'ab'").unwrap();
        assert!(f.matches(&json!({"price": 20, "qty": 6, "first": "a", "last": "b"})));
        assert!(!f.matches(&json!({"price": 20, "qty": 5, "first": "a", "last": "b"})));
        assert!(Filter::parse("amount LIKE 'x%'").is_err());
        assert!(Filter::parse("f(x) > 1").is_err());
        assert!(Filter::parse("amount >").is_err());
    }

    #[test]
    fn scalars() {
        let v = json!({"amount": 12.5, "qty": 4, "first": "Ada", "last": "L", "c": {"id": 7}});
        let e = |sql: &str| Scalar::parse(sql).unwrap().eval(&v);
        assert_eq!(e("amount * 100"), json!(1250));
        assert_eq!(e("amount / 2"), json!(6.25));
        assert_eq!(e("qty % 3 + -1"), json!(0));
        assert_eq!(e("first || ' ' || last"), json!("Ada L"));
        assert_eq!(e("c.id"), json!(7));
        assert_eq!(e("qty / 0"), Value::Null);
        assert_eq!(e("nope + 1"), Value::Null);
        assert_eq!(e("qty > 3"), json!(true));
        assert!(Scalar::parse("f(x)").is_err());
        assert!(Scalar::parse("a >> 2").is_err());
    }
}
