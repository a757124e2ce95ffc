//! Permission policy documents: parsing, validation, canonical form and statement matching.
//!
//! Invariants: a [`PolicyDocument`] only exists validated (every action, resource and condition value
//! checked), so evaluation never fails; its canonical JSON is at most [`MAX_POLICY_BYTES`] long and
//! parses back to an equal document.

use serde_json::{Map, Value};

use crate::condition::Conditions;
use crate::error::{PolicyError, json_type};
use crate::pattern::{ActionPattern, ResourcePattern};
use crate::{AuthRequest, MAX_POLICY_BYTES};

/// Raw text above this size is rejected before JSON parsing. It is larger than [`MAX_POLICY_BYTES`]
/// because the limit applies to the canonical (whitespace-free) form, and a pretty-printed document
/// that fits may be a few times longer as written.
const MAX_RAW_BYTES: usize = 64 * 1024;

/// `Allow` or `Deny`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Effect::Allow => "Allow",
            Effect::Deny => "Deny",
        }
    }
}

/// A list written either as one string or as an array; the shape is kept for the canonical form.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct List<T> {
    pub(crate) items: Vec<T>,
    pub(crate) many: bool,
}

/// One statement of a permission policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Statement {
    pub(crate) effect: Effect,
    actions: List<ActionPattern>,
    resources: List<ResourcePattern>,
    conditions: Conditions,
}

impl Statement {
    /// Does this statement apply to the request (action, resource and every condition)?
    pub(crate) fn applies(&self, req: &AuthRequest<'_>) -> bool {
        self.actions.items.iter().any(|a| a.matches(req.action))
            && self.resources.items.iter().any(|r| r.matches(req.resource))
            && self.conditions.hold(req.context)
    }
}

/// A parsed and validated permission policy (`Version` "1"). Build one with [`PolicyDocument::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDocument {
    pub(crate) statements: Vec<Statement>,
}

impl PolicyDocument {
    /// Parses and validates a policy document: `{"Version":"1","Statement":[{"Effect","Action","Resource",
    /// "Condition"?}, …]}`. `NotAction`, `NotResource`, `Principal` and unknown fields are rejected.
    ///
    /// Errors: a [`PolicyError`] whose text is the `MalformedPolicyDocument` message: it names the
    /// statement index and field that is wrong and says what a valid value looks like.
    pub fn parse(json: &str) -> Result<PolicyDocument, PolicyError> {
        let statements = parse_statements(json, |index, obj| {
            for key in obj.keys() {
                match key.as_str() {
                    "Effect" | "Action" | "Resource" | "Condition" => {}
                    "NotAction" | "NotResource" => {
                        return Err(PolicyError::statement(
                            index,
                            key,
                            "is not supported; list the actions/resources to allow or deny in Action/Resource",
                        ));
                    }
                    "Principal" => {
                        return Err(PolicyError::statement(
                            index,
                            key,
                            "belongs in a role's trust policy (AssumeRolePolicyDocument), not in a permission policy",
                        ));
                    }
                    other => {
                        return Err(unknown_field(
                            index,
                            other,
                            "Effect, Action, Resource, Condition",
                        ));
                    }
                }
            }
            Ok(Statement {
                effect: parse_effect(obj, index)?,
                actions: string_list(obj, index, "Action", ActionPattern::parse)?,
                resources: string_list(obj, index, "Resource", ResourcePattern::parse)?,
                conditions: optional_conditions(obj, index)?,
            })
        })?;
        let doc = PolicyDocument { statements };
        check_size(&doc.to_json())?;
        Ok(doc)
    }

    /// The document re-serialized canonically: no whitespace, fields in the order Version, Statement and
    /// Effect, Action, Resource, Condition; single values stay single and lists stay lists, as written.
    /// Parsing the result gives an equal document.
    pub fn to_json(&self) -> String {
        write_statements(&self.statements, |out, st| {
            write_head(out, st.effect, &st.actions, |a| &a.text);
            out.push_str(",\"Resource\":");
            write_list(out, &st.resources, |r| &r.text);
            write_conditions(out, &st.conditions);
        })
    }
}

/// Writes the canonical form shared by permission and trust policies: `{"Version":"1","Statement":[…]}`
/// with each statement's fields written by `fields` between its braces.
pub(crate) fn write_statements<S>(statements: &[S], fields: impl Fn(&mut String, &S)) -> String {
    let mut out = String::from("{\"Version\":\"1\",\"Statement\":[");
    for (i, st) in statements.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        fields(&mut out, st);
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// Writes the first fields of every statement: `"Effect":…,"Action":…`.
pub(crate) fn write_head<T>(
    out: &mut String,
    effect: Effect,
    actions: &List<T>,
    text: impl Fn(&T) -> &String,
) {
    out.push_str("\"Effect\":");
    write_str(out, effect.name());
    out.push_str(",\"Action\":");
    write_list(out, actions, text);
}

/// Writes `,"Condition":…` when a statement has conditions (the field is left out otherwise).
pub(crate) fn write_conditions(out: &mut String, conditions: &Conditions) {
    if !conditions.is_empty() {
        out.push_str(",\"Condition\":");
        conditions.write_json(out);
    }
}

/// Appends `s` as a JSON string literal.
pub(crate) fn write_str(out: &mut String, s: &str) {
    out.push_str(&Value::String(s.to_owned()).to_string());
}

pub(crate) fn write_list<T>(out: &mut String, list: &List<T>, text: impl Fn(&T) -> &String) {
    if list.many {
        out.push('[');
        for (i, item) in list.items.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_str(out, text(item));
        }
        out.push(']');
    } else if let Some(item) = list.items.first() {
        write_str(out, text(item));
    }
}

