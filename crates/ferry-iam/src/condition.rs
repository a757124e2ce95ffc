//! The `Condition` element: operators, typed values, condition keys and their evaluation.
//!
//! Semantics (reference §3.2, and what Alibaba RAM documents):
//! * Several values for one key: the key matches if **any** value matches (OR). When the request carries
//!   several values for a key (only possible through `RequestContext::extra`), any pair may match.
//! * Several keys under one operator must **all** match (AND); several operators in a block must all match.
//! * Negated operators (`StringNotEquals`, `StringNotEqualsIgnoreCase`, `StringNotLike`, `NumericNotEquals`,
//!   `DateNotEquals`, `NotIpAddress`) are the exact negation of their positive twin: true when **no** value
//!   matches. Hence a key absent from the request makes every positive operator false and every negated
//!   operator true. A request value that cannot be read as the operator's type (a non-number for
//!   `Numeric*`) matches nothing, so it too makes positive operators false and negated ones true.
//! * Condition keys compare case-insensitively (`acs:sourceip` is `acs:SourceIp`); operator names are
//!   exact. Policy values are type-checked when the document is parsed, so evaluation cannot fail.

use std::net::IpAddr;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::RequestContext;
use crate::error::{PolicyError, json_type};
use crate::pattern::glob;

/// Every condition operator of the policy language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Operator {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    IpAddress,
    NotIpAddress,
}

/// The type of value an operator compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    String,
    Numeric,
    Date,
    Bool,
    Ip,
}

impl Operator {
    const ALL: [Operator; 21] = [
        Operator::StringEquals,
        Operator::StringNotEquals,
        Operator::StringEqualsIgnoreCase,
        Operator::StringNotEqualsIgnoreCase,
        Operator::StringLike,
        Operator::StringNotLike,
        Operator::NumericEquals,
        Operator::NumericNotEquals,
        Operator::NumericLessThan,
        Operator::NumericLessThanEquals,
        Operator::NumericGreaterThan,
        Operator::NumericGreaterThanEquals,
        Operator::DateEquals,
        Operator::DateNotEquals,
        Operator::DateLessThan,
        Operator::DateLessThanEquals,
        Operator::DateGreaterThan,
        Operator::DateGreaterThanEquals,
        Operator::Bool,
        Operator::IpAddress,
        Operator::NotIpAddress,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Operator::StringEquals => "StringEquals",
            Operator::StringNotEquals => "StringNotEquals",
            Operator::StringEqualsIgnoreCase => "StringEqualsIgnoreCase",
            Operator::StringNotEqualsIgnoreCase => "StringNotEqualsIgnoreCase",
            Operator::StringLike => "StringLike",
            Operator::StringNotLike => "StringNotLike",
            Operator::NumericEquals => "NumericEquals",
            Operator::NumericNotEquals => "NumericNotEquals",
            Operator::NumericLessThan => "NumericLessThan",
            Operator::NumericLessThanEquals => "NumericLessThanEquals",
            Operator::NumericGreaterThan => "NumericGreaterThan",
            Operator::NumericGreaterThanEquals => "NumericGreaterThanEquals",
            Operator::DateEquals => "DateEquals",
            Operator::DateNotEquals => "DateNotEquals",
            Operator::DateLessThan => "DateLessThan",
            Operator::DateLessThanEquals => "DateLessThanEquals",
            Operator::DateGreaterThan => "DateGreaterThan",
            Operator::DateGreaterThanEquals => "DateGreaterThanEquals",
            Operator::Bool => "Bool",
            Operator::IpAddress => "IpAddress",
            Operator::NotIpAddress => "NotIpAddress",
        }
    }

    fn from_name(name: &str) -> Option<Operator> {
        Operator::ALL.into_iter().find(|op| op.name() == name)
    }

    fn kind(self) -> Kind {
        use Operator::*;
        match self {
            StringEquals
            | StringNotEquals
            | StringEqualsIgnoreCase
            | StringNotEqualsIgnoreCase
            | StringLike
            | StringNotLike => Kind::String,
            NumericEquals
            | NumericNotEquals
            | NumericLessThan
            | NumericLessThanEquals
            | NumericGreaterThan
            | NumericGreaterThanEquals => Kind::Numeric,
            DateEquals
            | DateNotEquals
            | DateLessThan
            | DateLessThanEquals
            | DateGreaterThan
            | DateGreaterThanEquals => Kind::Date,
            Bool => Kind::Bool,
            IpAddress | NotIpAddress => Kind::Ip,
        }
    }

    /// Negated operators are evaluated as `!positive_twin`.
    fn negated(self) -> bool {
        matches!(
            self,
            Operator::StringNotEquals
                | Operator::StringNotEqualsIgnoreCase
                | Operator::StringNotLike
                | Operator::NumericNotEquals
                | Operator::DateNotEquals
                | Operator::NotIpAddress
        )
    }

    fn expected(self) -> &'static str {
        match self.kind() {
            Kind::String => "a string",
            Kind::Numeric => "a number (or a string holding one)",
            Kind::Date => {
                "an ISO-8601 time such as \"2025-01-31T18:00:00Z\" or \"2025-01-31T18:00:00+08:00\", \
                 a date \"2025-01-31\" (UTC midnight), or unix seconds"
            }
            Kind::Bool => "true or false (a boolean or the string \"true\"/\"false\")",
            Kind::Ip => "an IP address or CIDR block, e.g. \"192.168.0.0/16\" or \"2001:db8::/32\"",
        }
    }
}

