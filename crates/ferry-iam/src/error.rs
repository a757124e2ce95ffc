//! The one error type of this crate: why a policy document (or trust policy) was rejected.
//!
//! Invariant: every message names the place that is wrong (`Statement[2].Condition.IpAddress...`) and what a
//! valid value looks like, because it is returned verbatim as the `MalformedPolicyDocument` message.

/// Why a policy document or trust policy was rejected. `to_string()` is the user-facing message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not JSON at all. `detail` is the JSON parser's account (with line and column).
    #[error("the policy document is not valid JSON ({detail}); check quotes, commas and brackets")]
    Json {
        /// What the JSON parser reported.
        detail: String,
    },
    /// The document is longer than Alibaba's limit.
    #[error(
        "the policy document is {size} bytes; the limit is {limit} bytes (whitespace not counted): \
         split it into several policies"
    )]
    TooLarge {
        /// Size of the document (its canonical form when it could be parsed, else the raw text).
        size: usize,
        /// The limit, [`crate::MAX_POLICY_BYTES`].
        limit: usize,
    },
    /// Something outside the statements is wrong (`Version`, `Statement` itself, unknown top-level fields).
    #[error("{field}: {problem}")]
    Document {
        /// The top-level field, e.g. `Version`.
        field: String,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// One statement is wrong.
    #[error("Statement[{index}].{field}: {problem}")]
    Statement {
        /// 0-based index of the statement in the `Statement` array.
        index: usize,
        /// Path of the offending field inside the statement, e.g. `Action[1]` or
        /// `Condition.IpAddress.acs:SourceIp[0]`.
        field: String,
        /// What is wrong and what is expected.
        problem: String,
    },
}

impl PolicyError {
    pub(crate) fn document(field: &str, problem: impl Into<String>) -> PolicyError {
        PolicyError::Document {
            field: field.to_owned(),
            problem: problem.into(),
        }
    }

    pub(crate) fn statement(
        index: usize,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> PolicyError {
        PolicyError::Statement {
            index,
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A short description of a JSON value's type, for messages ("got a number").
pub(crate) fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
