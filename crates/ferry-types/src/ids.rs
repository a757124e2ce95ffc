//! Typed resource IDs.
//!
//! Every resource has its own ID type so that a job ID cannot be passed where a source ID is expected.
//! The text form follows Alibaba Cloud's: a resource prefix (`s-`, `j-`, `at-`, `m-`, …), a two-letter
//! region code (`fe` for Ferry) and 18 lower-case alphanumerics.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// The text after the prefix: 2 region letters + 18 random characters.
const RANDOM_LEN: usize = 18;
const REGION_CODE: &str = "fe";
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Longest text after the prefix that parses (IDs from older servers or other tools may be longer than ours).
const MAX_SUFFIX_LEN: usize = 64;

/// An ID string that does not have the expected prefix or shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "{value:?} is not a valid {kind} ID: it should look like {prefix}fe… (check for a copy-paste mistake)"
)]
pub struct IdError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub value: String,
}

fn random_suffix() -> String {
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(REGION_CODE.len() + RANDOM_LEN);
    s.push_str(REGION_CODE);
    for _ in 0..RANDOM_LEN {
        s.push(ALPHABET[rng.gen_range(0..ALPHABET.len())] as char);
    }
    s
}

fn valid_suffix(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SUFFIX_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random ID.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_suffix()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                match s.strip_prefix($prefix) {
                    Some(rest) if valid_suffix(rest) => Ok(Self(s.to_owned())),
                    _ => Err(IdError { kind: $kind, prefix: $prefix, value: s.to_owned() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        // By hand, because the derive would describe the private field rather than the text form that
        // `FromStr` accepts; `id_schema` keeps the two in step.
        impl schemars::JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed(stringify!($name))
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                id_schema($prefix, $kind)
            }
        }
    };
}

/// The JSON schema of an ID with `prefix`: a string of the prefix and the suffix `valid_suffix` accepts.
fn id_schema(prefix: &str, kind: &str) -> schemars::Schema {
    let mut schema = serde_json::Map::new();
    schema.insert("type".into(), "string".into());
    schema.insert("pattern".into(), format!("^{prefix}[a-z0-9]+$").into());
    schema.insert("minLength".into(), (prefix.len() + 1).into());
    schema.insert("maxLength".into(), (prefix.len() + MAX_SUFFIX_LEN).into());
    schema.insert(
        "description".into(),
        format!(
            "A {kind} ID: `{prefix}` followed by lower-case letters and digits (`{prefix}fe…`)."
        )
        .into(),
    );
    schemars::Schema::from(schema)
}

id_type!(
    /// A registered source server (`s-…`).
    SourceId, "s-", "source server");
id_type!(
    /// A replication job (`j-…`).
    JobId, "j-", "replication job");
id_type!(
    /// One run (full or incremental sync) of a replication job (`r-…`); Ferry's own.
    RunId, "r-", "replication run");
id_type!(
    /// An activation code (`at-…`).
    AccessTokenId, "at-", "activation code");
id_type!(
    /// A point-in-time copy of one disk (`sp-…`; ECS uses `s-`, which SMC already uses for sources).
    SnapshotId, "sp-", "snapshot");
id_type!(
    /// An image (`m-…`).
    ImageId, "m-", "image");
id_type!(
    /// An asynchronous ECS task such as an export (`t-…`).
    TaskId, "t-", "task");
id_type!(
    /// An instance (`i-…`).
    InstanceId, "i-", "instance");
id_type!(
    /// A workgroup, i.e. a migration wave (`w-…`).
    WorkgroupId, "w-", "workgroup");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let id = JobId::generate();
        assert!(id.as_str().starts_with("j-fe"));
        assert_eq!(id.as_str().len(), 2 + 2 + RANDOM_LEN);
        assert_eq!(id.as_str().parse::<JobId>(), Ok(id.clone()));
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(serde_json::from_str::<JobId>(&json).ok(), Some(id));
    }

    #[test]
    fn wrong_prefix_or_shape_is_rejected() {
        assert!("s-fe123".parse::<JobId>().is_err());
        assert!("j-".parse::<JobId>().is_err());
        assert!("j-FE123".parse::<JobId>().is_err());
        assert!("j-fe12/../x".parse::<JobId>().is_err());
        let err = "x"
            .parse::<SourceId>()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("source server"), "{err}");
    }

    #[test]
    fn schema_bounds_are_the_parsers() {
        let mut generator = schemars::SchemaGenerator::default();
        let schema = <SnapshotId as schemars::JsonSchema>::json_schema(&mut generator).to_value();
        assert_eq!(schema["type"], "string");
        assert_eq!(schema["pattern"], "^sp-[a-z0-9]+$");
        let (Some(min), Some(max)) = (schema["minLength"].as_u64(), schema["maxLength"].as_u64())
        else {
            panic!("the ID schema has no length bounds: {schema}");
        };
        let id_of_len =
            |len: u64| format!("sp-{}", "a".repeat(len as usize - SnapshotId::PREFIX.len()));
        assert!(id_of_len(min).parse::<SnapshotId>().is_ok());
        assert!(id_of_len(max).parse::<SnapshotId>().is_ok());
        assert!(id_of_len(max + 1).parse::<SnapshotId>().is_err());
        assert!(
            SnapshotId::PREFIX.parse::<SnapshotId>().is_err(),
            "the prefix alone is below minLength"
        );
    }
}
