//! Property tests of the gateway's edge: the parameter parser ([`Params`]) and both signature verifiers
//! ([`ferry_api::verify`], v1 HMAC-SHA1 and v3 ACS3-HMAC-SHA256).
//!
//! What must hold for every input:
//! * Parsing arbitrary query strings and form bodies never panics, nor does any accessor on the result, and
//!   what a client encodes (either SDK style: `+` or `%20` for space, `*` raw or `%2A`, upper- or lower-case
//!   hex, unicode, empty values, repeated keys) decodes back to exactly what it encoded, first occurrence
//!   winning.
//! * Both verifiers never panic on arbitrary parameters, headers and bodies.
//! * A request signed by the reference signers below (written from `../shared/ref/smc-api.md` §1.4/§1.5,
//!   independent of the crate's own signer) is accepted, and changing any one signed parameter (name or
//!   value), signed header value or body byte makes it rejected.
//!
//! Each property runs a fixed number of cases through its own `TestRunner`, counts the cases that actually
//! ran and prints the count (`cargo test -p ferry-api --test props -- --nocapture`); a run that executed
//! fewer cases than configured fails. No failure files are written to the tree.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use base64::Engine as _;
use ferry_api::sign::Secret;
use ferry_api::{Params, fmt_time, verify};
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sha2::Digest as _;
use time::OffsetDateTime;

/// Cases per property (6 properties, 6000 cases; about 10 s in a debug build on 2 cores).
const CASES: u32 = 1000;

const AK: &str = "LTAIprop0test0key";
const SECRET: &str = "prop-secret/with+odd=chars";

/// Runs `test` on `CASES` values of `strategy` and returns how many cases ran.
fn run<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> u32 {
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let ran = AtomicU32::new(0);
    let result = runner.run(&strategy, |v| {
        ran.fetch_add(1, Ordering::Relaxed);
        test(v)
    });
    if let Err(e) = result {
        panic!("property {name} failed: {e}");
    }
    let ran = ran.into_inner();
    println!("property {name}: {ran} cases");
    assert!(ran >= CASES, "property {name} ran only {ran} cases");
    ran
}

// ---------------------------------------------------------------------------------------------------------
// Reference encoders and signers (§1.2, §1.4, §1.5), deliberately not the crate's.

/// RFC 3986 percent-encoding of §1.4 step 3: keep `A-Z a-z 0-9 - _ . ~`, everything else `%XX` upper-case.
fn rfc3986(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How a client writes a query string or form body: the SDKs differ (§1.2).
#[derive(Debug, Clone, Copy)]
struct Style {
    space_as_plus: bool,
    star_raw: bool,
    lower_hex: bool,
    tilde_encoded: bool,
}

fn style() -> impl Strategy<Value = Style> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(a, b, c, d)| Style {
        space_as_plus: a,
        star_raw: b,
        lower_hex: c,
        tilde_encoded: d,
    })
}

fn client_encode(s: &str, st: Style) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b' ' if st.space_as_plus => out.push('+'),
            b'*' if st.star_raw => out.push('*'),
            b'~' if !st.tilde_encoded => out.push('~'),
            b if b.is_ascii_alphanumeric() || b"-_.".contains(&b) => out.push(b as char),
            b if st.lower_hex => out.push_str(&format!("%{b:02x}")),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn client_query(pairs: &[(String, String)], st: Style) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", client_encode(k, st), client_encode(v, st)))
        .collect::<Vec<_>>()
        .join("&")
}