/// A number as compared by `Numeric*`: integers exactly, anything else as a finite float.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn parse(s: &str) -> Option<Num> {
        if let Ok(i) = s.parse::<i64>() {
            return Some(Num::Int(i));
        }
        // Rust's float parser accepts "NaN" and "inf"; they are not numbers a policy can mean.
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Num::Float)
    }

    fn from_json(v: &Value) -> Option<Num> {
        match v {
            Value::Number(n) => match n.as_i64() {
                Some(i) => Some(Num::Int(i)),
                None => n.as_f64().filter(|f| f.is_finite()).map(Num::Float),
            },
            Value::String(s) => Num::parse(s),
            _ => None,
        }
    }

    fn cmp(self, other: Num) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            // Precision loss above 2^53 only affects int-vs-float comparisons, which are inexact anyway.
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }
}

/// Parses a time as unix nanoseconds: unix seconds, RFC 3339 / ISO-8601 with offset, ISO-8601 date-time
/// without offset (taken as UTC), or a bare date (UTC midnight).
fn parse_date(s: &str) -> Option<i128> {
    if let Ok(secs) = s.parse::<i64>() {
        return Some(i128::from(secs) * 1_000_000_000);
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp_nanos());
    }
    let no_offset =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    if let Ok(t) = time::PrimitiveDateTime::parse(s, &no_offset) {
        return Some(t.assume_utc().unix_timestamp_nanos());
    }
    let date_only = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(d) = time::Date::parse(s, &date_only) {
        return Some(d.midnight().assume_utc().unix_timestamp_nanos());
    }
    None
}

/// An IPv4 or IPv6 network; a plain address is a network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    fn parse(s: &str) -> Option<IpNet> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => {
                // Only plain decimal digits: `u8::from_str` would also take a leading '+'.
                if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?)
            }
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(IpNet { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        // A v4 client seen through a dual-stack socket arrives as ::ffff:a.b.c.d; compare it as v4.
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A policy value, already converted to the operator's type.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Text(String),
    Number(Num),
    Time(i128),
    Bool(bool),
    Net(IpNet),
}

/// One key under one operator, with its values.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    key: String,
    key_lower: String,
    operands: Vec<Operand>,
    /// The values as written, for re-serialization (their JSON types are kept).
    raw: Vec<Value>,
    /// Written as an array (kept so that the canonical form keeps the author's shape).
    many: bool,
}

/// One operator and its keys.
#[derive(Debug, Clone, PartialEq)]
struct Block {
    op: Operator,
    entries: Vec<Entry>,
}

/// A statement's `Condition` element (empty when the statement has none).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Conditions {
    blocks: Vec<Block>,
}

