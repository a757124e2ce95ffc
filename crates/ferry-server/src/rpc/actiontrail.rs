//! ActionTrail 2020-07-06: `LookupEvents` over the audit trail (`../shared/ref/smc-api.md` §3.3,
//! `docs/audit-trail.md`).
//!
//! Paging: `NextToken` is opaque to clients but versioned for us: hex of `{"v":1,"d":"B"|"F","s":<seq>,
//! "st":<start>,"en":<end>}`. It carries the cursor (the last returned record's position in the append
//! order) and the time window of the first page, so that every page of one listing uses the same window
//! even when the window defaulted to "the last 7 days until now": pages never overlap or skip an event.

use ferry_api::ApiError;
use ferry_db::{AuditDirection, AuditKey, AuditQuery, now};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ActionResult, Call, time_str};
use crate::app::OrInternal;

/// The window when neither StartTime nor EndTime is given.
const DEFAULT_WINDOW: i64 = 7 * 86_400;
/// The widest window one lookup may ask for.
const MAX_WINDOW: i64 = 30 * 86_400;
const DEFAULT_MAX_RESULTS: i64 = 20;
const MAX_RESULTS: i64 = 50;
/// Lookup attributes allowed in one request.
const MAX_ATTRIBUTES: usize = 2;

pub async fn dispatch(c: &Call<'_>, action: &str) -> Option<ActionResult> {
    Some(match action {
        "LookupEvents" => lookup_events(c).await,
        _ => return None,
    })
}

/// What a `NextToken` holds (version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Token {
    v: u32,
    /// `F` (forward) or `B` (backward).
    d: String,
    /// Cursor: the last returned record's seq.
    s: i64,
    st: i64,
    en: i64,
}

impl Token {
    fn encode(&self) -> String {
        hex::encode(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(text: &str) -> Result<Token, ApiError> {
        let bad = || {
            ApiError::invalid_parameter(
                "NextToken",
                "is not a token this server returned: pass the NextToken of the previous page unchanged, \
                 or leave it out to start over",
            )
        };
        let bytes = hex::decode(text).map_err(|_| bad())?;
        let t: Token = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if t.v != 1 || !(t.d == "F" || t.d == "B") {
            return Err(bad());
        }
        Ok(t)
    }
}

fn direction_letter(d: AuditDirection) -> &'static str {
    match d {
        AuditDirection::Forward => "F",
        AuditDirection::Backward => "B",
    }
}

/// `LookupAttribute.N.Key/Value`: at most two keys; a key given twice keeps its last value.
fn lookup_attributes(c: &Call<'_>) -> Result<Vec<(AuditKey, String)>, ApiError> {
    let p = c.params;
    let mut out: Vec<(AuditKey, String)> = Vec::new();
    for n in p.indices("LookupAttribute") {
        let item = p.scoped(&format!("LookupAttribute.{n}"));
        let key_param = format!("LookupAttribute.{n}.Key");
        let name = item
            .get("Key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::missing_parameter(&key_param))?;
        let key = match AuditKey::parse(name) {
            Some(k) => k,
            None if name == "SensitiveAction" => {
                return Err(ApiError::invalid_parameter(
                    &key_param,
                    "SensitiveAction is not supported: Ferry does not classify actions as sensitive; \
                     filter by EventName instead",
                ));
            }
            None => {
                let keys: Vec<&str> = AuditKey::ALL.iter().map(|k| k.name()).collect();
                return Err(ApiError::invalid_parameter(
                    &key_param,
                    format!(
                        "\"{name}\" is not a lookup key; use one of {}",
                        keys.join(", ")
                    ),
                ));
            }
        };
        let mut value = item.get("Value").unwrap_or("").to_owned();
        if key == AuditKey::RoleName {
            // Events name the role as its ARN does, and RAM writes role names in ARNs in lower case.
            value = value.to_lowercase();
        }
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => out.push((key, value)),
        }
    }
    if out.len() > MAX_ATTRIBUTES {
        return Err(ApiError::invalid_parameter(
            "LookupAttribute",
            format!("{} different keys were given; use one or two", out.len()),
        ));
    }
    Ok(out)
}

async fn lookup_events(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let direction = match p.get("Direction").filter(|d| !d.is_empty()) {
        None => AuditDirection::Backward,
        Some(d) if d.eq_ignore_ascii_case("BACKWARD") => AuditDirection::Backward,
        Some(d) if d.eq_ignore_ascii_case("FORWARD") => AuditDirection::Forward,
        Some(d) => {
            return Err(ApiError::invalid_parameter(
                "Direction",
                format!(
                    "\"{d}\" is not a direction; use FORWARD (oldest first) or BACKWARD (newest first)"
                ),
            ));
        }
    };
    let max = p
        .get_int_in("MaxResults", 1, MAX_RESULTS)?
        .unwrap_or(DEFAULT_MAX_RESULTS);
    let attributes = lookup_attributes(c)?;
    let start_param = p.get_time("StartTime")?.map(|t| t.unix_timestamp());
    let end_param = p.get_time("EndTime")?.map(|t| t.unix_timestamp());
    let token = match p.get("NextToken").filter(|t| !t.is_empty()) {
        Some(t) => Some(Token::decode(t)?),
        None => None,
    };

    let (start, end, after) = match &token {
        Some(t) => {
            let mismatch = |what: &str| {
                ApiError::invalid_parameter(
                    "NextToken",
                    format!(
                        "belongs to a listing with another {what}: repeat the first request's parameters, \
                         or leave NextToken out to start over"
                    ),
                )
            };
            if t.d != direction_letter(direction) {
                return Err(mismatch("Direction"));
            }
            if start_param.is_some_and(|s| s != t.st) || end_param.is_some_and(|e| e != t.en) {
                return Err(mismatch("time window"));
            }
            (t.st, t.en, Some(t.s))
        }
        None => {
            let end = end_param.unwrap_or_else(now);
            let start = start_param.unwrap_or(end - DEFAULT_WINDOW);
            if start > end {
                return Err(ApiError::invalid_parameter(
                    "StartTime",
                    "is later than EndTime; give a StartTime before the EndTime",
                ));
            }
            if end - start > MAX_WINDOW {
                return Err(ApiError::invalid_parameter(
                    "EndTime",
                    "the time window is longer than 30 days; narrow StartTime..EndTime to 30 days or less",
                ));
            }
            (start, end, None)
        }
    };

    let query = AuditQuery {
        attributes,
        start,
        end,
    };
    let page =
        c.st.db
            .audit_lookup(&query, max, after, direction)
            .await
            .or_internal()?;
    let events: Vec<Value> = page
        .records
        .iter()
        .map(|r| serde_json::from_str(&r.body))
        .collect::<Result<_, _>>()
        .or_internal()?;
    let mut out = json!({
        "StartTime": time_str(start),
        "EndTime": time_str(end),
        "Events": events,
    });
    if let Some(seq) = page.next_seq {
        let t = Token {
            v: 1,
            d: direction_letter(direction).to_owned(),
            s: seq,
            st: start,
            en: end,
        };
        out["NextToken"] = json!(t.encode());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let t = Token {
            v: 1,
            d: "B".into(),
            s: 42,
            st: 10,
            en: 20,
        };
        assert_eq!(Token::decode(&t.encode()), Ok(t.clone()));
        for bad in [
            "",
            "zz",
            "7b7d",
            &hex::encode(br#"{"v":2,"d":"B","s":1,"st":0,"en":1}"#),
        ] {
            let e = Token::decode(bad).expect_err(bad);
            assert_eq!(e.code, "InvalidParameter");
            assert!(e.message.contains("NextToken"));
        }
    }
}