fn ref_v1_signature(method: &str, params: &BTreeMap<String, String>, secret: &str) -> String {
    // BTreeMap<String> iterates in byte-wise order of the UTF-8 names: §1.4 step 2.
    let canonical = params
        .iter()
        .map(|(k, v)| format!("{}={}", rfc3986(k), rfc3986(v)))
        .collect::<Vec<_>>()
        .join("&");
    let string_to_sign = format!("{method}&%2F&{}", rfc3986(&canonical));
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(format!("{secret}&").as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

fn ref_v3_authorization(
    method: &str,
    query: &BTreeMap<String, String>,
    headers: &BTreeMap<String, String>,
    body: &[u8],
    ak: &str,
    secret: &str,
) -> String {
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{}={}", rfc3986(k), rfc3986(v)))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed = headers.keys().cloned().collect::<Vec<_>>().join(";");
    let payload = hex::encode(sha2::Sha256::digest(body));
    let canonical_request =
        format!("{method}\n/\n{canonical_query}\n{canonical_headers}\n{signed}\n{payload}");
    let string_to_sign = format!(
        "ACS3-HMAC-SHA256\n{}",
        hex::encode(sha2::Sha256::digest(canonical_request.as_bytes()))
    );
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(string_to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    format!("ACS3-HMAC-SHA256 Credential={ak},SignedHeaders={signed},Signature={signature}")
}

fn lookup(id: &str) -> Option<Secret> {
    (id == AK).then(|| Secret::new(SECRET))
}

// ---------------------------------------------------------------------------------------------------------
// Strategies

/// Text that stresses the decoder: percent signs, separators, plus, unicode, NUL.
fn nasty_text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!(
            "[%&=+.;#?/ *~a-zA-Z0-9\u{e9}\u{2603}\u{0}]{{0,{max}}}"
        ))
        .expect("valid regex"),
        proptest::collection::vec(any::<char>(), 0..max).prop_map(|c| c.into_iter().collect()),
    ]
}

fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        proptest::string::string_regex("[ *+~/%&=a-z0-9]{1,12}").expect("valid regex"),
        "\\PC{0,16}",
    ]
}

/// A request time and a server clock within the ±15 minute window.
fn times() -> impl Strategy<Value = (OffsetDateTime, OffsetDateTime)> {
    (946_684_800i64..4_102_444_800, -890i64..890).prop_map(|(t, skew)| {
        let signed = OffsetDateTime::from_unix_timestamp(t).expect("in range");
        (signed, signed + time::Duration::seconds(skew))
    })
}

/// One edit of a string: replace the char at `pos % len` by `with` (or append it to an empty string); the
/// result always differs from the input.
fn mutate(s: &str, pos: usize, with: char) -> String {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return with.to_string();
    }
    let i = pos % chars.len();
    let replacement = if chars[i] == with {
        if with == 'a' { 'b' } else { 'a' }
    } else {
        with
    };
    let mut out = chars;
    out[i] = replacement;
    out.into_iter().collect()
}

// ---------------------------------------------------------------------------------------------------------
// Params

#[test]
fn params_parsing_never_panics() {
    run(
        "params_parsing_never_panics",
        (
            nasty_text(200),
            proptest::collection::vec(any::<u8>(), 0..300),
            nasty_text(12),
        ),
        |(query, body, name)| {
            let p = Params::from_parts(&query, Some(&body));
            let _ = (p.len(), p.is_empty(), p.raw().len(), p.raw_query().len());
            for n in [name.as_str(), "Action", "SourceId", "Tag", "DataDisk"] {
                let _ = (p.get(n), p.contains(n), p.required(n));
                let _ = (p.get_bool(n), p.get_i64(n), p.get_int_in(n, 1, 50));
                let _ = (p.get_time(n), p.get_list(n), p.indices(n));
                let _ = p.get_struct_list(n, &["Key", "Value", "Size"]);
                let scoped = p.scoped(n);
                let _ = scoped.get_list("Part");
            }
            let _ = p.action_version(&HeaderMap::new());
            let _ = p.iter().count() + p.query_iter().count();
            Ok(())
        },
    );
}

#[test]
fn params_round_trip_what_clients_encode() {
    let pair = || {
        (
            prop_oneof![
                proptest::string::string_regex("[A-Za-z][A-Za-z0-9.]{0,10}").expect("valid regex"),
                "\\PC{1,8}",
            ],
            param_value(),
        )
    };
    run(
        "params_round_trip_what_clients_encode",
        (
            proptest::collection::vec(pair(), 0..10),
            proptest::collection::vec(pair(), 0..6),
            style(),
            style(),
        ),
        |(query_pairs, body_pairs, qs, bs)| {
            let p = Params::from_parts(
                &client_query(&query_pairs, qs),
                Some(client_query(&body_pairs, bs).as_bytes()),
            );
            let all: Vec<(String, String)> =
                query_pairs.iter().chain(&body_pairs).cloned().collect();
            prop_assert_eq!(p.raw(), &all[..]);
            prop_assert_eq!(p.raw_query(), &query_pairs[..]);
            let mut first: BTreeMap<&str, &str> = BTreeMap::new();
            for (k, v) in &all {
                first.entry(k).or_insert(v);
            }
            let got: Vec<(&str, &str)> = p.iter().collect();
            let want: Vec<(&str, &str)> = first.into_iter().collect();
            prop_assert_eq!(got, want);
            for (k, _) in &all {
                let effective = all.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
                prop_assert_eq!(p.get(k), effective);
            }
            Ok(())
        },
    );
}