impl Conditions {
    /// Parses and type-checks a `Condition` element of statement `index`.
    pub(crate) fn parse(v: &Value, index: usize) -> Result<Conditions, PolicyError> {
        let Value::Object(ops) = v else {
            return Err(PolicyError::statement(
                index,
                "Condition",
                format!(
                    "must be an object {{\"<Operator>\": {{\"<key>\": <value or values>}}}}, got {}",
                    json_type(v)
                ),
            ));
        };
        let mut blocks = Vec::with_capacity(ops.len());
        for (op_name, keys) in ops {
            let op = Operator::from_name(op_name).ok_or_else(|| {
                let known: Vec<&str> = Operator::ALL.iter().map(|o| o.name()).collect();
                PolicyError::statement(
                    index,
                    format!("Condition.{op_name}"),
                    format!(
                        "unknown condition operator (names are case-sensitive); use one of {}",
                        known.join(", ")
                    ),
                )
            })?;
            let field = format!("Condition.{op_name}");
            let Value::Object(keys) = keys else {
                return Err(PolicyError::statement(
                    index,
                    field,
                    format!(
                        "must be an object {{\"<key>\": <value or values>}}, got {}",
                        json_type(keys)
                    ),
                ));
            };
            if keys.is_empty() {
                return Err(PolicyError::statement(
                    index,
                    field,
                    "names no condition key; add one such as \"acs:SourceIp\" or remove the operator",
                ));
            }
            let mut entries = Vec::with_capacity(keys.len());
            for (key, values) in keys {
                entries.push(Entry::parse(op, key, values, index, &field)?);
            }
            blocks.push(Block { op, entries });
        }
        Ok(Conditions { blocks })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Do all conditions hold for this request?
    pub(crate) fn hold(&self, ctx: &RequestContext) -> bool {
        self.blocks
            .iter()
            .all(|b| b.entries.iter().all(|e| e.holds(b.op, ctx)))
    }

    /// Appends the canonical JSON of the `Condition` object.
    pub(crate) fn write_json(&self, out: &mut String) {
        out.push('{');
        for (i, b) in self.blocks.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            crate::policy::write_str(out, b.op.name());
            out.push_str(":{");
            for (j, e) in b.entries.iter().enumerate() {
                if j > 0 {
                    out.push(',');
                }
                crate::policy::write_str(out, &e.key);
                out.push(':');
                let vals: Vec<String> = e.raw.iter().map(Value::to_string).collect();
                if e.many {
                    out.push('[');
                    out.push_str(&vals.join(","));
                    out.push(']');
                } else {
                    out.push_str(&vals.join(","));
                }
            }
            out.push('}');
        }
        out.push('}');
    }
}

impl Entry {
    fn parse(
        op: Operator,
        key: &str,
        values: &Value,
        index: usize,
        op_field: &str,
    ) -> Result<Entry, PolicyError> {
        let field = format!("{op_field}.{key}");
        if key.is_empty() {
            return Err(PolicyError::statement(
                index,
                field,
                "the condition key is empty; use a key such as \"acs:SourceIp\" or \"acs:ResourceTag/<tag>\"",
            ));
        }
        let (raw, many): (Vec<Value>, bool) = match values {
            Value::Array(a) if a.is_empty() => {
                return Err(PolicyError::statement(
                    index,
                    field,
                    format!("has no values; give {}", op.expected()),
                ));
            }
            Value::Array(a) => (a.clone(), true),
            v => (vec![v.clone()], false),
        };
        let mut operands = Vec::with_capacity(raw.len());
        for (i, v) in raw.iter().enumerate() {
            let at = if many {
                format!("{field}[{i}]")
            } else {
                field.clone()
            };
            let bad = || {
                PolicyError::statement(
                    index,
                    at.clone(),
                    format!("{} needs {}, got {}", op.name(), op.expected(), show(v)),
                )
            };
            let operand = match (op.kind(), v) {
                (Kind::String, Value::String(s)) => Operand::Text(s.clone()),
                (Kind::Numeric, v) => Operand::Number(Num::from_json(v).ok_or_else(bad)?),
                (Kind::Date, Value::String(s)) => Operand::Time(parse_date(s).ok_or_else(bad)?),
                (Kind::Date, Value::Number(n)) => {
                    Operand::Time(i128::from(n.as_i64().ok_or_else(bad)?) * 1_000_000_000)
                }
                (Kind::Bool, Value::Bool(b)) => Operand::Bool(*b),
                (Kind::Bool, Value::String(s)) => Operand::Bool(parse_bool(s).ok_or_else(bad)?),
                (Kind::Ip, Value::String(s)) => Operand::Net(IpNet::parse(s).ok_or_else(bad)?),
                _ => return Err(bad()),
            };
            operands.push(operand);
        }
        Ok(Entry {
            key: key.to_owned(),
            key_lower: key.to_lowercase(),
            operands,
            raw,
            many,
        })
    }

    fn holds(&self, op: Operator, ctx: &RequestContext) -> bool {
        let positive = match context_values(ctx, &self.key_lower) {
            None => false,
            Some(actual) => actual
                .iter()
                .any(|a| self.operands.iter().any(|p| compare(op, p, a))),
        };
        positive != op.negated()
    }
}

