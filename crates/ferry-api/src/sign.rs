//! Request signatures: Alibaba's v1 (HMAC-SHA1 over the canonical query, reference §1.4) and v3
//! (`ACS3-HMAC-SHA256`, §1.5), in both directions.
//!
//! * **Server side**, [`verify`] authenticates a request and enforces the freshness rules of §1.6
//!   (timestamp format, ±15 minutes). It does *not* check nonce replay, which needs state shared by
//!   every replica: it returns the nonce in [`Verified`] and the caller must reject a nonce it has
//!   already seen within [`MAX_CLOCK_SKEW`] (`SignatureNonceUsed`). Nor does it check whether an access
//!   key is disabled or an STS token valid: `lookup` resolves a secret, the caller then checks the
//!   key's status on the authenticated [`Verified::access_key_id`], so that only holders of the secret
//!   learn whether a key is inactive.
//! * **Client side**, [`sign_v1_query`] and [`sign_v3_request`] produce requests the official SDKs
//!   would produce; Ferry's CLI and the tests use them.
//!
//! Invariants:
//! * Everything a handler can act on is covered by the signature: v1 signs the effective parameter set
//!   ([`Params::iter`]) and requires `Action`/`Version` to be in it; v3 signs the query, the body (payload
//!   hash) and requires `host`, `x-acs-date`, `x-acs-content-sha256`, `x-acs-signature-nonce` and any
//!   `x-acs-action`, `x-acs-version`, `x-acs-security-token`, `x-acs-accesskey-id` header present (and
//!   `content-type` when it makes the body a parameter source) to be signed.
//! * Signatures are compared in constant time (`subtle`).
//! * RPC requests are served at path `/`; the v3 canonical URI is therefore always `/`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};

use crate::error::ApiError;
use crate::params::{Params, header_str};
use crate::response::{fmt_time, parse_time};

/// Largest accepted difference between a request's timestamp and the server clock (§1.6).
pub const MAX_CLOCK_SKEW: Duration = Duration::minutes(15);

/// The only v3 algorithm Ferry accepts.
pub const ACS3_HMAC_SHA256: &str = "ACS3-HMAC-SHA256";

/// `hex(SHA-256(""))`, the payload hash of an empty body.
pub const EMPTY_PAYLOAD_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// v3 headers that must always be signed.
const V3_REQUIRED_SIGNED: [&str; 4] = [
    "host",
    "x-acs-date",
    "x-acs-content-sha256",
    "x-acs-signature-nonce",
];

/// v3 headers that must be signed whenever they are present, because the server acts on them.
const V3_SIGNED_IF_PRESENT: [&str; 4] = [
    "x-acs-action",
    "x-acs-version",
    "x-acs-security-token",
    "x-acs-accesskey-id",
];

/// RFC 3986 unreserved characters are kept; everything else is `%XX` with upper-case hex.
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

type HmacSha1 = Hmac<Sha1>;
type HmacSha256 = Hmac<Sha256>;

/// Percent-encode UTF-8 text per RFC 3986 as both signature versions need it: keep
/// `A-Z a-z 0-9 - _ . ~`, encode everything else as upper-case `%XX` (space is `%20`, `*` is `%2A`).
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// An access key secret. Its `Debug` output is redacted so that it never reaches a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret text, for computing a signature.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Credentials a client signs with.
#[derive(Clone, Copy)]
pub struct Credentials<'a> {
    /// The AccessKeyId.
    pub access_key_id: &'a str,
    /// The AccessKeySecret.
    pub access_key_secret: &'a str,
    /// The STS security token, for temporary credentials.
    pub security_token: Option<&'a str>,
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &"<redacted>")
            .field("security_token", &self.security_token.map(|_| "<redacted>"))
            .finish()
    }
}

/// Which signature scheme authenticated a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// HMAC-SHA1 over the canonical query (`SignatureVersion=1.0`).
    V1,
    /// `ACS3-HMAC-SHA256` in the `Authorization` header.
    V3,
}