#[test]
fn lists_come_back_in_numeric_order() {
    run(
        "lists_come_back_in_numeric_order",
        (
            proptest::collection::btree_map(1u32..2000, param_value(), 0..20),
            style(),
        ),
        |(items, st)| {
            // Shuffle-free but not sorted lexically: the wire order is by the decimal text of the index.
            let mut pairs: Vec<(String, String)> = items
                .iter()
                .map(|(i, v)| (format!("SourceId.{i}"), v.clone()))
                .collect();
            pairs.sort();
            let p = Params::from_query(&client_query(&pairs, st));
            let want: Vec<String> = items.values().cloned().collect();
            prop_assert_eq!(p.get_list("SourceId"), want);
            let idx: Vec<u32> = items.keys().copied().collect();
            prop_assert_eq!(p.indices("SourceId"), idx);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------------------
// Verifiers never panic

fn arbitrary_headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        Just("authorization".to_owned()),
        Just("host".to_owned()),
        Just("content-type".to_owned()),
        Just("x-acs-date".to_owned()),
        Just("x-acs-signature-nonce".to_owned()),
        Just("x-acs-content-sha256".to_owned()),
        Just("x-acs-action".to_owned()),
        Just("x-acs-version".to_owned()),
        Just("x-acs-security-token".to_owned()),
        Just("x-acs-accesskey-id".to_owned()),
        proptest::string::string_regex("x-[a-z-]{1,10}").expect("valid regex"),
    ];
    let value = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        "ACS3-[ -~]{0,120}".prop_map(String::into_bytes),
        proptest::string::string_regex(
            "ACS3-HMAC-SHA256 Credential=[A-Za-z0-9]{0,20},SignedHeaders=[a-z;-]{0,60},Signature=[0-9a-f]{0,70}"
        )
        .expect("valid regex")
        .prop_map(String::into_bytes),
    ];
    proptest::collection::vec((name, value), 0..10)
}

fn header_map(headers: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        // Values HTTP cannot carry (CR, LF, NUL) never reach a server; skip them.
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_bytes(v)) {
            map.append(k, v);
        }
    }
    map
}