/// A value for an error message: strings quoted, others as JSON, long ones cut.
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!(
            "{}… ({})",
            s.chars().take(80).collect::<String>(),
            json_type(v)
        )
    } else {
        format!("{s} ({})", json_type(v))
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Does the request value `actual` satisfy the positive form of `op` against policy value `policy`?
fn compare(op: Operator, policy: &Operand, actual: &str) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match (op, policy) {
        (Operator::StringEquals | Operator::StringNotEquals, Operand::Text(p)) => p == actual,
        (
            Operator::StringEqualsIgnoreCase | Operator::StringNotEqualsIgnoreCase,
            Operand::Text(p),
        ) => p.to_lowercase() == actual.to_lowercase(),
        (Operator::StringLike | Operator::StringNotLike, Operand::Text(p)) => glob(p, actual),
        (_, Operand::Number(p)) => {
            let Some(ord) = Num::parse(actual).and_then(|a| a.cmp(*p)) else {
                return false;
            };
            match op {
                Operator::NumericEquals | Operator::NumericNotEquals => ord == Equal,
                Operator::NumericLessThan => ord == Less,
                Operator::NumericLessThanEquals => ord != Greater,
                Operator::NumericGreaterThan => ord == Greater,
                Operator::NumericGreaterThanEquals => ord != Less,
                _ => false,
            }
        }
        (_, Operand::Time(p)) => {
            let Some(a) = parse_date(actual) else {
                return false;
            };
            match op {
                Operator::DateEquals | Operator::DateNotEquals => a == *p,
                Operator::DateLessThan => a < *p,
                Operator::DateLessThanEquals => a <= *p,
                Operator::DateGreaterThan => a > *p,
                Operator::DateGreaterThanEquals => a >= *p,
                _ => false,
            }
        }
        (Operator::Bool, Operand::Bool(p)) => parse_bool(actual) == Some(*p),
        (Operator::IpAddress | Operator::NotIpAddress, Operand::Net(net)) => {
            actual.parse::<IpAddr>().is_ok_and(|ip| net.contains(ip))
        }
        // Parsing pairs each operator with its operand type; other pairs cannot occur.
        _ => false,
    }
}

/// The request's values for a condition key (lower-cased), or `None` when the request has none.
///
/// The four global keys come from the typed fields of [`RequestContext`] and take precedence over an
/// `extra` entry of the same name; every other key is looked up in `extra`, ignoring case. An `extra` entry
/// with no values counts as absent.
fn context_values(ctx: &RequestContext, key_lower: &str) -> Option<Vec<String>> {
    match key_lower {
        "acs:currenttime" => Some(vec![
            OffsetDateTime::from_unix_timestamp(ctx.current_time)
                .ok()
                .and_then(|t| t.format(&Rfc3339).ok())
                .unwrap_or_else(|| ctx.current_time.to_string()),
        ]),
        "acs:securetransport" => Some(vec![ctx.secure_transport.to_string()]),
        "acs:mfapresent" => Some(vec![ctx.mfa_present.to_string()]),
        "acs:sourceip" => ctx.source_ip.map(|ip| vec![ip.to_canonical().to_string()]),
        _ => ctx
            .extra
            .iter()
            .find(|(k, v)| !v.is_empty() && k.to_lowercase() == key_lower)
            .map(|(_, v)| v.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_nets() {
        let n = IpNet::parse("10.0.0.0/8").expect("valid");
        assert!(n.contains("10.255.1.2".parse().expect("ip")));
        assert!(!n.contains("11.0.0.1".parse().expect("ip")));
        assert!(n.contains("::ffff:10.1.2.3".parse().expect("ip")));
        let all = IpNet::parse("0.0.0.0/0").expect("valid");
        assert!(all.contains("203.0.113.9".parse().expect("ip")));
        assert!(!all.contains("::1".parse().expect("ip")));
        let v6 = IpNet::parse("2001:db8::/32").expect("valid");
        assert!(v6.contains("2001:db8:1::5".parse().expect("ip")));
        assert!(!v6.contains("2001:db9::5".parse().expect("ip")));
        assert!(IpNet::parse("10.0.0.0/33").is_none());
        assert!(IpNet::parse("10.0.0.0/+8").is_none());
        assert!(IpNet::parse("10.0.0.0/").is_none());
        assert!(IpNet::parse("::/129").is_none());
        assert!(IpNet::parse("::/0").is_some());
        assert!(IpNet::parse("example.com").is_none());
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("0"), Some(0));
        assert_eq!(parse_date("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(parse_date("1970-01-01T08:00:01+08:00"), Some(1_000_000_000));
        assert_eq!(parse_date("1970-01-01T00:00:01"), Some(1_000_000_000));
        assert_eq!(parse_date("1970-01-02"), Some(86_400_000_000_000));
        assert_eq!(parse_date("yesterday"), None);
    }
}
