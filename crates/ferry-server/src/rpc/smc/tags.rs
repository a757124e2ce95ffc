//! Tags (`../shared/ref/smc-api.md` §2.8): TagResources, UntagResources and ListTagResources, plus the tag
//! helpers the other SMC actions share (parsing `Tag.N.*`, the `Tags.Tag[]` and `WorkgroupId` fields of
//! DescribeSourceServers and DescribeReplicationJobs, and their tag filters).
//!
//! Rules (SMC's and ECS's): at most 20 tags per resource and per request; a key is 1–128 characters, does
//! not start with `aliyun` or `acs:` and contains no `http://` or `https://`; a value is at most 128
//! characters (empty is fine). Filters match exactly and are ANDed; a filter value without a key is
//! `InvalidParameter.TagValue`.
//!
//! `NextToken` of ListTagResources is opaque to clients and versioned: `1.` + hex(resource ID) + `.` +
//! hex(tag key) of the last row returned; the next page starts strictly after that row. A token from a
//! future version is refused with `InvalidParameter` rather than misread.

use std::collections::{BTreeSet, HashMap, HashSet};

use ferry_api::{ApiError, Params, wrap_list};
use ferry_db::{TagFilter, TagSetOutcome};
use serde_json::{Value, json};

use crate::app::OrInternal;
use crate::rpc::{ActionResult, Call};

/// Most tags a resource may carry, and most `Tag.N` (or `TagKey.N`) in one request.
pub(super) const MAX_TAGS: usize = 20;
/// Most `ResourceId.N` in one request.
const MAX_RESOURCE_IDS: usize = 50;
/// Rows per ListTagResources page.
const PAGE: usize = 50;
const MAX_KEY_CHARS: usize = 128;
const MAX_VALUE_CHARS: usize = 128;
const TOKEN_VERSION: &str = "1";

/// The taggable resource types of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ResourceType {
    SourceServer,
    ReplicationJob,
}

impl ResourceType {
    /// The stored (and returned) form.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            ResourceType::SourceServer => "sourceserver",
            ResourceType::ReplicationJob => "replicationjob",
        }
    }

    /// `ResourceType`, case-insensitive.
    fn from_params(p: &Params) -> Result<Self, ApiError> {
        let Some(v) = p.get("ResourceType").filter(|v| !v.is_empty()) else {
            return Err(ApiError::new(
                "MissingParameter.ResourceType",
                400,
                "The parameter ResourceType is required: use sourceserver or replicationjob.",
            ));
        };
        if v.eq_ignore_ascii_case("sourceserver") {
            Ok(ResourceType::SourceServer)
        } else if v.eq_ignore_ascii_case("replicationjob") {
            Ok(ResourceType::ReplicationJob)
        } else {
            Err(ApiError::new(
                "InvalidResourceType.NotFound",
                400,
                format!(
                    "The resource type {v:?} does not exist: use sourceserver or replicationjob."
                ),
            ))
        }
    }

    async fn exists(self, c: &Call<'_>, id: &str) -> Result<bool, ApiError> {
        Ok(match self {
            ResourceType::SourceServer => c.st.db.source_get(id).await.or_internal()?.is_some(),
            ResourceType::ReplicationJob => c.st.db.job_get(id).await.or_internal()?.is_some(),
        })
    }
}

fn too_many_tags(what: &str) -> ApiError {
    ApiError::new(
        "NumberExceed.Tags",
        400,
        format!("{what}: a resource can have at most {MAX_TAGS} tags. Remove some tags first."),
    )
}

fn key_malformed(param: &str, why: &str) -> ApiError {
    ApiError::new(
        "InvalidTagKey.Malformed",
        400,
        format!("The specified {param} is not valid: {why}."),
    )
}

/// Checks a tag key against SMC's rules.
fn check_key(param: &str, key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(key_malformed(param, "a tag key cannot be empty"));
    }
    if key.chars().count() > MAX_KEY_CHARS {
        return Err(key_malformed(
            param,
            &format!("a tag key is at most {MAX_KEY_CHARS} characters long"),
        ));
    }
    let lower = key.to_ascii_lowercase();
    if lower.starts_with("aliyun") || lower.starts_with("acs:") {
        return Err(key_malformed(
            param,
            "a tag key cannot start with aliyun or acs: (reserved for the system)",
        ));
    }
    if lower.contains("http://") || lower.contains("https://") {
        return Err(key_malformed(
            param,
            "a tag key cannot contain http:// or https://",
        ));
    }
    Ok(())
}