#[test]
fn verifiers_never_panic() {
    let signing_param = prop_oneof![
        Just("Signature"),
        Just("SignatureMethod"),
        Just("SignatureVersion"),
        Just("SignatureType"),
        Just("SignatureNonce"),
        Just("Timestamp"),
        Just("AccessKeyId"),
        Just("Action"),
        Just("Version"),
        Just("SecurityToken"),
    ];
    run(
        "verifiers_never_panic",
        (
            proptest::collection::vec((signing_param, nasty_text(40)), 0..12),
            nasty_text(100),
            arbitrary_headers(),
            proptest::collection::vec(any::<u8>(), 0..200),
            any::<bool>(),
            times(),
        ),
        |(signing, extra_query, headers, body, post, (_, now))| {
            let mut query: Vec<(String, String)> = signing
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
            query.push(("AccessKeyId".into(), AK.into()));
            let q = format!(
                "{}&{extra_query}",
                client_query(
                    &query,
                    Style {
                        space_as_plus: true,
                        star_raw: false,
                        lower_hex: false,
                        tilde_encoded: false
                    }
                )
            );
            let headers = header_map(&headers);
            let params = Params::from_request(Some(&q), &headers, &body);
            let method = if post { Method::POST } else { Method::GET };
            // Whatever the outcome, it is a value, not a panic; errors carry a 4xx status.
            if let Err(e) = verify(&method, &params, &headers, &body, lookup, now) {
                prop_assert!((400..500).contains(&e.status), "{:?}", e);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------------------
// v1: the reference signer's requests are accepted; any edit of a signed parameter is rejected

#[derive(Debug, Clone)]
struct V1Case {
    method: Method,
    /// Every signed parameter, `Signature` excluded.
    params: BTreeMap<String, String>,
    /// Which parameters travel in the form body instead of the query.
    in_body: Vec<bool>,
    style: Style,
    now: OffsetDateTime,
}

fn v1_case() -> impl Strategy<Value = V1Case> {
    (
        proptest::collection::btree_map(
            prop_oneof![
                proptest::string::string_regex("X[A-Za-z0-9.]{0,10}").expect("valid regex"),
                "X\\PC{0,6}",
            ],
            param_value(),
            0..8,
        ),
        any::<bool>(),
        proptest::collection::vec(any::<bool>(), 16),
        style(),
        times(),
        proptest::string::string_regex("[0-9a-f]{32}").expect("valid regex"),
        any::<bool>(),
    )
        .prop_map(
            |(mut params, post, in_body, style, (signed_at, now), nonce, type_param)| {
                for (k, v) in [
                    ("Action", "DescribeSourceServers"),
                    ("Version", "2019-06-01"),
                    ("Format", "JSON"),
                    ("AccessKeyId", AK),
                    ("SignatureMethod", "HMAC-SHA1"),
                    ("SignatureVersion", "1.0"),
                ] {
                    params.insert(k.into(), v.into());
                }
                if type_param {
                    params.insert("SignatureType".into(), String::new());
                }
                params.insert("SignatureNonce".into(), nonce);
                params.insert("Timestamp".into(), fmt_time(signed_at));
                V1Case {
                    method: if post { Method::POST } else { Method::GET },
                    params,
                    in_body: if post { in_body } else { vec![false; 16] },
                    style,
                    now,
                }
            },
        )
}

/// Sends `params` (plus `signature`) split between query and body as `case` says, and verifies.
fn v1_verify(
    case: &V1Case,
    params: &[(String, String)],
    signature: &str,
) -> Result<ferry_api::Verified, ferry_api::ApiError> {
    let mut query = Vec::new();
    let mut body = Vec::new();
    for (i, p) in params.iter().enumerate() {
        if case.in_body[i % case.in_body.len()] {
            body.push(p.clone());
        } else {
            query.push(p.clone());
        }
    }
    query.push(("Signature".into(), signature.into()));
    let body = client_query(&body, case.style);
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let params = Params::from_request(
        Some(&client_query(&query, case.style)),
        &headers,
        body.as_bytes(),
    );
    verify(
        &case.method,
        &params,
        &headers,
        body.as_bytes(),
        lookup,
        case.now,
    )
}

#[test]
fn v1_accepts_reference_signatures_and_rejects_any_edit() {
    run(
        "v1_accepts_reference_signatures_and_rejects_any_edit",
        (
            v1_case(),
            any::<usize>(),
            any::<bool>(),
            any::<usize>(),
            "[ -~]",
        ),
        |(case, which, edit_name, pos, with)| {
            let signature = ref_v1_signature(case.method.as_str(), &case.params, SECRET);
            let pairs: Vec<(String, String)> = case.params.clone().into_iter().collect();
            let ok = v1_verify(&case, &pairs, &signature);
            prop_assert!(ok.is_ok(), "rejected a reference signature: {:?}", ok);
            let ok = ok.expect("checked");
            prop_assert_eq!(&ok.access_key_id, AK);
            prop_assert_eq!(
                Some(ok.nonce.as_str()),
                case.params.get("SignatureNonce").map(String::as_str)
            );

            let mut edited = pairs.clone();
            let i = which % edited.len();
            let with = with.chars().next().unwrap_or('a');
            if edit_name {
                edited[i].0 = mutate(&edited[i].0, pos, with);
            } else {
                edited[i].1 = mutate(&edited[i].1, pos, with);
            }
            let bad = v1_verify(&case, &edited, &signature);
            prop_assert!(
                bad.is_err(),
                "accepted an edited request: {:?} -> {:?}",
                pairs[i],
                edited[i]
            );
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------------------
// v3: the reference signer's requests are accepted; any edit of a signed parameter, header or body is
// rejected

#[derive(Debug, Clone)]
struct V3Case {
    method: Method,
    query: BTreeMap<String, String>,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    style: Style,
    now: OffsetDateTime,
}

fn header_value() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[!-~]([ -~]{0,20}[!-~])?").expect("valid regex")
}

fn v3_case() -> impl Strategy<Value = V3Case> {
    (
        proptest::collection::btree_map(
            proptest::string::string_regex("[A-Za-z][A-Za-z0-9._-]{0,10}").expect("valid regex"),
            param_value(),
            0..8,
        ),
        proptest::collection::btree_map(
            proptest::string::string_regex("x-acs-extra-[a-z]{1,6}|user-agent|accept")
                .expect("valid regex"),
            header_value(),
            0..4,
        ),
        prop_oneof![
            Just(Vec::new()),
            proptest::collection::vec(any::<u8>(), 1..200),
        ],
        any::<bool>(),
        style(),
        times(),
        proptest::string::string_regex("[0-9a-f]{32}").expect("valid regex"),
        "127\\.0\\.0\\.1:[0-9]{2,5}",
    )
        .prop_map(
            |(query, mut headers, body, form, style, (signed_at, now), nonce, host)| {
                headers.insert("host".into(), host);
                headers.insert("x-acs-action".into(), "DescribeSourceServers".into());
                headers.insert("x-acs-version".into(), "2019-06-01".into());
                headers.insert("x-acs-date".into(), fmt_time(signed_at));
                headers.insert("x-acs-signature-nonce".into(), nonce);
                headers.insert(
                    "x-acs-content-sha256".into(),
                    hex::encode(sha2::Sha256::digest(&body)),
                );
                if !body.is_empty() {
                    let ct = if form {
                        "application/x-www-form-urlencoded"
                    } else {
                        "application/octet-stream"
                    };
                    headers.insert("content-type".into(), ct.into());
                }
                V3Case {
                    method: Method::POST,
                    query,
                    headers,
                    body,
                    style,
                    now,
                }
            },
        )
}

fn v3_verify(
    case: &V3Case,
    query: &[(String, String)],
    headers: &BTreeMap<String, String>,
    body: &[u8],
    authorization: &str,
) -> Result<ferry_api::Verified, String> {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        let name = HeaderName::try_from(k.as_str()).map_err(|e| e.to_string())?;
        map.insert(name, HeaderValue::from_str(v).map_err(|e| e.to_string())?);
    }
    map.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(authorization).map_err(|e| e.to_string())?,
    );
    let q = client_query(query, case.style);
    let params = Params::from_request(Some(&q), &map, body);
    verify(&case.method, &params, &map, body, lookup, case.now).map_err(|e| format!("{e:?}"))
}

#[test]
fn v3_accepts_reference_signatures_and_rejects_any_edit() {
    run(
        "v3_accepts_reference_signatures_and_rejects_any_edit",
        (
            v3_case(),
            0u8..3,
            any::<usize>(),
            any::<bool>(),
            any::<usize>(),
            "[ -~]",
            1u8..=255,
        ),
        |(case, target, which, edit_name, pos, with, flip)| {
            let auth = ref_v3_authorization(
                case.method.as_str(),
                &case.query,
                &case.headers,
                &case.body,
                AK,
                SECRET,
            );
            let query: Vec<(String, String)> = case.query.clone().into_iter().collect();
            let ok = v3_verify(&case, &query, &case.headers, &case.body, &auth);
            prop_assert!(ok.is_ok(), "rejected a reference signature: {:?}", ok);
            let ok = ok.expect("checked");
            prop_assert_eq!(&ok.access_key_id, AK);
            prop_assert_eq!(
                Some(ok.nonce.as_str()),
                case.headers
                    .get("x-acs-signature-nonce")
                    .map(String::as_str)
            );

            let with = with.chars().next().unwrap_or('a');
            let mut query_e = query.clone();
            let mut headers_e = case.headers.clone();
            let mut body_e = case.body.clone();
            // Edit a query parameter, a signed header's value or a body byte (falling back to a header when
            // there is no query or body to edit).
            match target {
                0 if !query_e.is_empty() => {
                    let i = which % query_e.len();
                    if edit_name {
                        query_e[i].0 = mutate(&query_e[i].0, pos, with);
                    } else {
                        query_e[i].1 = mutate(&query_e[i].1, pos, with);
                    }
                }
                1 if !body_e.is_empty() => {
                    let i = pos % body_e.len();
                    body_e[i] ^= flip;
                }
                _ => {
                    let names: Vec<String> = headers_e.keys().cloned().collect();
                    let name = &names[which % names.len()];
                    let value = headers_e.get(name).cloned().unwrap_or_default();
                    headers_e.insert(name.clone(), mutate(&value, pos, with));
                }
            }
            let bad = v3_verify(&case, &query_e, &headers_e, &body_e, &auth);
            prop_assert!(
                bad.is_err(),
                "accepted an edited request: query {:?} headers {:?} body changed {}",
                query_e,
                headers_e,
                body_e != case.body
            );
            Ok(())
        },
    );
}
