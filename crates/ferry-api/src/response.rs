//! Success responses: JSON and XML rendering, request IDs, timestamps (reference §1.8).
//!
//! Handlers build one `serde_json::Value` per response using Alibaba's JSON list-wrapping
//! convention (`{"SourceServers":{"SourceServer":[…]}}`, see [`wrap_list`]); this module adds the
//! `RequestId` and renders it either as JSON (the default) or, for `Format=XML`, as XML whose repeated
//! elements are named after the array's key. Keeping one value and two renderers means the XML shape
//! can never drift from the JSON one.
//!
//! Invariants: `null` fields are omitted in both formats (§1.8: "omit absent optional fields");
//! every text node and element name in the XML output is escaped or sanitised, whatever the value.

use serde_json::{Map, Value};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use crate::params::Params;

/// Content type of JSON responses and errors.
pub const CONTENT_TYPE_JSON: &str = "application/json;charset=utf-8";
/// Content type of XML responses and errors; the v3 SDKs only parse XML errors with exactly this.
pub const CONTENT_TYPE_XML: &str = "text/xml;charset=utf-8";
/// Prefix of every XML body.
pub(crate) const XML_DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";

/// Response format requested by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// JSON: the default, and what every SDK asks for.
    #[default]
    Json,
    /// XML: only when the request says `Format=XML` (any case).
    Xml,
}

impl Format {
    /// The format selected by a `Format` parameter value: `XML` in any case is XML, anything else
    /// (including absent, `JSON`, `json` or garbage) is JSON, so a bad value still gets a readable error.
    pub fn from_param(value: Option<&str>) -> Format {
        match value {
            Some(v) if v.eq_ignore_ascii_case("xml") => Format::Xml,
            _ => Format::Json,
        }
    }

    /// The format a request asks for through its `Format` parameter.
    pub fn from_params(params: &Params) -> Format {
        Format::from_param(params.get("Format"))
    }

    /// The `Content-Type` header for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => CONTENT_TYPE_JSON,
            Format::Xml => CONTENT_TYPE_XML,
        }
    }
}

/// A fresh request ID: an upper-case hyphenated UUID v4, e.g. `473469C7-AA6F-4DC5-B3DB-A3DC0DE3C83E`.
pub fn new_request_id() -> String {
    uuid::Uuid::new_v4()
        .hyphenated()
        .encode_upper(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

/// Render a successful response; returns `(content_type, body)`.
///
/// `body` should be a JSON object holding the action's result fields; `RequestId` is added (and
/// replaces any `RequestId` already there). `null` is treated as an empty result. Any other non-object
/// value is placed under a `Result` key so that nothing is silently dropped.
///
/// XML: `<?xml …?><{action}Response><RequestId>…</RequestId>…</{action}Response>`, with objects as
/// nested elements and each array element as a repeated element named after the array's key.
pub fn render_ok(
    action: &str,
    request_id: &str,
    body: Value,
    format: Format,
) -> (&'static str, String) {
    let mut fields = match body {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => {
            let mut map = Map::new();
            map.insert("Result".to_owned(), other);
            map
        }
    };
    fields.remove("RequestId");
    let out = match format {
        Format::Json => {
            fields.insert("RequestId".to_owned(), Value::String(request_id.to_owned()));
            Value::Object(fields).to_string()
        }
        Format::Xml => {
            let root = xml_name(&format!("{action}Response"));
            let mut out = String::from(XML_DECLARATION);
            out.push('<');
            out.push_str(&root);
            out.push('>');
            push_xml_text_element(&mut out, "RequestId", request_id);
            for (k, v) in &fields {
                push_xml_field(&mut out, k, v);
            }
            out.push_str("</");
            out.push_str(&root);
            out.push('>');
            out
        }
    };
    (format.content_type(), out)
}

/// `{"<element>": [items…]}`: the JSON list-wrapping convention the SDKs deserialise, e.g.
/// `json!({"SourceServers": wrap_list("SourceServer", servers)})`.
pub fn wrap_list(element: &str, items: Vec<Value>) -> Value {
    let mut map = Map::new();
    map.insert(element.to_owned(), Value::Array(items));
    Value::Object(map)
}

/// Format a time as `YYYY-MM-DDThh:mm:ssZ` in UTC (the API's only timestamp format).
pub fn fmt_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Format Unix seconds as `YYYY-MM-DDThh:mm:ssZ`; `None` when out of the representable range.
pub fn fmt_unix(secs: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(secs).ok().map(fmt_time)
}

/// Parse exactly `YYYY-MM-DDThh:mm:ssZ` (UTC); `None` for anything else, including other ISO-8601
/// variants (offsets, fractions, lower-case `t`/`z`), because signed timestamps must be exact.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let second = digits(&b[17..19])?;
    build_time(b, second)
}

/// Parse `YYYY-MM-DDThh:mm:ssZ` or the minute form `YYYY-MM-DDThh:mmZ` (used by ECS filters).
pub fn parse_time_lenient(s: &str) -> Option<OffsetDateTime> {
    if let Some(t) = parse_time(s) {
        return Some(t);
    }
    let b = s.as_bytes();
    if b.len() != 17
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b'Z'
    {
        return None;
    }
    build_time(b, 0)
}

/// Date, hour and minute are at the same offsets in both accepted forms.
fn build_time(b: &[u8], second: u32) -> Option<OffsetDateTime> {
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let date = Date::from_calendar_date(
        i32::try_from(year).ok()?,
        Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    let time = Time::from_hms(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
    )
    .ok()?;
    Some(PrimitiveDateTime::new(date, time).assume_utc())
}

/// ASCII decimal digits only (no sign, no spaces).
fn digits(b: &[u8]) -> Option<u32> {
    b.iter().try_fold(0u32, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
    })
}

/// Escape text for an XML text node or attribute. Characters XML 1.0 forbids (most C0 controls,
/// U+FFFE, U+FFFF) become U+FFFD, because no escape can represent them; `\r` is written as a
/// character reference so that parsers do not normalise it away.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A valid XML element name derived from `name`: characters that may not appear in a name become
/// `_`, and a name that would start with something other than a letter or `_` gets a `_` prefix.
/// Names come from our own response keys, but an action name is client input.
fn xml_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let starts_ok = out
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_');
    // Names starting with "xml" (any case) are reserved by the XML specification.
    if !starts_ok || out.get(..3).is_some_and(|p| p.eq_ignore_ascii_case("xml")) {
        out.insert(0, '_');
    }
    out
}

