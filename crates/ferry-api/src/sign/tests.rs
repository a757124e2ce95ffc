//! Signature tests: every vector of reference §1.4 and §1.5, round trips, and each rejection rule.

use super::*;
use http::{HeaderName, HeaderValue, Method};
use time::macros::datetime;

const AK: &str = "testid";
const SECRET: &str = "testsecret";

fn lookup(id: &str) -> Option<Secret> {
    (id == AK).then(|| Secret::new(SECRET))
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).expect("test header name"),
            HeaderValue::from_str(v).expect("test header value"),
        );
    }
    h
}

fn creds() -> Credentials<'static> {
    Credentials {
        access_key_id: AK,
        access_key_secret: SECRET,
        security_token: None,
    }
}

// ---- §1.4 vectors --------------------------------------------------------------------------

#[test]
fn percent_encoding_rules() {
    assert_eq!(percent_encode("a b"), "a%20b");
    assert_eq!(percent_encode("*"), "%2A");
    assert_eq!(percent_encode("~-_.AZaz09"), "~-_.AZaz09");
    assert_eq!(percent_encode("/=&+%:"), "%2F%3D%26%2B%25%3A");
    assert_eq!(percent_encode("é"), "%C3%A9");
}

#[test]
fn ram_doc_vector() {
    let params = [
        ("AccessKeyId", "testid"),
        ("Action", "CreateUser"),
        ("Format", "JSON"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "6a6e0ca6-4557-11e5-86a2-b8e8563dc8d2"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2015-08-18T03:15:45Z"),
        ("UserName", "test"),
        ("Version", "2015-05-01"),
    ];
    let sts = string_to_sign_v1("GET", params);
    assert_eq!(
        sts,
        "GET&%2F&AccessKeyId%3Dtestid%26Action%3DCreateUser%26Format%3DJSON%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D6a6e0ca6-4557-11e5-86a2-b8e8563dc8d2%26SignatureVersion%3D1.0%26Timestamp%3D2015-08-18T03%253A15%253A45Z%26UserName%3Dtest%26Version%3D2015-05-01"
    );
    assert_eq!(signature_v1(SECRET, &sts), "kRA2cnpJVacIhDMzXnoNZG9tDCI=");
}

#[test]
fn sdk_rpcsignature_vector_with_space_star_and_slash() {
    // Deliberately unsorted: the canonicalisation must sort.
    let params = [
        ("Version", "2019-06-01"),
        ("Name", "my job*1 /x"),
        ("AccessKeyId", "testid"),
        ("Action", "DescribeReplicationJobs"),
        ("Format", "json"),
        ("RegionId", "cn-hangzhou"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", "abc"),
        ("SignatureVersion", "1.0"),
        ("Timestamp", "2024-01-01T00:00:00Z"),
    ];
    let sts = string_to_sign_v1("POST", params);
    assert!(sts.contains("Name%3Dmy%2520job%252A1%2520%252Fx"), "{sts}");
    assert_eq!(signature_v1(SECRET, &sts), "gifQpvbI1j5tj4U2vhHejBlYHuA=");
}

const SDK_V1_QUERY: &str = "SourceId.1=s-1&SourceId.2=s-2&PageSize=10&Version=2019-06-01&Action=DescribeSourceServers&Format=JSON&RegionId=cn-hangzhou&Timestamp=2024-01-01T00%3A00%3A00Z&SignatureMethod=HMAC-SHA1&SignatureType=&SignatureVersion=1.0&SignatureNonce=0123456789abcdef0123456789abcdef&AccessKeyId=testid&Signature=i4DMDdtDTzsrLvQQe5jHu35RScI%3D";
const SDK_V1_STS: &str = "POST&%2F&AccessKeyId%3Dtestid%26Action%3DDescribeSourceServers%26Format%3DJSON%26PageSize%3D10%26RegionId%3Dcn-hangzhou%26SignatureMethod%3DHMAC-SHA1%26SignatureNonce%3D0123456789abcdef0123456789abcdef%26SignatureType%3D%26SignatureVersion%3D1.0%26SourceId.1%3Ds-1%26SourceId.2%3Ds-2%26Timestamp%3D2024-01-01T00%253A00%253A00Z%26Version%3D2019-06-01";

fn sdk_v1_headers() -> HeaderMap {
    headers(&[
        ("x-acs-action", "DescribeSourceServers"),
        ("x-acs-version", "2019-06-01"),
        ("x-sdk-invoke-type", "normal"),
    ])
}

#[test]
fn complete_sdk_v1_request_string_to_sign_and_signature() {
    let p = Params::from_query(SDK_V1_QUERY);
    let sts = string_to_sign_v1("POST", p.iter());
    assert_eq!(sts, SDK_V1_STS);
    assert_eq!(signature_v1(SECRET, &sts), "i4DMDdtDTzsrLvQQe5jHu35RScI=");
    assert_eq!(p.get("Signature"), Some("i4DMDdtDTzsrLvQQe5jHu35RScI="));
}

#[test]
fn complete_sdk_v1_request_is_verified() {
    let p = Params::from_query(SDK_V1_QUERY);
    let v = verify(
        &Method::POST,
        &p,
        &sdk_v1_headers(),
        b"",
        lookup,
        datetime!(2024-01-01 00:14:59 UTC),
    )
    .expect("the SDK's own request verifies");
    assert_eq!(
        v,
        Verified {
            access_key_id: "testid".into(),
            nonce: "0123456789abcdef0123456789abcdef".into(),
            timestamp: datetime!(2024-01-01 00:00:00 UTC),
            security_token: None,
            signature_version: SignatureVersion::V1,
        }
    );
    // The method is part of the string to sign.
    let e = verify(
        &Method::GET,
        &p,
        &sdk_v1_headers(),
        b"",
        lookup,
        datetime!(2024-01-01 00:00:00 UTC),
    )
    .expect_err("GET was not signed");
    assert_eq!(e.code, "SignatureDoesNotMatch");
}

#[test]
fn client_signer_reproduces_the_sdk_request() {
    let params = [
        ("SourceId.1", "s-1"),
        ("SourceId.2", "s-2"),
        ("PageSize", "10"),
        ("Version", "2019-06-01"),
        ("Action", "DescribeSourceServers"),
        ("RegionId", "cn-hangzhou"),
        ("SignatureType", ""),
    ];
    let q = sign_v1_query_at(
        "POST",
        &params,
        &creds(),
        datetime!(2024-01-01 00:00:00 UTC),
        "0123456789abcdef0123456789abcdef",
    );
    assert!(
        q.ends_with("&Signature=i4DMDdtDTzsrLvQQe5jHu35RScI%3D"),
        "{q}"
    );
    // Same parameter set as the SDK's request, whatever the order.
    let ours = Params::from_query(&q);
    let sdk = Params::from_query(SDK_V1_QUERY);
    assert_eq!(
        ours.iter().collect::<Vec<_>>(),
        sdk.iter().collect::<Vec<_>>()
    );
}

// ---- §1.5 vector ---------------------------------------------------------------------------

const V3_WIRE_QUERY: &str =
    "Name=my+job%2A1+%2Fx&RegionId=cn-hangzhou&SourceId.1=s-123&Tag.1.Key=k~ey";
const V3_SIGNED_HEADERS: &str = "accept;host;user-agent;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version";
const V3_SIGNATURE: &str = "a7081a3c7be6b2eb014d3fdcb969c848644451a08fb72465c1d2ef536c0fb5d9";

fn v3_vector_headers() -> HeaderMap {
    headers(&[
        ("host", "127.0.0.1:8080"),
        ("x-acs-action", "DescribeReplicationJobs"),
        ("x-acs-version", "2019-06-01"),
        ("x-acs-date", "2024-01-01T00:00:00Z"),
        ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
        ("accept", "application/json"),
        (
            "user-agent",
            "AlibabaCloud (Linux; x86_64) Python/3.11 Core/0.0.0 TeaDSL/2",
        ),
        ("x-acs-content-sha256", EMPTY_PAYLOAD_SHA256),
    ])
}

fn v3_authorization(signature: &str) -> String {
    format!(
        "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders={V3_SIGNED_HEADERS},Signature={signature}"
    )
}

#[test]
fn sdk_v3_vector() {
    assert_eq!(hashed_payload(b""), EMPTY_PAYLOAD_SHA256);
    let p = Params::from_query(V3_WIRE_QUERY);
    let query = canonical_query_v3(p.query_iter());
    assert_eq!(
        query,
        "Name=my%20job%2A1%20%2Fx&RegionId=cn-hangzhou&SourceId.1=s-123&Tag.1.Key=k~ey"
    );
    let auth = Authorization::parse(&v3_authorization(V3_SIGNATURE)).expect("well-formed");
    let canonical = canonical_request_v3(
        "POST",
        "/",
        &query,
        &canonical_headers_v3(&v3_vector_headers(), &auth.signed_header_names()),
        &auth.signed_headers,
        &hashed_payload(b""),
    );
    assert_eq!(
        hex::encode(Sha256::digest(canonical.as_bytes())),
        "c3767f235e710a25bb29b1fb9028d9b545306d8657ac9b4b083290ae50ff0e3b"
    );
    let sts = string_to_sign_v3(&canonical);
    assert_eq!(
        sts,
        "ACS3-HMAC-SHA256\nc3767f235e710a25bb29b1fb9028d9b545306d8657ac9b4b083290ae50ff0e3b"
    );
    assert_eq!(signature_v3(SECRET, &sts), V3_SIGNATURE);
}

#[test]
fn sdk_v3_request_is_verified() {
    let p = Params::from_query(V3_WIRE_QUERY);
    let mut h = v3_vector_headers();
    h.insert(
        "authorization",
        HeaderValue::from_str(&v3_authorization(V3_SIGNATURE)).expect("ascii"),
    );
    let v = verify(
        &Method::POST,
        &p,
        &h,
        b"",
        lookup,
        datetime!(2023-12-31 23:45:00 UTC),
    )
    .expect("the SDK's own request verifies");
    assert_eq!(v.access_key_id, "testid");
    assert_eq!(v.nonce, "3156853299f313e23d1673dc12e1703d");
    assert_eq!(v.timestamp, datetime!(2024-01-01 00:00:00 UTC));
    assert_eq!(v.signature_version, SignatureVersion::V3);
    assert_eq!(v.security_token, None);
    assert_eq!(
        p.action_version(&h).map(|a| a.action),
        Ok("DescribeReplicationJobs".into())
    );

    // Tampering with a signed header value breaks the signature.
    h.insert("accept", HeaderValue::from_static("application/xml"));
    let e = verify(
        &Method::POST,
        &p,
        &h,
        b"",
        lookup,
        datetime!(2024-01-01 00:00:00 UTC),
    )
    .expect_err("accept was signed");
    assert_eq!(e.code, "SignatureDoesNotMatch");
    assert!(
        e.message
            .starts_with("Specified signature is not matched with our calculation. server string to sign is:ACS3-HMAC-SHA256\n"),
        "{}",
        e.message
    );
}

#[test]
fn authorization_parsing() {
    let a = Authorization::parse(&v3_authorization(V3_SIGNATURE)).expect("well-formed");
    assert_eq!(a.algorithm, "ACS3-HMAC-SHA256");
    assert_eq!(a.access_key_id, "testid");
    assert_eq!(a.signature, V3_SIGNATURE);
    assert_eq!(a.signed_header_names().len(), 8);
    for bad in [
        "ACS3-HMAC-SHA256",
        "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host",
        "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature=",
        "ACS3-HMAC-SHA256 Credential=a,Credential=b,SignedHeaders=host,Signature=00",
        "ACS3-HMAC-SHA256 Credential=a,SignedHeaders=host,Signature=00,Extra=1",
        "ACS3-HMAC-SHA256 Credential",
    ] {
        let e = Authorization::parse(bad).expect_err(bad);
        assert_eq!(e.code, "IncompleteSignature", "{bad}");
    }
}

// ---- round trips ---------------------------------------------------------------------------

const NOW: OffsetDateTime = datetime!(2024-05-06 07:08:09 UTC);

#[test]
fn v1_round_trip_and_tampering() {
    let params = [
        ("Action", "StartReplicationJob"),
        ("Version", "2019-06-01"),
        ("JobId", "j-bp19vlwm0tyigbmj0001"),
        ("Description", "tilde~ star* plus+ space é"),
    ];
    let q = sign_v1_query_at("POST", &params, &creds(), NOW, "nonce-1");
    let p = Params::from_query(&q);
    assert_eq!(p.get("Description"), Some("tilde~ star* plus+ space é"));
    assert_eq!(p.get("Format"), Some("JSON"));
    let v = verify(&Method::POST, &p, &HeaderMap::new(), b"", lookup, NOW).expect("round trip");
    assert_eq!(v.nonce, "nonce-1");
    assert_eq!(v.timestamp, NOW);

    // Flip one byte of the query at every position that is part of a value; all must be rejected.
    let bytes = q.as_bytes();
    let mut rejected = 0;
    for i in 0..bytes.len() {
        if !bytes[i].is_ascii_alphanumeric() {
            continue;
        }
        let mut t = bytes.to_vec();
        t[i] = if t[i] == b'x' { b'y' } else { b'x' };
        let t = String::from_utf8(t).expect("ascii");
        let r = verify(
            &Method::POST,
            &Params::from_query(&t),
            &HeaderMap::new(),
            b"",
            lookup,
            NOW,
        );
        assert!(r.is_err(), "flipping byte {i} was accepted: {t}");
        rejected += 1;
    }
    assert!(rejected > 100);
}

#[test]
fn v1_signature_with_unencoded_plus_is_accepted() {
    // Find a nonce whose signature contains '+', then send it unencoded: it decodes as a space.
    let params = [("Action", "A"), ("Version", "2019-06-01")];
    let q = (0..1000)
        .map(|i| sign_v1_query_at("GET", &params, &creds(), NOW, &format!("n{i}")))
        .find(|q| q.contains("%2B"))
        .expect("some signature contains '+'");
    let (head, sig) = q.rsplit_once("&Signature=").expect("signature last");
    let raw = format!("{head}&Signature={}", sig.replace("%2B", "+"));
    let p = Params::from_query(&raw);
    assert!(p.get("Signature").is_some_and(|s| s.contains(' ')));
    assert!(verify(&Method::GET, &p, &HeaderMap::new(), b"", lookup, NOW).is_ok());
}

#[test]
fn v1_security_token_is_signed_and_reported() {
    let c = Credentials {
        security_token: Some("sts-token-1"),
        ..creds()
    };
    let q = sign_v1_query_at("POST", &[("Action", "A"), ("Version", "V")], &c, NOW, "n");
    let p = Params::from_query(&q);
    let v = verify(&Method::POST, &p, &HeaderMap::new(), b"", lookup, NOW).expect("verifies");
    assert_eq!(v.security_token.as_deref(), Some("sts-token-1"));
}

#[test]
fn v1_form_body_parameters_are_signed() {
    let q = sign_v1_query_at(
        "POST",
        &[("Action", "A"), ("Version", "V"), ("Name", "x y")],
        &creds(),
        NOW,
        "n",
    );
    // Move Name into a form body: still the same effective set, still valid.
    let (query, body): (Vec<&str>, Vec<&str>) =
        q.split('&').partition(|kv| !kv.starts_with("Name="));
    let p = Params::from_parts(&query.join("&"), Some(body.join("&").as_bytes()));
    assert!(verify(&Method::POST, &p, &HeaderMap::new(), b"", lookup, NOW).is_ok());
    // A body value that a query value shadows is not effective, so it cannot change the result...
    let p = Params::from_parts(&q, Some(b"Name=evil"));
    assert_eq!(p.get("Name"), Some("x y"));
    assert!(verify(&Method::POST, &p, &HeaderMap::new(), b"", lookup, NOW).is_ok());
    // ...but a new body parameter is effective and therefore must be signed.
    let p = Params::from_parts(&q, Some(b"Extra=1"));
    let e = verify(&Method::POST, &p, &HeaderMap::new(), b"", lookup, NOW).expect_err("unsigned");
    assert_eq!(e.code, "SignatureDoesNotMatch");
}

fn v3_request<'a>(query: &'a [(&'a str, &'a str)], body: &'a [u8]) -> V3Request<'a> {
    V3Request {
        method: "POST",
        host: "127.0.0.1:9443",
        action: "DescribeSourceServers",
        version: "2019-06-01",
        query,
        body,
        content_type: None,
    }
}

fn to_parts(s: &SignedV3, body: &[u8]) -> (Params, HeaderMap) {
    let pairs: Vec<(&str, &str)> = s
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let h = headers(&pairs);
    (Params::from_request(Some(&s.query), &h, body), h)
}

#[test]
fn v3_round_trip_and_tampering() {
    let query = [("SourceId.1", "s-1"), ("Name", "a b*c/~")];
    let s = sign_v3_request_at(&v3_request(&query, b""), &creds(), NOW, "nonce-3");
    let (p, h) = to_parts(&s, b"");
    let v = verify(&Method::POST, &p, &h, b"", lookup, NOW).expect("round trip");
    assert_eq!(v.nonce, "nonce-3");
    assert_eq!(v.signature_version, SignatureVersion::V3);

    // Every header value byte flipped is rejected (host, date, nonce, action, version, sha, auth).
    for (name, value) in &s.headers {
        let mut tampered = h.clone();
        let mut b = value.as_bytes().to_vec();
        let i = b.len() - 1;
        b[i] = if b[i] == b'0' { b'1' } else { b'0' };
        tampered.insert(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_bytes(&b).expect("value"),
        );
        assert!(
            verify(&Method::POST, &p, &tampered, b"", lookup, NOW).is_err(),
            "tampered {name} accepted"
        );
    }
    // A changed or added query parameter is rejected.
    let tampered = Params::from_query(&s.query.replace("s-1", "s-2"));
    assert!(verify(&Method::POST, &tampered, &h, b"", lookup, NOW).is_err());
    let tampered = Params::from_query(&format!("{}&Extra=1", s.query));
    assert!(verify(&Method::POST, &tampered, &h, b"", lookup, NOW).is_err());
}

#[test]
fn v3_body_is_covered_by_the_payload_hash() {
    let body = b"JobId=j-1&Name=x+y";
    let req = V3Request {
        content_type: Some("application/x-www-form-urlencoded"),
        ..v3_request(&[], body)
    };
    let s = sign_v3_request_at(&req, &creds(), NOW, "n");
    let (p, h) = to_parts(&s, body);
    assert_eq!(p.get("Name"), Some("x y"));
    assert!(verify(&Method::POST, &p, &h, body, lookup, NOW).is_ok());

    let evil = b"JobId=j-2&Name=x+y";
    let p2 = Params::from_request(Some(&s.query), &h, evil);
    let e = verify(&Method::POST, &p2, &h, evil, lookup, NOW).expect_err("body changed");
    assert_eq!(e.code, "XAcsContentSHA256Mismatch");
    assert!(e.message.contains(&hashed_payload(evil)));
}

#[test]
fn v3_form_body_needs_signed_content_type() {
    let body = b"JobId=j-1";
    // Signed without a content type, then sent as a form: the content type is not signed.
    let s = sign_v3_request_at(&v3_request(&[], body), &creds(), NOW, "n");
    let (_, mut h) = to_parts(&s, body);
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-www-form-urlencoded"),
    );
    let p = Params::from_request(Some(&s.query), &h, body);
    let e = verify(&Method::POST, &p, &h, body, lookup, NOW).expect_err("unsigned content-type");
    assert_eq!(e.code, "IncompleteSignature");
    assert!(e.message.contains("content-type"), "{}", e.message);
}

#[test]
fn v3_security_token() {
    let c = Credentials {
        security_token: Some("sts-token-3"),
        ..creds()
    };
    let s = sign_v3_request_at(&v3_request(&[], b""), &c, NOW, "n");
    let (p, h) = to_parts(&s, b"");
    let v = verify(&Method::POST, &p, &h, b"", lookup, NOW).expect("verifies");
    assert_eq!(v.security_token.as_deref(), Some("sts-token-3"));
}

#[test]
fn v3_access_key_header_must_match_credential() {
    let c = Credentials {
        security_token: Some("tok"),
        ..creds()
    };
    let s = sign_v3_request_at(&v3_request(&[], b""), &c, NOW, "n");
    let (p, mut h) = to_parts(&s, b"");
    h.insert(
        "x-acs-accesskey-id",
        HeaderValue::from_static("someone-else"),
    );
    let e = verify(&Method::POST, &p, &h, b"", lookup, NOW).expect_err("mismatch");
    assert_eq!(e.code, "IncompleteSignature");
    assert!(e.message.contains("someone-else"), "{}", e.message);
}

// ---- rejection rules ------------------------------------------------------------------------

fn v1_query_at(t: OffsetDateTime) -> String {
    sign_v1_query_at(
        "POST",
        &[("Action", "A"), ("Version", "V")],
        &creds(),
        t,
        "n",
    )
}

fn verify_v1_query(q: &str, now: OffsetDateTime) -> Result<Verified, ApiError> {
    verify(
        &Method::POST,
        &Params::from_query(q),
        &HeaderMap::new(),
        b"",
        lookup,
        now,
    )
}

#[test]
fn unsigned_requests_are_incomplete() {
    let e = verify_v1_query("Action=A&Version=V", NOW).expect_err("unsigned");
    assert_eq!((e.code.as_ref(), e.status), ("IncompleteSignature", 400));
    let h = headers(&[("authorization", "Bearer abc")]);
    let e = verify(&Method::POST, &Params::default(), &h, b"", lookup, NOW).expect_err("bearer");
    assert_eq!(e.code, "IncompleteSignature");
}

#[test]
fn clock_skew_limit_is_fifteen_minutes_each_way() {
    let q = v1_query_at(NOW);
    assert!(verify_v1_query(&q, NOW + Duration::minutes(15)).is_ok());
    assert!(verify_v1_query(&q, NOW - Duration::minutes(15)).is_ok());
    for now in [
        NOW + Duration::minutes(15) + Duration::seconds(1),
        NOW - Duration::minutes(15) - Duration::seconds(1),
    ] {
        let e = verify_v1_query(&q, now).expect_err("outside window");
        assert_eq!(
            (e.code.as_ref(), e.status),
            ("InvalidTimeStamp.Expired", 400)
        );
    }
}

#[test]
fn timestamp_format_is_checked() {
    let q = v1_query_at(NOW).replace(
        "Timestamp=2024-05-06T07%3A08%3A09Z",
        "Timestamp=2024-05-06+07%3A08%3A09",
    );
    let e = verify_v1_query(&q, NOW).expect_err("bad format");
    assert_eq!(
        (e.code.as_ref(), e.status),
        ("InvalidTimeStamp.Format", 400)
    );
    assert!(e.message.contains("2024-05-06 07:08:09"), "{}", e.message);
}

#[test]
fn unknown_access_key_is_404() {
    let c = Credentials {
        access_key_id: "nobody",
        ..creds()
    };
    let q = sign_v1_query_at("POST", &[("Action", "A"), ("Version", "V")], &c, NOW, "n");
    let e = verify_v1_query(&q, NOW).expect_err("unknown key");
    assert_eq!(
        (e.code.as_ref(), e.status),
        ("InvalidAccessKeyId.NotFound", 404)
    );
}

#[test]
fn wrong_secret_gets_the_server_string_to_sign() {
    let c = Credentials {
        access_key_secret: "wrong",
        ..creds()
    };
    let q = sign_v1_query_at("POST", &[("Action", "A"), ("Version", "V")], &c, NOW, "n");
    let e = verify_v1_query(&q, NOW).expect_err("wrong secret");
    assert_eq!((e.code.as_ref(), e.status), ("SignatureDoesNotMatch", 400));
    let expected = string_to_sign_v1("POST", Params::from_query(&q).iter());
    assert_eq!(
        e.message,
        format!(
            "Specified signature is not matched with our calculation. server string to sign is:{expected}"
        )
    );
    assert_eq!(e.message.split(':').nth(1), Some(expected.as_str()));
}

#[test]
fn v1_signing_components_are_required() {
    let q = v1_query_at(NOW);
    for (from, to, needle) in [
        (
            "SignatureMethod=HMAC-SHA1",
            "SignatureMethod=HMAC-SHA256",
            "SignatureMethod",
        ),
        ("SignatureMethod=HMAC-SHA1", "X=1", "SignatureMethod"),
        (
            "SignatureVersion=1.0",
            "SignatureVersion=2.0",
            "SignatureVersion",
        ),
        ("SignatureNonce=n", "X=1", "SignatureNonce"),
        ("AccessKeyId=testid", "X=1", "AccessKeyId"),
        ("Action=A", "X=1", "Action"),
        ("Signature=", "Signature=%21%21", "base64"),
    ] {
        assert!(q.contains(from), "{from}");
        let e = verify_v1_query(&q.replacen(from, to, 1), NOW).expect_err(from);
        assert_eq!(e.code, "IncompleteSignature", "{from}");
        assert!(e.message.contains(needle), "{}", e.message);
    }
    let e = verify_v1_query(&format!("{q}&SignatureType=PRIVATEKEY"), NOW).expect_err("rsa");
    assert!(e.message.contains("PRIVATEKEY"), "{}", e.message);
}

#[test]
fn v3_required_signed_headers() {
    let p = Params::from_query(V3_WIRE_QUERY);
    // Drop x-acs-signature-nonce from SignedHeaders.
    let signed = V3_SIGNED_HEADERS.replace(";x-acs-signature-nonce", "");
    let mut h = v3_vector_headers();
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!(
            "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders={signed},Signature={V3_SIGNATURE}"
        ))
        .expect("ascii"),
    );
    let e = verify(&Method::POST, &p, &h, b"", lookup, NOW).expect_err("nonce unsigned");
    assert_eq!(e.code, "IncompleteSignature");
    assert!(e.message.contains("x-acs-signature-nonce"), "{}", e.message);

    // Drop x-acs-action from SignedHeaders while still sending it.
    let signed = V3_SIGNED_HEADERS.replace(";x-acs-action", "");
    h.insert(
        "authorization",
        HeaderValue::from_str(&format!(
            "ACS3-HMAC-SHA256 Credential=testid,SignedHeaders={signed},Signature={V3_SIGNATURE}"
        ))
        .expect("ascii"),
    );
    let e = verify(
        &Method::POST,
        &p,
        &h,
        b"",
        lookup,
        datetime!(2024-01-01 00:00:00 UTC),
    )
    .expect_err("action unsigned");
    assert!(e.message.contains("x-acs-action"), "{}", e.message);

    // A listed but absent required header.
    let mut h = v3_vector_headers();
    h.remove("x-acs-date");
    h.insert(
        "authorization",
        HeaderValue::from_str(&v3_authorization(V3_SIGNATURE)).expect("ascii"),
    );
    let e = verify(&Method::POST, &p, &h, b"", lookup, NOW).expect_err("date missing");
    assert!(e.message.contains("x-acs-date"), "{}", e.message);
}