/// `Tag.N.Key`/`Tag.N.Value` of a request that writes tags, validated: at most 20, keys by the rules,
/// values at most 128 characters (absent = empty), no key twice.
pub(super) fn parse_tags(p: &Params) -> Result<Vec<(String, String)>, ApiError> {
    let indices = p.indices("Tag");
    if indices.len() > MAX_TAGS {
        return Err(too_many_tags(&format!(
            "the request has {} tags",
            indices.len()
        )));
    }
    let mut out: Vec<(String, String)> = Vec::with_capacity(indices.len());
    for n in indices {
        let param = format!("Tag.{n}.Key");
        let key = p.get(&param).unwrap_or("");
        check_key(&param, key)?;
        let value = p.get(&format!("Tag.{n}.Value")).unwrap_or("");
        if value.chars().count() > MAX_VALUE_CHARS {
            return Err(ApiError::new(
                "InvalidTagValue.Malformed",
                400,
                format!(
                    "The specified Tag.{n}.Value is not valid: a tag value is at most {MAX_VALUE_CHARS} characters long."
                ),
            ));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(ApiError::new(
                "Duplicate.TagKey",
                400,
                format!("The tag key {key:?} is given twice: give each key once."),
            ));
        }
        out.push((key.to_owned(), value.to_owned()));
    }
    Ok(out)
}

/// `Tag.N.Key`/`Tag.N.Value` of a request that filters by tags: each key, with its exact value when
/// given. A value without a key is `InvalidParameter.TagValue`.
pub(super) fn parse_tag_filter(p: &Params) -> Result<Vec<TagFilter>, ApiError> {
    let indices = p.indices("Tag");
    if indices.len() > MAX_TAGS {
        return Err(too_many_tags(&format!(
            "the request filters by {} tags",
            indices.len()
        )));
    }
    let mut out = Vec::with_capacity(indices.len());
    for n in indices {
        let key = p.get(&format!("Tag.{n}.Key")).unwrap_or("");
        let value = p.get(&format!("Tag.{n}.Value"));
        if key.is_empty() {
            if value.is_some_and(|v| !v.is_empty()) {
                return Err(ApiError::new(
                    "InvalidParameter.TagValue",
                    400,
                    format!(
                        "Tag.{n}.Value is given without Tag.{n}.Key: a tag filter needs a key (the value is optional)."
                    ),
                ));
            }
            continue;
        }
        out.push(TagFilter {
            key: key.to_owned(),
            value: value.filter(|v| !v.is_empty()).map(str::to_owned),
        });
    }
    Ok(out)
}

/// `{"Tag":[{"Key","Value"}…]}`.
pub(super) fn tags_json(tags: Option<&Vec<(String, String)>>) -> Value {
    let items = tags
        .map(|t| {
            t.iter()
                .map(|(k, v)| json!({ "Key": k, "Value": v }))
                .collect()
        })
        .unwrap_or_default();
    wrap_list("Tag", items)
}

/// `ResourceId.N`: 1–50 distinct IDs of existing resources.
async fn resource_ids(
    c: &Call<'_>,
    rtype: ResourceType,
    required: bool,
) -> Result<Vec<String>, ApiError> {
    let ids = c.params.get_list("ResourceId");
    if ids.is_empty() && required {
        return Err(ApiError::missing_parameter("ResourceId.1"));
    }
    if ids.len() > MAX_RESOURCE_IDS {
        return Err(ApiError::new(
            "NumberExceed.ResourceIds",
            400,
            format!(
                "The request names {} resources: give at most {MAX_RESOURCE_IDS} ResourceId.N per call.",
                ids.len()
            ),
        ));
    }
    let mut seen = HashSet::new();
    for id in &ids {
        if !seen.insert(id.as_str()) {
            return Err(ApiError::new(
                "Duplicate.ResourceId",
                400,
                format!("The resource {id} is given twice: give each ResourceId.N once."),
            ));
        }
    }
    for id in &ids {
        if !rtype.exists(c, id).await? {
            return Err(ApiError::new(
                "InvalidResourceId.NotFound",
                400,
                format!(
                    "The {} {id} does not exist: check the ID (list them with DescribeSourceServers or DescribeReplicationJobs).",
                    rtype.as_str()
                ),
            ));
        }
    }
    Ok(ids)
}

