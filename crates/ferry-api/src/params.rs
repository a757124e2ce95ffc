//! Request parameters of an RPC call: the URL query merged with a form-urlencoded body (§1.1–§1.2).
//!
//! Both sources are decoded as `application/x-www-form-urlencoded`, so `+` is a space: the Python v3
//! SDK writes spaces as `+`, the others as `%20`, and both must decode to the same value.
//!
//! Merging rule (documented in `docs/api-gateway.md`): **the query wins**. A name that appears in the
//! query takes its value from the query even if the body repeats it; within one source the **first**
//! occurrence wins. The result is one *effective* value per name, and that effective set is exactly
//! what the v1 signature covers ([`Params::iter`]) and what the v3 canonical query covers
//! ([`Params::query_iter`]). So every value a handler can read through the typed accessors is covered
//! by the signature; the raw pairs ([`Params::raw`]) are kept for audit logs only.
//!
//! Typed accessors treat an empty value as absent (`get_bool`, `get_i64`, `required`…): SDKs send
//! `Name=` for unset optional fields in some code paths, and an empty mandatory field is as good as a
//! missing one. [`Params::get`] still returns the empty string, because signing needs it.

use std::collections::BTreeMap;

use http::HeaderMap;
use time::OffsetDateTime;

use crate::error::ApiError;

/// The effective `Action` and `Version` of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionVersion {
    /// The operation, e.g. `DescribeSourceServers`.
    pub action: String,
    /// The API version, e.g. `2019-06-01`.
    pub version: String,
}

/// Decoded request parameters (query ∪ form body, query wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    /// Every decoded pair in arrival order: the query's, then the body's.
    raw: Vec<(String, String)>,
    /// How many leading entries of `raw` came from the query.
    query_len: usize,
    /// Effective value per name (first occurrence in `raw`, so the query wins).
    merged: BTreeMap<String, String>,
    /// Effective query-only value per name (for the v3 canonical query string).
    query: BTreeMap<String, String>,
}

impl Params {
    /// Parameters from a URL query string only (without the leading `?`).
    pub fn from_query(query: &str) -> Params {
        Params::from_parts(query, None)
    }

    /// Parameters from a query string and, when present, a form-urlencoded body.
    pub fn from_parts(query: &str, form_body: Option<&[u8]>) -> Params {
        let mut raw: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let query_len = raw.len();
        if let Some(body) = form_body {
            raw.extend(form_urlencoded::parse(body).into_owned());
        }
        let mut merged = BTreeMap::new();
        let mut query_map = BTreeMap::new();
        for (i, (k, v)) in raw.iter().enumerate() {
            merged.entry(k.clone()).or_insert_with(|| v.clone());
            if i < query_len {
                query_map.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Params {
            raw,
            query_len,
            merged,
            query: query_map,
        }
    }

    /// Parameters of an HTTP request: the query, plus the body when `Content-Type` is
    /// `application/x-www-form-urlencoded` (any case, any parameters such as `charset`). Other bodies
    /// are not parameters (v3 covers them through the payload hash only).
    pub fn from_request(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Params {
        let is_form = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|ct| ct.split(';').next())
            .is_some_and(|essence| {
                essence
                    .trim()
                    .eq_ignore_ascii_case("application/x-www-form-urlencoded")
            });
        Params::from_parts(query.unwrap_or(""), is_form.then_some(body))
    }

    /// The effective value of `name` (may be empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.merged.get(name).map(String::as_str)
    }

    /// The effective value of `name`, treating an empty value as absent.
    fn get_nonempty(&self, name: &str) -> Option<&str> {
        self.get(name).filter(|v| !v.is_empty())
    }

    /// True when `name` is present (even with an empty value).
    pub fn contains(&self, name: &str) -> bool {
        self.merged.contains_key(name)
    }

    /// Number of distinct parameter names.
    pub fn len(&self) -> usize {
        self.merged.len()
    }

    /// True when there are no parameters at all.
    pub fn is_empty(&self) -> bool {
        self.merged.is_empty()
    }

    /// The value of a mandatory parameter.
    ///
    /// Errors: `MissingParameter` (400, ECS wording) when absent or empty.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        self.get_nonempty(name)
            .ok_or_else(|| ApiError::missing_parameter(name))
    }