#[test]
fn v3_other_rejections() {
    let p = Params::from_query(V3_WIRE_QUERY);
    let at = datetime!(2024-01-01 00:00:00 UTC);
    let with_auth = |auth: &str| {
        let mut h = v3_vector_headers();
        h.insert("authorization", HeaderValue::from_str(auth).expect("ascii"));
        h
    };
    let e = verify(
        &Method::POST,
        &p,
        &with_auth(&v3_authorization(V3_SIGNATURE).replace("ACS3-HMAC-SHA256", "ACS3-HMAC-SM3")),
        b"",
        lookup,
        at,
    )
    .expect_err("sm3");
    assert!(e.message.contains("ACS3-HMAC-SM3"), "{}", e.message);
    let e = verify(
        &Method::POST,
        &p,
        &with_auth(&v3_authorization("zz")),
        b"",
        lookup,
        at,
    )
    .expect_err("bad hex");
    assert_eq!(e.code, "IncompleteSignature");
    let e = verify(
        &Method::POST,
        &p,
        &with_auth(&v3_authorization(V3_SIGNATURE)),
        b"",
        lookup,
        NOW,
    )
    .expect_err("stale");
    assert_eq!(e.code, "InvalidTimeStamp.Expired");
    let e = verify(
        &Method::POST,
        &p,
        &with_auth(&v3_authorization(V3_SIGNATURE)),
        b"",
        |_| None,
        at,
    )
    .expect_err("unknown key");
    assert_eq!(e.status, 404);
    let mut h = with_auth(&v3_authorization(V3_SIGNATURE));
    h.insert(
        "x-acs-date",
        HeaderValue::from_static("2024-01-01T00:00:00"),
    );
    let e = verify(&Method::POST, &p, &h, b"", lookup, at).expect_err("format");
    assert_eq!(e.code, "InvalidTimeStamp.Format");
    let h = with_auth(&v3_authorization(V3_SIGNATURE));
    let e = verify(&Method::POST, &p, &h, b"x", lookup, at).expect_err("body hash");
    assert_eq!(e.code, "XAcsContentSHA256Mismatch");
}

#[test]
fn secrets_are_redacted_in_debug() {
    assert!(!format!("{:?}", Secret::new("topsecret")).contains("topsecret"));
    let c = Credentials {
        security_token: Some("tok"),
        ..creds()
    };
    let d = format!("{c:?}");
    assert!(!d.contains(SECRET) && !d.contains("tok\""), "{d}");
}