fn push_xml_text_element(out: &mut String, name: &str, text: &str) {
    let name = xml_name(name);
    out.push('<');
    out.push_str(&name);
    out.push('>');
    out.push_str(&xml_escape(text));
    out.push_str("</");
    out.push_str(&name);
    out.push('>');
}

/// Append `value` as element(s) named `name`: an array becomes one element per item (nested arrays
/// are flattened into the same repetition), an object becomes nested elements, `null` nothing.
pub(crate) fn push_xml_field(out: &mut String, name: &str, value: &Value) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items {
                push_xml_field(out, name, item);
            }
        }
        Value::Object(map) => {
            let tag = xml_name(name);
            out.push('<');
            out.push_str(&tag);
            out.push('>');
            for (k, v) in map {
                push_xml_field(out, k, v);
            }
            out.push_str("</");
            out.push_str(&tag);
            out.push('>');
        }
        Value::String(s) => push_xml_text_element(out, name, s),
        Value::Bool(b) => push_xml_text_element(out, name, if *b { "true" } else { "false" }),
        Value::Number(n) => push_xml_text_element(out, name, &n.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn format_selection() {
        assert_eq!(Format::from_param(None), Format::Json);
        assert_eq!(Format::from_param(Some("JSON")), Format::Json);
        assert_eq!(Format::from_param(Some("json")), Format::Json);
        assert_eq!(Format::from_param(Some("XML")), Format::Xml);
        assert_eq!(Format::from_param(Some("xml")), Format::Xml);
        assert_eq!(Format::from_param(Some("Xml")), Format::Xml);
        assert_eq!(Format::from_param(Some("yaml")), Format::Json);
        let p = Params::from_query("Format=xMl");
        assert_eq!(Format::from_params(&p), Format::Xml);
        assert_eq!(
            Format::Json.content_type(),
            "application/json;charset=utf-8"
        );
        assert_eq!(Format::Xml.content_type(), "text/xml;charset=utf-8");
    }

    #[test]
    fn request_ids_are_upper_case_uuid_v4_and_unique() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        for id in [a, b] {
            assert_eq!(id.len(), 36);
            assert_eq!(id, id.to_uppercase());
            let parsed = uuid::Uuid::parse_str(&id).expect("request id is a UUID");
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(id.matches('-').count(), 4);
        }
    }

    #[test]
    fn json_adds_request_id_and_keeps_types() {
        let body = json!({"TotalCount": 2, "RunOnce": false, "Progress": 55.45, "Name": "web01",
                          "Gone": null, "RequestId": "client-supplied"});
        let (ct, s) = render_ok("DescribeReplicationJobs", "RID", body, Format::Json);
        assert_eq!(ct, CONTENT_TYPE_JSON);
        let v: Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(v["RequestId"], "RID");
        assert_eq!(v["TotalCount"], 2);
        assert_eq!(v["RunOnce"], false);
        assert_eq!(v["Progress"], 55.45);
        assert_eq!(v["Name"], "web01");
    }

    #[test]
    fn null_and_scalar_bodies() {
        let (_, s) = render_ok("DeleteWorkgroup", "R", Value::Null, Format::Json);
        assert_eq!(s, r#"{"RequestId":"R"}"#);
        let (_, s) = render_ok("X", "R", json!(7), Format::Json);
        let v: Value = serde_json::from_str(&s).expect("valid JSON");
        assert_eq!(v["Result"], 7);
    }

    #[test]
    fn xml_lists_become_repeated_elements_of_the_wrapper() {
        let body = json!({
            "SourceServers": wrap_list("SourceServer", vec![
                json!({"SourceId": "s-1", "Tags": wrap_list("Tag", vec![])}),
                json!({"SourceId": "s-2", "Agent": null}),
            ]),
            "TotalCount": 2,
        });
        let (ct, s) = render_ok("DescribeSourceServers", "R-1", body, Format::Xml);
        assert_eq!(ct, CONTENT_TYPE_XML);
        assert_eq!(
            s,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><DescribeSourceServersResponse>\
             <RequestId>R-1</RequestId>\
             <SourceServers>\
             <SourceServer><SourceId>s-1</SourceId><Tags></Tags></SourceServer>\
             <SourceServer><SourceId>s-2</SourceId></SourceServer>\
             </SourceServers>\
             <TotalCount>2</TotalCount>\
             </DescribeSourceServersResponse>"
        );
    }

    #[test]
    fn xml_escapes_text_and_sanitises_names() {
        let body = json!({"Name": "a<b>&\"c'\u{1}\r", "Bad Key/1": true});
        let (_, s) = render_ok("Evil<Action>", "R", body, Format::Xml);
        assert!(
            s.contains("<Name>a&lt;b&gt;&amp;&quot;c&apos;\u{FFFD}&#xD;</Name>"),
            "{s}"
        );
        assert!(s.contains("<Bad_Key_1>true</Bad_Key_1>"), "{s}");
        assert!(s.contains("<Evil_Action_Response>"), "{s}");
        assert!(s.ends_with("</Evil_Action_Response>"), "{s}");
        assert_eq!(xml_name("1abc"), "_1abc");
        assert_eq!(xml_name("xmlFoo"), "_xmlFoo");
        assert_eq!(xml_name(""), "_");
    }

    #[test]
    fn wrap_list_shape() {
        assert_eq!(
            wrap_list("SourceId", vec![json!("s-1")]),
            json!({"SourceId": ["s-1"]})
        );
    }

    #[test]
    fn time_round_trip_and_strictness() {
        let t = parse_time("2024-01-01T00:05:09Z").expect("valid");
        assert_eq!(t.unix_timestamp(), 1_704_067_509);
        assert_eq!(fmt_time(t), "2024-01-01T00:05:09Z");
        assert_eq!(fmt_unix(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            fmt_unix(1_704_067_509).as_deref(),
            Some("2024-01-01T00:05:09Z")
        );
        assert_eq!(fmt_unix(i64::MAX), None);
        // A non-UTC offset is converted, not just relabelled.
        let plus8 = t.to_offset(UtcOffset::from_hms(8, 0, 0).expect("valid offset"));
        assert_eq!(fmt_time(plus8), "2024-01-01T00:05:09Z");
        for bad in [
            "2024-01-01T00:05:09",
            "2024-01-01T00:05:09z",
            "2024-01-01 00:05:09Z",
            "2024-01-01T00:05:09.000Z",
            "2024-01-01T00:05:09+08:00",
            "2024-13-01T00:05:09Z",
            "2024-02-30T00:05:09Z",
            "2024-01-01T24:00:00Z",
            "+024-01-01T00:05:09Z",
            "2024-01-01T00:05Z",
            "",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(
            parse_time_lenient("2024-01-01T00:05Z")
                .map(fmt_time)
                .as_deref(),
            Some("2024-01-01T00:05:00Z")
        );
        assert_eq!(parse_time_lenient("2024-01-01T00:5Z"), None);
    }
}