    /// A boolean parameter: `true`/`false` in any case (Python SDKs send `True`/`False`).
    ///
    /// Errors: `InvalidParameter` for any other non-empty value.
    pub fn get_bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get_nonempty(name) {
            None => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("true") => Ok(Some(true)),
            Some(v) if v.eq_ignore_ascii_case("false") => Ok(Some(false)),
            Some(v) => Err(ApiError::invalid_parameter(
                name,
                format!("\"{v}\" is not a boolean; use true or false"),
            )),
        }
    }

    /// A decimal integer parameter (fields declared as strings in the SDKs are accepted too: the
    /// wire form is the same).
    ///
    /// Errors: `InvalidParameter` when the value is not a 64-bit decimal integer.
    pub fn get_i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get_nonempty(name) {
            None => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::invalid_parameter(name, format!("\"{v}\" is not an integer"))
            }),
        }
    }

    /// An integer parameter that must lie in `min..=max`.
    ///
    /// Errors: `InvalidParameter` when it is not an integer or is out of range.
    pub fn get_int_in(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, ApiError> {
        match self.get_i64(name)? {
            Some(n) if !(min..=max).contains(&n) => Err(ApiError::invalid_parameter(
                name,
                format!("{n} is out of range; use a value from {min} to {max}"),
            )),
            other => Ok(other),
        }
    }

    /// A time parameter in `YYYY-MM-DDThh:mm:ssZ` (or ECS's `YYYY-MM-DDThh:mmZ`), UTC.
    ///
    /// Errors: `InvalidParameter` for any other shape.
    pub fn get_time(&self, name: &str) -> Result<Option<OffsetDateTime>, ApiError> {
        match self.get_nonempty(name) {
            None => Ok(None),
            Some(v) => crate::response::parse_time_lenient(v)
                .map(Some)
                .ok_or_else(|| {
                    ApiError::invalid_parameter(
                        name,
                        format!("\"{v}\" is not a UTC time like 2024-01-01T00:00:00Z"),
                    )
                }),
        }
    }

    /// The list `Name.1`, `Name.2`, … in numeric index order (so `Name.10` follows `Name.9`). Gaps are
    /// allowed; keys whose index is not a canonical positive decimal (`Name.0`, `Name.01`, `Name.x`)
    /// are not list members and are ignored like any unknown parameter.
    pub fn get_list(&self, name: &str) -> Vec<String> {
        let mut items: BTreeMap<u32, &str> = BTreeMap::new();
        for (k, v) in &self.merged {
            if let Some(index) = k
                .strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('.'))
                .and_then(parse_index)
            {
                items.insert(index, v);
            }
        }
        items.into_values().map(str::to_owned).collect()
    }

    /// The list of structs `Name.N.Field` for the given `fields`, in numeric `N` order; each map holds
    /// the fields present for that `N`. Fields not listed are ignored.
    pub fn get_struct_list(&self, name: &str, fields: &[&str]) -> Vec<BTreeMap<String, String>> {
        let mut items: BTreeMap<u32, BTreeMap<String, String>> = BTreeMap::new();
        for (k, v) in &self.merged {
            let Some(rest) = k.strip_prefix(name).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let Some((index, field)) = rest.split_once('.') else {
                continue;
            };
            let Some(index) = parse_index(index) else {
                continue;
            };
            if fields.contains(&field) {
                items
                    .entry(index)
                    .or_default()
                    .insert(field.to_owned(), v.clone());
            }
        }
        items.into_values().collect()
    }

    /// The indices `N` used by any key `Name.N` or `Name.N.…`, ascending; with [`Params::scoped`] this
    /// walks nested shapes such as `DataDisk.N.Part.M.Path`.
    pub fn indices(&self, name: &str) -> Vec<u32> {
        let mut out: Vec<u32> = self
            .merged
            .keys()
            .filter_map(|k| k.strip_prefix(name)?.strip_prefix('.'))
            .filter_map(|rest| parse_index(rest.split('.').next().unwrap_or(rest)))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The parameters under `prefix.`, with the prefix removed: `scoped("DataDisk.1")` turns
    /// `DataDisk.1.Part.2.Path` into `Part.2.Path`. A read-only view: its query/body split is lost,
    /// so never verify signatures with it.
    pub fn scoped(&self, prefix: &str) -> Params {
        let pairs: Vec<(String, String)> = self
            .merged
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(prefix)?.strip_prefix('.')?;
                Some((rest.to_owned(), v.clone()))
            })
            .collect();
        Params {
            query_len: pairs.len(),
            merged: pairs.iter().cloned().collect(),
            query: pairs.iter().cloned().collect(),
            raw: pairs,
        }
    }

    /// Every effective `(name, value)`, sorted byte-wise by name: the set the v1 signature covers.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.merged.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Effective query-only `(name, value)` pairs, sorted byte-wise by name: the v3 canonical query.
    pub fn query_iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.query.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Every decoded pair in arrival order (query first, then body), duplicates included. Values
    /// shadowed by an earlier duplicate are not covered by any signature: use this for audit logs,
    /// never to make decisions.
    pub fn raw(&self) -> &[(String, String)] {
        &self.raw
    }

    /// The raw pairs that came from the query string.
    pub fn raw_query(&self) -> &[(String, String)] {
        &self.raw[..self.query_len]
    }

    /// `Action` and `Version`: from the parameters when present (v1 SDKs, v3 with `signature_algorithm
    /// = 'v2'`), else from the `x-acs-action` / `x-acs-version` headers (v3 SDKs).
    ///
    /// Errors: `MissingParameter` naming `Action` or `Version` when neither source has it.
    pub fn action_version(&self, headers: &HeaderMap) -> Result<ActionVersion, ApiError> {
        let pick = |param: &str, header: &str| -> Result<String, ApiError> {
            self.get_nonempty(param)
                .map(str::to_owned)
                .or_else(|| header_str(headers, header).map(str::to_owned))
                .ok_or_else(|| ApiError::missing_parameter(param))
        };
        Ok(ActionVersion {
            action: pick("Action", "x-acs-action")?,
            version: pick("Version", "x-acs-version")?,
        })
    }
}