pub(crate) fn check_size(canonical: &str) -> Result<(), PolicyError> {
    if canonical.len() > MAX_POLICY_BYTES {
        return Err(PolicyError::TooLarge {
            size: canonical.len(),
            limit: MAX_POLICY_BYTES,
        });
    }
    Ok(())
}

/// Checks the envelope shared by permission and trust policies and returns the statements:
/// size, JSON, a top-level object with exactly `Version` "1" and a non-empty `Statement` array.
fn parse_root(json: &str) -> Result<Vec<Value>, PolicyError> {
    if json.len() > MAX_RAW_BYTES {
        return Err(PolicyError::TooLarge {
            size: json.len(),
            limit: MAX_POLICY_BYTES,
        });
    }
    let root: Value = serde_json::from_str(json).map_err(|e| PolicyError::Json {
        detail: e.to_string(),
    })?;
    let Value::Object(mut root) = root else {
        return Err(PolicyError::document(
            "(document)",
            format!(
                "must be a JSON object {{\"Version\": \"1\", \"Statement\": [...]}}, got {}",
                json_type(&root)
            ),
        ));
    };
    if let Some(other) = root.keys().find(|k| *k != "Version" && *k != "Statement") {
        return Err(PolicyError::document(
            other,
            "unknown top-level field; a policy has only \"Version\" and \"Statement\" (names are case-sensitive)",
        ));
    }
    match root.get("Version") {
        Some(Value::String(v)) if v == "1" => {}
        Some(v) => {
            return Err(PolicyError::document(
                "Version",
                format!("must be the string \"1\", got {v}"),
            ));
        }
        None => {
            return Err(PolicyError::document(
                "Version",
                "is missing; add \"Version\": \"1\"",
            ));
        }
    }
    match root.remove("Statement") {
        Some(Value::Array(s)) if s.is_empty() => Err(PolicyError::document(
            "Statement",
            "is empty; add at least one statement",
        )),
        Some(Value::Array(s)) => Ok(s),
        Some(v) => Err(PolicyError::document(
            "Statement",
            format!("must be an array of statements, got {}", json_type(&v)),
        )),
        None => Err(PolicyError::document(
            "Statement",
            "is missing; add \"Statement\": [{\"Effect\": ..., \"Action\": ..., \"Resource\": ...}]",
        )),
    }
}

/// Parses the statements of a permission or trust policy: the shared envelope ([`parse_root`]), then
/// each statement, which must be an object, by `statement` with its index.
pub(crate) fn parse_statements<S>(
    json: &str,
    statement: impl Fn(usize, &Map<String, Value>) -> Result<S, PolicyError>,
) -> Result<Vec<S>, PolicyError> {
    let statements = parse_root(json)?;
    let mut out = Vec::with_capacity(statements.len());
    for (index, st) in statements.iter().enumerate() {
        out.push(statement(index, statement_object(st, index)?)?);
    }
    Ok(out)
}

/// A statement's optional `Condition` block; none means no conditions.
pub(crate) fn optional_conditions(
    obj: &Map<String, Value>,
    index: usize,
) -> Result<Conditions, PolicyError> {
    match obj.get("Condition") {
        Some(c) => Conditions::parse(c, index),
        None => Ok(Conditions::default()),
    }
}

fn statement_object(v: &Value, index: usize) -> Result<&Map<String, Value>, PolicyError> {
    match v {
        Value::Object(o) => Ok(o),
        other => Err(PolicyError::statement(
            index,
            "(statement)",
            format!("must be an object, got {}", json_type(other)),
        )),
    }
}

pub(crate) fn unknown_field(index: usize, field: &str, allowed: &str) -> PolicyError {
    PolicyError::statement(
        index,
        field,
        format!("unknown field; a statement here has only {allowed} (names are case-sensitive)"),
    )
}

pub(crate) fn parse_effect(obj: &Map<String, Value>, index: usize) -> Result<Effect, PolicyError> {
    match obj.get("Effect") {
        Some(Value::String(s)) if s == "Allow" => Ok(Effect::Allow),
        Some(Value::String(s)) if s == "Deny" => Ok(Effect::Deny),
        Some(v) => Err(PolicyError::statement(
            index,
            "Effect",
            format!("must be \"Allow\" or \"Deny\" (case-sensitive), got {v}"),
        )),
        None => Err(PolicyError::statement(
            index,
            "Effect",
            "is missing; add \"Effect\": \"Allow\" or \"Deny\"",
        )),
    }
}

/// A required field holding one string or a non-empty array of strings, each checked by `item`.
pub(crate) fn string_list<T>(
    obj: &Map<String, Value>,
    index: usize,
    field: &str,
    item: impl Fn(&str) -> Result<T, String>,
) -> Result<List<T>, PolicyError> {
    let (values, many): (Vec<&Value>, bool) = match obj.get(field) {
        None => {
            return Err(PolicyError::statement(
                index,
                field,
                "is missing; give a string or an array of strings",
            ));
        }
        Some(Value::Array(a)) if a.is_empty() => {
            return Err(PolicyError::statement(
                index,
                field,
                "is an empty array; give at least one value",
            ));
        }
        Some(Value::Array(a)) => (a.iter().collect(), true),
        Some(v) => (vec![v], false),
    };
    let mut items = Vec::with_capacity(values.len());
    for (i, v) in values.into_iter().enumerate() {
        let at = if many {
            format!("{field}[{i}]")
        } else {
            field.to_owned()
        };
        let Value::String(s) = v else {
            return Err(PolicyError::statement(
                index,
                at,
                format!("must be a string, got {}", json_type(v)),
            ));
        };
        items.push(item(s).map_err(|problem| PolicyError::statement(index, at, problem))?);
    }
    Ok(List { items, many })
}