/// What [`verify`] established about an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The access key that signed the request.
    pub access_key_id: String,
    /// The signature nonce: the caller must reject it if seen within [`MAX_CLOCK_SKEW`].
    pub nonce: String,
    /// The signed request time (within ±[`MAX_CLOCK_SKEW`] of `now`).
    pub timestamp: OffsetDateTime,
    /// The STS token, when the request carries one; the caller must validate it.
    pub security_token: Option<String>,
    /// The scheme that was verified.
    pub signature_version: SignatureVersion,
}

// ---------------------------------------------------------------------------------------------
// v1

/// The v1 canonicalized query string: pairs sorted byte-wise by name, `enc(name)=enc(value)` joined
/// by `&`. A `Signature` pair is left out, so the full request parameters can be passed as they are.
pub fn canonicalized_query_v1<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = params
        .into_iter()
        .filter(|(k, _)| *k != "Signature")
        .collect();
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The v1 string to sign: `METHOD&%2F&enc(CanonicalizedQueryString)` (§1.4 step 5).
pub fn string_to_sign_v1<'a>(
    method: &str,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    format!(
        "{method}&%2F&{}",
        percent_encode(&canonicalized_query_v1(params))
    )
}

fn hmac_sha1(secret: &str, string_to_sign: &str) -> Vec<u8> {
    let key = format!("{secret}&");
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps the code panic-free.
    match HmacSha1::new_from_slice(key.as_bytes()) {
        Ok(mut mac) => {
            mac.update(string_to_sign.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn hmac_sha256(secret: &str, string_to_sign: &str) -> Vec<u8> {
    match HmacSha256::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(string_to_sign.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// The v1 signature: `Base64(HMAC-SHA1(secret + "&", string_to_sign))`.
pub fn signature_v1(secret: &str, string_to_sign: &str) -> String {
    BASE64.encode(hmac_sha1(secret, string_to_sign))
}

/// Sign a v1 request now, with a random nonce; returns the complete query string (without `?`).
/// See [`sign_v1_query_at`].
pub fn sign_v1_query(
    method: &str,
    params: &[(&str, &str)],
    credentials: &Credentials<'_>,
) -> String {
    sign_v1_query_at(
        method,
        params,
        credentials,
        OffsetDateTime::now_utc(),
        &random_nonce(),
    )
}

/// Sign a v1 request at a given time with a given nonce; returns the complete query string (without
/// `?`): `params` plus `Timestamp`, `SignatureNonce`, `SignatureMethod=HMAC-SHA1`,
/// `SignatureVersion=1.0`, `AccessKeyId`, `SecurityToken` (when given), `Format=JSON` (unless `params`
/// has a `Format`) and finally `Signature`. The signing parameters replace same-named ones in `params`.
pub fn sign_v1_query_at(
    method: &str,
    params: &[(&str, &str)],
    credentials: &Credentials<'_>,
    timestamp: OffsetDateTime,
    nonce: &str,
) -> String {
    let timestamp = fmt_time(timestamp);
    let mut all: std::collections::BTreeMap<&str, &str> = params
        .iter()
        .copied()
        .filter(|(k, _)| *k != "Signature")
        .collect();
    all.entry("Format").or_insert("JSON");
    all.insert("Timestamp", &timestamp);
    all.insert("SignatureNonce", nonce);
    all.insert("SignatureMethod", "HMAC-SHA1");
    all.insert("SignatureVersion", "1.0");
    all.insert("AccessKeyId", credentials.access_key_id);
    if let Some(token) = credentials.security_token {
        all.insert("SecurityToken", token);
    }
    let canonical = canonicalized_query_v1(all.iter().map(|(k, v)| (*k, *v)));
    let sts = format!("{method}&%2F&{}", percent_encode(&canonical));
    let signature = signature_v1(credentials.access_key_secret, &sts);
    format!("{canonical}&Signature={}", percent_encode(&signature))
}

/// 128 random bits as 32 lower-case hex characters (the shape of the v1 SDK's md5 nonce).
fn random_nonce() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

// ---------------------------------------------------------------------------------------------
// v3

/// A parsed `Authorization: ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The algorithm, e.g. `ACS3-HMAC-SHA256`.
    pub algorithm: String,
    /// The AccessKeyId (`Credential`).
    pub access_key_id: String,
    /// `SignedHeaders` exactly as sent (`;`-separated), used verbatim in the canonical request.
    pub signed_headers: String,
    /// The signature, hex.
    pub signature: String,
}

impl Authorization {
    /// Parse the header value.
    ///
    /// Errors: `IncompleteSignature` when a part is missing, repeated or empty.
    pub fn parse(value: &str) -> Result<Authorization, ApiError> {
        let value = value.trim();
        let (algorithm, rest) = value.split_once(' ').ok_or_else(|| {
            ApiError::incomplete_signature(
                "the Authorization header must be \"ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…\"",
            )
        })?;
        let mut credential = None;
        let mut signed_headers = None;
        let mut signature = None;
        for part in rest.split(',') {
            let (k, v) = part.trim().split_once('=').ok_or_else(|| {
                ApiError::incomplete_signature(format!(
                    "the Authorization header part \"{}\" is not key=value",
                    part.trim()
                ))
            })?;
            let slot = match k.trim() {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed_headers,
                "Signature" => &mut signature,
                other => {
                    return Err(ApiError::incomplete_signature(format!(
                        "the Authorization header has an unknown part \"{other}\""
                    )));
                }
            };
            if slot.replace(v.trim().to_owned()).is_some() {
                return Err(ApiError::incomplete_signature(format!(
                    "the Authorization header repeats {}",
                    k.trim()
                )));
            }
        }
        let need = |v: Option<String>, name: &str| {
            v.filter(|s| !s.is_empty()).ok_or_else(|| {
                ApiError::incomplete_signature(format!("the Authorization header has no {name}"))
            })
        };
        Ok(Authorization {
            algorithm: algorithm.to_owned(),
            access_key_id: need(credential, "Credential")?,
            signed_headers: need(signed_headers, "SignedHeaders")?,
            signature: need(signature, "Signature")?,
        })
    }

    /// The signed header names, lower-cased.
    pub fn signed_header_names(&self) -> Vec<String> {
        self.signed_headers
            .split(';')
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect()
    }
}

/// `hex(SHA-256(body))`.
pub fn hashed_payload(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The v3 canonical query string: sorted by name, `enc(name)=enc(value)` joined by `&`; empty when
/// there is no query.
pub fn canonical_query_v3<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
    pairs.sort_unstable();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The v3 canonical headers for `signed` (lower-case names, in the client's order):
/// `name:trim(value)\n` each, repeated headers' values sorted and joined by `,`. A signed header that
/// is absent contributes `name:\n` (the signature will then not match unless the client did the same).
pub fn canonical_headers_v3(headers: &HeaderMap, signed: &[String]) -> String {
    let mut out = String::new();
    for name in signed {
        let mut values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned())
            .collect();
        values.sort_unstable();
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out
}

/// `Method\nURI\nQuery\nCanonicalHeaders\nSignedHeaders\nHashedPayload` (§1.5 step 6);
/// `canonical_headers` already ends with `\n`.
pub fn canonical_request_v3(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    canonical_headers: &str,
    signed_headers: &str,
    hashed_payload: &str,
) -> String {
    format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{hashed_payload}"
    )
}

/// `ACS3-HMAC-SHA256\n` + `hex(SHA-256(canonical_request))`.
pub fn string_to_sign_v3(canonical_request: &str) -> String {
    format!(
        "{ACS3_HMAC_SHA256}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// The v3 signature: lower-case `hex(HMAC-SHA256(secret, string_to_sign))` (no `&` on the key).
pub fn signature_v3(secret: &str, string_to_sign: &str) -> String {
    hex::encode(hmac_sha256(secret, string_to_sign))
}

/// What a client needs to send a v3-signed RPC request.
#[derive(Debug, Clone, Copy)]
pub struct V3Request<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The `host` header value, including `:port` when not the default.
    pub host: &'a str,
    /// The action (sent as `x-acs-action`).
    pub action: &'a str,
    /// The API version (sent as `x-acs-version`).
    pub version: &'a str,
    /// Query parameters.
    pub query: &'a [(&'a str, &'a str)],
    /// Request body (empty for the SMC SDKs).
    pub body: &'a [u8],
    /// `content-type` of the body, when there is one (signed).
    pub content_type: Option<&'a str>,
}

/// A v3-signed request: send `POST /?{query}` with exactly these headers and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedV3 {
    /// The query string (without `?`), RFC 3986-encoded.
    pub query: String,
    /// Headers to send, `authorization` included; names lower-case.
    pub headers: Vec<(String, String)>,
}

/// Sign a v3 request now, with a random nonce. See [`sign_v3_request_at`].
pub fn sign_v3_request(request: &V3Request<'_>, credentials: &Credentials<'_>) -> SignedV3 {
    sign_v3_request_at(
        request,
        credentials,
        OffsetDateTime::now_utc(),
        &random_nonce(),
    )
}

/// Sign a v3 request at a given time with a given nonce, signing `host`, `content-type` (when set)
/// and every `x-acs-*` header, like the Go/Java SDKs.
pub fn sign_v3_request_at(
    request: &V3Request<'_>,
    credentials: &Credentials<'_>,
    date: OffsetDateTime,
    nonce: &str,
) -> SignedV3 {
    let payload = hashed_payload(request.body);
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), request.host.into()),
        ("x-acs-action".into(), request.action.into()),
        ("x-acs-version".into(), request.version.into()),
        ("x-acs-date".into(), fmt_time(date)),
        ("x-acs-signature-nonce".into(), nonce.into()),
        ("x-acs-content-sha256".into(), payload.clone()),
    ];
    if let Some(ct) = request.content_type {
        headers.push(("content-type".into(), ct.into()));
    }
    if let Some(token) = credentials.security_token {
        headers.push(("x-acs-security-token".into(), token.into()));
        headers.push((
            "x-acs-accesskey-id".into(),
            credentials.access_key_id.into(),
        ));
    }
    headers.sort();
    let signed: Vec<String> = headers.iter().map(|(k, _)| k.clone()).collect();
    let signed_joined = signed.join(";");
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let query = canonical_query_v3(request.query.iter().copied());
    let canonical = canonical_request_v3(
        request.method,
        "/",
        &query,
        &canonical_headers,
        &signed_joined,
        &payload,
    );
    let signature = signature_v3(
        credentials.access_key_secret,
        &string_to_sign_v3(&canonical),
    );
    headers.push((
        "authorization".into(),
        format!(
            "{ACS3_HMAC_SHA256} Credential={},SignedHeaders={signed_joined},Signature={signature}",
            credentials.access_key_id
        ),
    ));
    SignedV3 { query, headers }
}

// ---------------------------------------------------------------------------------------------
// Server-side verification

/// Authenticate an RPC request (§1.3 step 3, §1.4–§1.6).
///
/// `method` is the request method as sent, `params` the decoded request parameters, `headers` and
/// `body` the raw request; `lookup` resolves an AccessKeyId to its secret; `now` is the server clock.
/// v3 is used when `Authorization` starts with `ACS3-`, v1 when the parameters contain `Signature`.
///
/// Errors (all [`ApiError`]): `IncompleteSignature` (unsigned, unsupported scheme or algorithm,
/// missing or malformed signing component, v3 header that must be signed but is not),
/// `InvalidTimeStamp.Format`, `InvalidTimeStamp.Expired`, `XAcsContentSHA256Mismatch`,
/// `InvalidAccessKeyId.NotFound` (404), `SignatureDoesNotMatch` (message ends with the server's string
/// to sign). Nonce replay, key status and STS validity are the caller's to check (module docs).
pub fn verify(
    method: &http::Method,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
    lookup: impl Fn(&str) -> Option<Secret>,
    now: OffsetDateTime,
) -> Result<Verified, ApiError> {
    let authorization = header_str(headers, "authorization");
    match authorization {
        Some(auth) if auth.starts_with("ACS3-") => {
            verify_v3(method, params, headers, body, auth, lookup, now)
        }
        _ if params.contains("Signature") => verify_v1(method, params, lookup, now),
        Some(_) => Err(ApiError::incomplete_signature(
            "the Authorization scheme is not supported: sign with ACS3-HMAC-SHA256 or with a v1 Signature parameter",
        )),
        None => Err(ApiError::incomplete_signature(
            "the request is not signed: add a v1 Signature parameter or an ACS3-HMAC-SHA256 Authorization header",
        )),
    }
}

/// Check the timestamp's shape and freshness.
fn check_time(name: &str, value: &str, now: OffsetDateTime) -> Result<OffsetDateTime, ApiError> {
    let t = parse_time(value).ok_or_else(|| ApiError::invalid_timestamp_format(name, value))?;
    if (t - now).abs() > MAX_CLOCK_SKEW {
        return Err(ApiError::invalid_timestamp_expired(
            value,
            &fmt_time(now),
            MAX_CLOCK_SKEW.whole_minutes(),
        ));
    }
    Ok(t)
}

fn verify_v1(
    method: &http::Method,
    params: &Params,
    lookup: impl Fn(&str) -> Option<Secret>,
    now: OffsetDateTime,
) -> Result<Verified, ApiError> {
    let need = |name: &str| {
        params.get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
            ApiError::incomplete_signature(format!("the {name} parameter is missing"))
        })
    };
    let signature = need("Signature")?;
    match need("SignatureMethod")? {
        "HMAC-SHA1" => {}
        other => {
            return Err(ApiError::incomplete_signature(format!(
                "SignatureMethod {other} is not supported: use HMAC-SHA1"
            )));
        }
    }
    match need("SignatureVersion")? {
        "1.0" => {}
        other => {
            return Err(ApiError::incomplete_signature(format!(
                "SignatureVersion {other} is not supported: use 1.0"
            )));
        }
    }
    // The v1 core sends `SignatureType=` (empty) for AK signatures; a non-empty type selects RSA key
    // pairs or bearer tokens, which Ferry does not implement.
    if let Some(kind) = params.get("SignatureType").filter(|v| !v.is_empty()) {
        return Err(ApiError::incomplete_signature(format!(
            "SignatureType {kind} is not supported: sign with an AccessKey secret (HMAC-SHA1)"
        )));
    }
    // Headers are not covered by a v1 signature, so the operation must come from the signed set.
    for name in ["Action", "Version"] {
        if params.get(name).is_none_or(str::is_empty) {
            return Err(ApiError::incomplete_signature(format!(
                "a v1-signed request must carry {name} as a signed query or form parameter"
            )));
        }
    }
    let access_key_id = need("AccessKeyId")?;
    let nonce = need("SignatureNonce")?;
    let timestamp = check_time("Timestamp", need("Timestamp")?, now)?;
    // A client that forgot to percent-encode the base64 `+` had it decoded to a space; base64 has no
    // spaces, so turning them back is unambiguous.
    let provided = BASE64
        .decode(signature.replace(' ', "+"))
        .map_err(|_| ApiError::incomplete_signature("the Signature parameter is not base64"))?;
    let secret =
        lookup(access_key_id).ok_or_else(|| ApiError::access_key_not_found(access_key_id))?;
    let sts = string_to_sign_v1(method.as_str(), params.iter());
    let expected = hmac_sha1(secret.expose(), &sts);
    if !bool::from(expected.ct_eq(&provided)) {
        return Err(ApiError::signature_does_not_match(&sts));
    }
    Ok(Verified {
        access_key_id: access_key_id.to_owned(),
        nonce: nonce.to_owned(),
        timestamp,
        security_token: params
            .get("SecurityToken")
            .filter(|v| !v.is_empty())
            .map(str::to_owned),
        signature_version: SignatureVersion::V1,
    })
}

fn verify_v3(
    method: &http::Method,
    params: &Params,
    headers: &HeaderMap,
    body: &[u8],
    authorization: &str,
    lookup: impl Fn(&str) -> Option<Secret>,
    now: OffsetDateTime,
) -> Result<Verified, ApiError> {
    let auth = Authorization::parse(authorization)?;
    if auth.algorithm != ACS3_HMAC_SHA256 {
        return Err(ApiError::incomplete_signature(format!(
            "the signature algorithm {} is not supported: use {ACS3_HMAC_SHA256}",
            auth.algorithm
        )));
    }
    let signed = auth.signed_header_names();
    let is_signed = |h: &str| signed.iter().any(|s| s == h);
    for h in V3_REQUIRED_SIGNED {
        if !is_signed(h) {
            return Err(ApiError::incomplete_signature(format!(
                "the {h} header must be listed in SignedHeaders"
            )));
        }
        if header_str(headers, h).is_none() {
            return Err(ApiError::incomplete_signature(format!(
                "the signed header {h} is missing from the request"
            )));
        }
    }
    for h in V3_SIGNED_IF_PRESENT {
        if headers.contains_key(h) && !is_signed(h) {
            return Err(ApiError::incomplete_signature(format!(
                "the {h} header is present but not listed in SignedHeaders: sign every x-acs-* header you send"
            )));
        }
    }
    // A form body is a parameter source, so the header that makes it one must be signed too.
    let form_body = !body.is_empty()
        && header_str(headers, "content-type").is_some_and(|ct| {
            ct.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if form_body && !is_signed("content-type") {
        return Err(ApiError::incomplete_signature(
            "a form-urlencoded body requires the content-type header to be listed in SignedHeaders",
        ));
    }
    // `header_str` returned Some for every required header above; the fallbacks are unreachable.
    let date = header_str(headers, "x-acs-date").unwrap_or_default();
    let nonce = header_str(headers, "x-acs-signature-nonce").unwrap_or_default();
    let claimed_payload = header_str(headers, "x-acs-content-sha256").unwrap_or_default();
    let timestamp = check_time("x-acs-date", date, now)?;
    let payload = hashed_payload(body);
    if !claimed_payload.eq_ignore_ascii_case(&payload) {
        return Err(ApiError::content_sha256_mismatch(claimed_payload, &payload));
    }
    if let Some(header_ak) =
        header_str(headers, "x-acs-accesskey-id").filter(|ak| *ak != auth.access_key_id)
    {
        return Err(ApiError::incomplete_signature(format!(
            "x-acs-accesskey-id ({header_ak}) differs from the Authorization Credential ({})",
            auth.access_key_id
        )));
    }
    let provided = hex::decode(&auth.signature)
        .ok()
        .filter(|s| s.len() == 32)
        .ok_or_else(|| {
            ApiError::incomplete_signature("the Authorization Signature is not 64 hex digits")
        })?;
    let secret = lookup(&auth.access_key_id)
        .ok_or_else(|| ApiError::access_key_not_found(&auth.access_key_id))?;
    let canonical = canonical_request_v3(
        method.as_str(),
        "/",
        &canonical_query_v3(params.query_iter()),
        &canonical_headers_v3(headers, &signed),
        &auth.signed_headers,
        &payload,
    );
    let sts = string_to_sign_v3(&canonical);
    let expected = hmac_sha256(secret.expose(), &sts);
    if !bool::from(expected.ct_eq(&provided)) {
        return Err(ApiError::signature_does_not_match(&sts));
    }
    Ok(Verified {
        access_key_id: auth.access_key_id,
        nonce: nonce.to_owned(),
        timestamp,
        security_token: header_str(headers, "x-acs-security-token")
            .or_else(|| params.get("SecurityToken").filter(|v| !v.is_empty()))
            .map(str::to_owned),
        signature_version: SignatureVersion::V3,
    })
}

#[cfg(test)]
mod tests;