/// A header's value as trimmed text; `None` when absent, empty or not visible ASCII.
pub(crate) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A list index: canonical positive decimal (no sign, no leading zero), at most `u32::MAX`.
fn parse_index(s: &str) -> Option<u32> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn plus_is_space_and_percent_decodes() {
        let p = Params::from_query("Name=my+job%2A1+%2Fx&Other=a%20b&Empty=&Bare");
        assert_eq!(p.get("Name"), Some("my job*1 /x"));
        assert_eq!(p.get("Other"), Some("a b"));
        assert_eq!(p.get("Empty"), Some(""));
        assert_eq!(p.get("Bare"), Some(""));
        assert_eq!(p.get("Missing"), None);
        assert!(p.contains("Empty"));
        assert_eq!(p.len(), 4);
    }

    #[test]
    fn query_wins_over_body_and_first_occurrence_wins() {
        let p = Params::from_parts("A=q1&A=q2&B=q", Some(b"A=b&C=b1&C=b2&D=x+y"));
        assert_eq!(p.get("A"), Some("q1"));
        assert_eq!(p.get("B"), Some("q"));
        assert_eq!(p.get("C"), Some("b1"));
        assert_eq!(p.get("D"), Some("x y"));
        let all: Vec<_> = p.iter().collect();
        assert_eq!(all, [("A", "q1"), ("B", "q"), ("C", "b1"), ("D", "x y")]);
        let q: Vec<_> = p.query_iter().collect();
        assert_eq!(q, [("A", "q1"), ("B", "q")]);
        assert_eq!(p.raw().len(), 7);
        assert_eq!(p.raw()[1], ("A".to_owned(), "q2".to_owned()));
        assert_eq!(p.raw_query().len(), 3);
    }

    #[test]
    fn body_is_read_only_for_form_content_type() {
        let mut h = HeaderMap::new();
        let body = b"JobId=j-1";
        assert_eq!(
            Params::from_request(Some("X=1"), &h, body).get("JobId"),
            None
        );
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("Application/X-WWW-Form-Urlencoded; charset=UTF-8"),
        );
        let p = Params::from_request(Some("X=1"), &h, body);
        assert_eq!(p.get("JobId"), Some("j-1"));
        assert_eq!(p.get("X"), Some("1"));
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert_eq!(Params::from_request(None, &h, body).get("JobId"), None);
    }

    #[test]
    fn required_reports_missing_and_empty() {
        let p = Params::from_query("JobId=j-1&Name=");
        assert_eq!(p.required("JobId"), Ok("j-1"));
        for name in ["Name", "SourceId"] {
            let e = p.required(name).expect_err(name);
            assert_eq!(e.code, "MissingParameter");
            assert_eq!(e.status, 400);
            assert_eq!(
                e.message,
                format!(
                    "An input parameter \"{name}\" that is mandatory for processing the request is not supplied."
                )
            );
        }
    }

    #[test]
    fn booleans_are_case_insensitive() {
        let p = Params::from_query("a=True&b=FALSE&c=true&d=yes&e=1&f=");
        assert_eq!(p.get_bool("a"), Ok(Some(true)));
        assert_eq!(p.get_bool("b"), Ok(Some(false)));
        assert_eq!(p.get_bool("c"), Ok(Some(true)));
        assert_eq!(p.get_bool("f"), Ok(None));
        assert_eq!(p.get_bool("zz"), Ok(None));
        for bad in ["d", "e"] {
            let e = p.get_bool(bad).expect_err(bad);
            assert_eq!(e.code, "InvalidParameter");
            assert!(e.message.contains(bad), "{}", e.message);
        }
    }

    #[test]
    fn integers_and_ranges() {
        let p = Params::from_query(
            "PageSize=50&PageNumber=0&Count=%2B7&Neg=-3&Big=99999999999999999999&X=1.5",
        );
        assert_eq!(p.get_i64("PageSize"), Ok(Some(50)));
        assert_eq!(p.get_int_in("PageSize", 1, 50), Ok(Some(50)));
        assert_eq!(p.get_int_in("Absent", 1, 50), Ok(None));
        assert_eq!(p.get_i64("Count"), Ok(Some(7)));
        assert_eq!(p.get_i64("Neg"), Ok(Some(-3)));
        let e = p.get_int_in("PageNumber", 1, 100).expect_err("0 < 1");
        assert_eq!(e.code, "InvalidParameter");
        assert!(e.message.contains("from 1 to 100"), "{}", e.message);
        assert!(p.get_int_in("PageSize", 1, 49).is_err());
        assert!(p.get_i64("Big").is_err());
        assert!(p.get_i64("X").is_err());
    }

    #[test]
    fn lists_are_in_numeric_order() {
        let p = Params::from_query(
            "SourceId.10=s-10&SourceId.2=s-2&SourceId.1=s-1&SourceId.0=zero&SourceId.01=lead&SourceId.x=x&SourceIdX.1=other&SourceId=scalar&SourceId.3.Key=nested",
        );
        assert_eq!(p.get_list("SourceId"), ["s-1", "s-2", "s-10"]);
        assert!(p.get_list("Nothing").is_empty());
        assert_eq!(p.indices("SourceId"), [1, 2, 3, 10]);
    }

    #[test]
    fn struct_lists() {
        let p = Params::from_query(
            "Tag.2.Key=b&Tag.1.Key=a&Tag.1.Value=1&Tag.10.Key=j&Tag.10.Value=&Tag.1.Other=ignored&Tag.3=scalar",
        );
        let tags = p.get_struct_list("Tag", &["Key", "Value"]);
        assert_eq!(tags.len(), 3);
        assert_eq!(tags[0].get("Key").map(String::as_str), Some("a"));
        assert_eq!(tags[0].get("Value").map(String::as_str), Some("1"));
        assert!(!tags[0].contains_key("Other"));
        assert_eq!(tags[1].get("Key").map(String::as_str), Some("b"));
        assert_eq!(tags[1].get("Value"), None);
        assert_eq!(tags[2].get("Key").map(String::as_str), Some("j"));
        assert_eq!(tags[2].get("Value").map(String::as_str), Some(""));
    }

    #[test]
    fn nested_lists_through_scoped() {
        let p = Params::from_query(
            "DataDisk.1.Size=10&DataDisk.1.Part.2.Path=/b&DataDisk.1.Part.1.Path=/a&DataDisk.2.Size=20",
        );
        assert_eq!(p.indices("DataDisk"), [1, 2]);
        let d1 = p.scoped("DataDisk.1");
        assert_eq!(d1.get("Size"), Some("10"));
        let parts = d1.get_struct_list("Part", &["Path"]);
        let paths: Vec<_> = parts.iter().filter_map(|m| m.get("Path")).collect();
        assert_eq!(paths, ["/a", "/b"]);
        assert_eq!(p.scoped("DataDisk.2").get_i64("Size"), Ok(Some(20)));
    }

    #[test]
    fn time_parameters() {
        let p =
            Params::from_query("Start=2024-01-01T00:00:00Z&Min=2024-01-01T00:00Z&Bad=yesterday");
        assert_eq!(
            p.get_time("Start").map(|t| t.map(|t| t.unix_timestamp())),
            Ok(Some(1_704_067_200))
        );
        assert_eq!(
            p.get_time("Min").map(|t| t.map(|t| t.unix_timestamp())),
            Ok(Some(1_704_067_200))
        );
        assert_eq!(
            p.get_time("Bad").map_err(|e| e.code),
            Err("InvalidParameter".into())
        );
        assert_eq!(p.get_time("None"), Ok(None));
    }

    #[test]
    fn action_version_prefers_params_then_headers() {
        let mut h = HeaderMap::new();
        h.insert("x-acs-action", HeaderValue::from_static("FromHeader"));
        h.insert("x-acs-version", HeaderValue::from_static(" 2019-06-01 "));
        let p = Params::from_query("Action=FromQuery");
        assert_eq!(
            p.action_version(&h),
            Ok(ActionVersion {
                action: "FromQuery".into(),
                version: "2019-06-01".into()
            })
        );
        let p = Params::from_query("");
        assert_eq!(
            p.action_version(&h).map(|a| a.action),
            Ok("FromHeader".into())
        );
        let e = p
            .action_version(&HeaderMap::new())
            .expect_err("no action anywhere");
        assert_eq!(e.code, "MissingParameter");
        assert!(e.message.contains("\"Action\""));
        let p = Params::from_query("Action=A");
        let e = p.action_version(&HeaderMap::new()).expect_err("no version");
        assert!(e.message.contains("\"Version\""));
    }
}