/// Writes `tags` to the resources `ids` (all or none), mapping the limit to `NumberExceed.Tags`.
pub(super) async fn set_tags(
    c: &Call<'_>,
    resource_type: &str,
    ids: &[String],
    tags: &[(String, String)],
) -> Result<(), ApiError> {
    if tags.is_empty() {
        return Ok(());
    }
    match c
        .st
        .db
        .tag_set(resource_type, ids, tags, MAX_TAGS as i64)
        .await
        .or_internal()?
    {
        TagSetOutcome::Done => Ok(()),
        TagSetOutcome::TooMany { resource_id, count } => Err(too_many_tags(&format!(
            "{resource_id} would have {count} tags"
        ))),
    }
}

pub(super) async fn tag_resources(c: &Call<'_>) -> ActionResult {
    let rtype = ResourceType::from_params(c.params)?;
    let tags = parse_tags(c.params)?;
    if tags.is_empty() {
        return Err(ApiError::missing_parameter("Tag.1.Key"));
    }
    let ids = resource_ids(c, rtype, true).await?;
    set_tags(c, rtype.as_str(), &ids, &tags).await?;
    Ok(json!({}))
}

pub(super) async fn untag_resources(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let rtype = ResourceType::from_params(p)?;
    let keys = p.get_list("TagKey");
    if keys.len() > MAX_TAGS {
        return Err(too_many_tags(&format!(
            "the request names {} tag keys",
            keys.len()
        )));
    }
    let all = p.get_bool("All")?.unwrap_or(false);
    if all && !keys.is_empty() {
        return Err(ApiError::invalid_parameter(
            "All",
            "All=true removes every tag and cannot be combined with TagKey.N: give one or the other",
        ));
    }
    let ids = resource_ids(c, rtype, true).await?;
    if all {
        c.st.db
            .tag_remove_all(rtype.as_str(), &ids)
            .await
            .or_internal()?;
    } else {
        // Without TagKey.N and All, there is nothing to remove (as in ECS).
        c.st.db
            .tag_remove(rtype.as_str(), &ids, &keys)
            .await
            .or_internal()?;
    }
    Ok(json!({}))
}

/// Encodes the cursor after (`resource_id`, `key`).
fn encode_token(resource_id: &str, key: &str) -> String {
    format!(
        "{TOKEN_VERSION}.{}.{}",
        hex::encode(resource_id),
        hex::encode(key)
    )
}

fn decode_token(token: &str) -> Result<(String, String), ApiError> {
    let bad = || {
        ApiError::invalid_parameter(
            "NextToken",
            "is not a token this server returned: pass the NextToken of the previous page unchanged, or none for the first page",
        )
    };
    let mut parts = token.split('.');
    let (Some(version), Some(rid), Some(key), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if version != TOKEN_VERSION {
        return Err(bad());
    }
    let text = |h: &str| {
        hex::decode(h)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(bad)
    };
    Ok((text(rid)?, text(key)?))
}

pub(super) async fn list_tag_resources(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let rtype = ResourceType::from_params(p)?;
    let filter = parse_tag_filter(p)?;
    let ids = resource_ids(c, rtype, false).await?;
    let after = match p.get("NextToken").filter(|t| !t.is_empty()) {
        Some(t) => Some(decode_token(t)?),
        None => None,
    };
    let mut rows =
        c.st.db
            .tag_list(
                rtype.as_str(),
                &ids,
                &filter,
                after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                PAGE as i64 + 1,
            )
            .await
            .or_internal()?;
    let next = if rows.len() > PAGE {
        rows.truncate(PAGE);
        rows.last()
            .map(|r| encode_token(&r.resource_id, &r.key))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "ResourceId": r.resource_id,
                "ResourceType": r.resource_type,
                "TagKey": r.key,
                "TagValue": r.value,
            })
        })
        .collect();
    Ok(json!({
        "NextToken": next,
        "TagResources": wrap_list("TagResource", items),
    }))
}

/// The IDs a Describe* call may return after its `Tag.N` filter (and, for sources, `WorkgroupId`),
/// intersected with the IDs it asked for (`requested`, empty = any). `Ok(None)` means nothing can match.
pub(super) async fn restrict_ids(
    c: &Call<'_>,
    rtype: ResourceType,
    requested: Vec<String>,
    workgroup_id: Option<&str>,
) -> Result<Option<Vec<String>>, ApiError> {
    let mut allowed: Option<Vec<String>> = (!requested.is_empty()).then_some(requested);
    let mut narrow = |set: Vec<String>| {
        allowed = Some(match allowed.take() {
            None => set,
            Some(prev) => prev.into_iter().filter(|id| set.contains(id)).collect(),
        });
    };
    let filter = parse_tag_filter(c.params)?;
    if !filter.is_empty() {
        narrow(
            c.st.db
                .tag_match(rtype.as_str(), &filter)
                .await
                .or_internal()?,
        );
    }
    if let Some(w) = workgroup_id {
        let members =
            c.st.db
                .workgroup_members(&[w.to_owned()])
                .await
                .or_internal()?;
        narrow(members.into_iter().map(|m| m.source_id).collect());
    }
    Ok(match allowed {
        Some(ids) if ids.is_empty() => None,
        Some(ids) => Some(ids),
        None => Some(Vec::new()),
    })
}

/// Adds `Tags` (one query for the page) and `WorkgroupId` (one query, of each item's source, field
/// `source_field`) to Describe* items identified by `id_field`.
pub(super) async fn decorate(
    c: &Call<'_>,
    rtype: ResourceType,
    items: &mut [Value],
    id_field: &str,
    source_field: &str,
) -> Result<(), ApiError> {
    let field = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).map(str::to_owned);
    let ids: Vec<String> = items.iter().filter_map(|v| field(v, id_field)).collect();
    let sources: Vec<String> = items
        .iter()
        .filter_map(|v| field(v, source_field))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let tags: HashMap<String, Vec<(String, String)>> =
        c.st.db.tags_of(rtype.as_str(), &ids).await.or_internal()?;
    let groups = c.st.db.workgroup_of_source(&sources).await.or_internal()?;
    for v in items.iter_mut() {
        let id = field(v, id_field).unwrap_or_default();
        let group = field(v, source_field).and_then(|s| groups.get(&s).cloned());
        if let Some(o) = v.as_object_mut() {
            o.insert("Tags".into(), tags_json(tags.get(&id)));
            if let Some(g) = group {
                o.insert("WorkgroupId".into(), json!(g));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_tokens_round_trip_and_reject_foreign_text() {
        let t = encode_token("s-fe1", "env.name");
        assert_eq!(
            decode_token(&t).ok(),
            Some(("s-fe1".to_owned(), "env.name".to_owned()))
        );
        for bad in ["", "2.00.00", "1.zz.00", "1.00", "1.00.00.00", "garbage"] {
            assert!(decode_token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tag_keys_follow_the_rules() {
        assert!(check_key("k", "env").is_ok());
        assert!(check_key("k", &"k".repeat(128)).is_ok());
        for bad in [
            String::new(),
            "k".repeat(129),
            "aliyun-x".into(),
            "ACS:x".into(),
            "see https://x".into(),
        ] {
            let e = check_key("Tag.1.Key", &bad).expect_err(&bad);
            assert_eq!(e.code, "InvalidTagKey.Malformed");
        }
    }

    #[test]
    fn writes_are_bounded_and_filters_need_keys() {
        let many: String = (1..=21)
            .map(|i| format!("Tag.{i}.Key=k{i}&"))
            .collect::<String>();
        let e = parse_tags(&Params::from_query(&many)).expect_err("21 tags");
        assert_eq!(e.code, "NumberExceed.Tags");
        let e = parse_tags(&Params::from_query("Tag.1.Key=a&Tag.2.Key=a")).expect_err("dup");
        assert_eq!(e.code, "Duplicate.TagKey");
        let tags = parse_tags(&Params::from_query("Tag.2.Key=b&Tag.1.Key=a&Tag.1.Value=1"));
        assert_eq!(
            tags.ok(),
            Some(vec![("a".into(), "1".into()), ("b".into(), String::new())])
        );
        let e = parse_tag_filter(&Params::from_query("Tag.1.Value=x")).expect_err("value only");
        assert_eq!(e.code, "InvalidParameter.TagValue");
        let f = parse_tag_filter(&Params::from_query("Tag.1.Key=a&Tag.2.Key=b&Tag.2.Value=2"));
        assert_eq!(f.map(|f| f.len()).ok(), Some(2));
    }
}
