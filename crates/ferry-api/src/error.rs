//! The one public error type of the RPC API and its wire envelope (reference §1.6, §1.9).
//!
//! Every failure a client can see is an [`ApiError`]: an Alibaba-style `Code`, a human `Message` that
//! says what happened and what to do next, and the HTTP status. Application layers map their own
//! errors into it at the edge; nothing below the edge needs to know about HTTP.
//!
//! Invariants:
//! * `code` is one of the documented gateway or product codes: the SDKs branch on it, so never invent a
//!   code where a documented one fits.
//! * `SignatureDoesNotMatch` messages contain a `:` followed by the server's string to sign, because the
//!   v1 Python SDK splits the message on `:` (§1.4).
//! * Messages never contain secrets (access key secrets, STS tokens, the signature we expected). The
//!   string to sign echoed by `SignatureDoesNotMatch` is built from the request alone, so it tells the
//!   caller nothing they did not send.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::product::Product;
use crate::response::{Format, xml_escape};

/// HostId used in error envelopes when the product is not known (for example `InvalidVersion`).
pub const UNKNOWN_HOST_ID: &str = "ferry";

/// Message ECS and SMC return for `InternalError`; SDK users recognise it, so it is kept verbatim.
const INTERNAL_ERROR_MESSAGE: &str = "An error occurred while processing your request. Please try again. If the problem still exists, please submit a ticket.";

/// An error as the RPC API reports it: `Code`, `Message` and HTTP status (§1.9).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code} (HTTP {status}): {message}")]
pub struct ApiError {
    /// Alibaba-style error code, e.g. `MissingParameter` or `ReplicationJob.InvalidStatus`.
    pub code: Cow<'static, str>,
    /// What happened and what the caller can do about it.
    pub message: String,
    /// HTTP status code (4xx client error, 5xx server error).
    pub status: u16,
    /// Optional `AccessDeniedDetail` object sent with 403 policy denials (§1.9).
    pub access_denied_detail: Option<Value>,
}

impl ApiError {
    /// Any error: `code` is sent as is, `status` is the HTTP status.
    pub fn new(
        code: impl Into<Cow<'static, str>>,
        status: u16,
        message: impl Into<String>,
    ) -> Self {
        ApiError {
            code: code.into(),
            message: message.into(),
            status,
            access_denied_detail: None,
        }
    }

    /// Attach an `AccessDeniedDetail` object (for 403 RAM denials).
    pub fn with_access_denied_detail(mut self, detail: Value) -> Self {
        self.access_denied_detail = Some(detail);
        self
    }

    /// `MissingParameter` (400), with ECS's wording so that existing tooling recognises it.
    pub fn missing_parameter(name: &str) -> Self {
        Self::new(
            "MissingParameter",
            400,
            format!(
                "An input parameter \"{name}\" that is mandatory for processing the request is not supplied."
            ),
        )
    }

    /// `InvalidParameter` (400): `why` says what is wrong with the value and what is accepted.
    pub fn invalid_parameter(name: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            "InvalidParameter",
            400,
            format!("The specified parameter \"{name}\" is not valid: {why}"),
        )
    }

    /// `IncompleteSignature` (400): the request is not signed, or a signing component is missing or
    /// malformed. `why` names the component.
    pub fn incomplete_signature(why: impl std::fmt::Display) -> Self {
        Self::new(
            "IncompleteSignature",
            400,
            format!("The request signature is incomplete or malformed: {why}"),
        )
    }

    /// `SignatureDoesNotMatch` (400). The message is exactly the one the v1 SDK expects: it splits on
    /// `:` and compares the tail with its own string to sign.
    pub fn signature_does_not_match(server_string_to_sign: &str) -> Self {
        Self::new(
            "SignatureDoesNotMatch",
            400,
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{server_string_to_sign}"
            ),
        )
    }

    /// `XAcsContentSHA256Mismatch` (400): the `x-acs-content-sha256` header does not match the body.
    /// Alibaba's code for this is not documented; the name follows S3's `XAmzContentSHA256Mismatch`.
    pub fn content_sha256_mismatch(claimed: &str, computed: &str) -> Self {
        Self::new(
            "XAcsContentSHA256Mismatch",
            400,
            format!(
                "The x-acs-content-sha256 header ({claimed}) does not match the SHA-256 of the request body ({computed}): hash exactly the bytes you send, and make sure no proxy re-encodes the body."
            ),
        )
    }

    /// `SignatureNonceUsed` (400): the nonce was already seen within the freshness window.
    pub fn signature_nonce_used(nonce: &str) -> Self {
        Self::new(
            "SignatureNonceUsed",
            400,
            format!(
                "The signature nonce \"{nonce}\" has already been used: generate a fresh random nonce for every request, including retries."
            ),
        )
    }

    /// `InvalidTimeStamp.Format` (400): the timestamp is not `YYYY-MM-DDThh:mm:ssZ`.
    pub fn invalid_timestamp_format(name: &str, value: &str) -> Self {
        Self::new(
            "InvalidTimeStamp.Format",
            400,
            format!(
                "The {name} \"{value}\" is not in the format YYYY-MM-DDThh:mm:ssZ (UTC), e.g. 2024-01-01T00:00:00Z."
            ),
        )
    }

    /// `InvalidTimeStamp.Expired` (400): the timestamp is outside the accepted clock skew.
    pub fn invalid_timestamp_expired(value: &str, server_now: &str, max_skew_minutes: i64) -> Self {
        Self::new(
            "InvalidTimeStamp.Expired",
            400,
            format!(
                "The request timestamp {value} differs from the server time {server_now} by more than {max_skew_minutes} minutes: synchronise the client clock (NTP) and sign the request again."
            ),
        )
    }

    /// `InvalidAccessKeyId.NotFound` (404): no such access key.
    pub fn access_key_not_found(access_key_id: &str) -> Self {
        Self::new(
            "InvalidAccessKeyId.NotFound",
            404,
            format!(
                "Specified access key is not found: \"{access_key_id}\". Check the AccessKeyId your client is configured with."
            ),
        )
    }

    /// `InvalidAccessKeyId.Inactive` (400): the access key exists but is disabled.
    pub fn access_key_inactive(access_key_id: &str) -> Self {
        Self::new(
            "InvalidAccessKeyId.Inactive",
            400,
            format!(
                "Specified access key \"{access_key_id}\" is disabled: enable it or use another access key."
            ),
        )
    }

    /// `InvalidSecurityToken.Expired` (400).
    pub fn security_token_expired() -> Self {
        Self::new(
            "InvalidSecurityToken.Expired",
            400,
            "The security token has expired: obtain new STS credentials and retry.",
        )
    }

    /// `InvalidSecurityToken.Malformed` (400).
    pub fn security_token_malformed() -> Self {
        Self::new(
            "InvalidSecurityToken.Malformed",
            400,
            "The security token is malformed: pass the SecurityToken exactly as it was issued.",
        )
    }

    /// `InvalidVersion` (400): the `Version` is not one this server implements.
    pub fn invalid_version(version: &str) -> Self {
        Self::new(
            "InvalidVersion",
            400,
            format!(
                "Specified API version \"{version}\" is not supported: use 2019-06-01 (SMC), 2014-05-26 (ECS), 2015-05-01 (RAM), 2015-04-01 (STS) or 2020-07-06 (ActionTrail)."
            ),
        )
    }

    /// `InvalidAction.NotFound` (404): the action does not exist for this version.
    pub fn invalid_action(action: &str, version: &str) -> Self {
        Self::new(
            "InvalidAction.NotFound",
            404,
            format!(
                "Specified api \"{action}\" is not found for version {version}: check the action name and the API version."
            ),
        )
    }

    /// `UnsupportedHTTPMethod` (405): only GET and POST are accepted.
    pub fn unsupported_method(method: &str) -> Self {
        Self::new(
            "UnsupportedHTTPMethod",
            405,
            format!("HTTP method {method} is not supported: send RPC requests with GET or POST."),
        )
    }

    /// `Forbidden.RAM` (403): a RAM policy does not allow `auth_action` on `resource`.
    pub fn forbidden_ram(auth_action: &str, resource: &str) -> Self {
        Self::new(
            "Forbidden.RAM",
            403,
            format!(
                "User not authorized to operate on the specified resource: the caller's RAM policies do not allow {auth_action} on {resource}. Ask an administrator to grant it."
            ),
        )
    }

    /// `NoPermission` (403), RAM's generic denial.
    pub fn no_permission() -> Self {
        Self::new(
            "NoPermission",
            403,
            "You are not authorized to do this action.",
        )
    }

    /// `NoPermission` (403) for a RAM policy denial of `auth_action` on `resource` (RAM's and STS's
    /// code for what SMC calls `Forbidden.RAM`).
    pub fn no_permission_for(auth_action: &str, resource: &str) -> Self {
        Self::new(
            "NoPermission",
            403,
            format!(
                "You are not authorized to do this action: the caller's RAM policies do not allow {auth_action} on {resource}. Ask an administrator to grant it."
            ),
        )
    }

    /// `Forbidden.Unauthorized` (403), SMC's denial for Describe* actions.
    pub fn forbidden_unauthorized(auth_action: &str) -> Self {
        Self::new(
            "Forbidden.Unauthorized",
            403,
            format!(
                "You are not authorized to perform {auth_action}: ask an administrator to grant it in a RAM policy."
            ),
        )
    }

    /// `Throttling.User` (429): the caller exceeded its request rate.
    pub fn throttling() -> Self {
        Self::new(
            "Throttling.User",
            429,
            "Request was denied due to user flow control: slow down and retry with backoff.",
        )
    }

    /// `InternalError` (500), with SMC's wording. Log the cause server-side; never put it here.
    pub fn internal() -> Self {
        Self::new("InternalError", 500, INTERNAL_ERROR_MESSAGE)
    }

    /// `ServiceUnavailable` (503).
    pub fn service_unavailable() -> Self {
        Self::new(
            "ServiceUnavailable",
            503,
            "The request has failed due to a temporary failure of the server: retry later.",
        )
    }

    /// The envelope fields in wire order (§1.9).
    fn envelope_fields(
        &self,
        request_id: &str,
        product: Option<Product>,
    ) -> [(&'static str, String); 5] {
        let host_id = product.map_or(UNKNOWN_HOST_ID, Product::host_id);
        let recommend = format!(
            "https://api.aliyun.com/troubleshoot?q={}&product={}&requestId={}",
            crate::sign::percent_encode(&self.code),
            product.map_or("Ferry", Product::name),
            crate::sign::percent_encode(request_id),
        );
        [
            ("RequestId", request_id.to_owned()),
            ("HostId", host_id.to_owned()),
            ("Code", self.code.to_string()),
            ("Message", self.message.clone()),
            ("Recommend", recommend),
        ]
    }

    /// The JSON envelope: `{"RequestId","HostId","Code","Message","Recommend"}` plus
    /// `AccessDeniedDetail` when set.
    pub fn to_json(&self, request_id: &str, product: Option<Product>) -> Value {
        let mut map = Map::new();
        for (k, v) in self.envelope_fields(request_id, product) {
            map.insert(k.to_owned(), Value::String(v));
        }
        if let Some(detail) = &self.access_denied_detail {
            map.insert("AccessDeniedDetail".to_owned(), detail.clone());
        }
        Value::Object(map)
    }

    /// Render the error envelope in `format`; returns `(content_type, body)`.
    ///
    /// XML is `<Error>` with the same children; the v3 SDKs only recognise it with the content type
    /// `text/xml;charset=utf-8`, which is what [`Format::content_type`] returns.
    pub fn render(
        &self,
        request_id: &str,
        product: Option<Product>,
        format: Format,
    ) -> (&'static str, String) {
        let body = match format {
            Format::Json => self.to_json(request_id, product).to_string(),
            Format::Xml => {
                let mut out = String::from(crate::response::XML_DECLARATION);
                out.push_str("<Error>");
                for (k, v) in self.envelope_fields(request_id, product) {
                    out.push('<');
                    out.push_str(k);
                    out.push('>');
                    out.push_str(&xml_escape(&v));
                    out.push_str("</");
                    out.push_str(k);
                    out.push('>');
                }
                if let Some(detail) = &self.access_denied_detail {
                    crate::response::push_xml_field(&mut out, "AccessDeniedDetail", detail);
                }
                out.push_str("</Error>");
                out
            }
        };
        (format.content_type(), body)
    }

    /// True for 4xx errors (the SDKs raise `ClientException`), false for 5xx (`ServerException`).
    pub fn is_client_error(&self) -> bool {
        (400..500).contains(&self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_parameter_uses_ecs_wording() {
        let e = ApiError::missing_parameter("JobId");
        assert_eq!(e.code, "MissingParameter");
        assert_eq!(e.status, 400);
        assert_eq!(
            e.message,
            "An input parameter \"JobId\" that is mandatory for processing the request is not supplied."
        );
    }

    #[test]
    fn signature_mismatch_message_splits_like_the_v1_sdk() {
        let sts = "POST&%2F&AccessKeyId%3Dtestid";
        let e = ApiError::signature_does_not_match(sts);
        assert_eq!(e.status, 400);
        // The v1 Python core does `Message.split(':')[1]` and compares it with its string to sign.
        assert_eq!(e.message.split(':').nth(1), Some(sts));
        assert_eq!(
            e.message,
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{sts}"
            )
        );
    }

    #[test]
    fn statuses_follow_the_reference() {
        let cases = [
            (
                ApiError::access_key_not_found("x"),
                "InvalidAccessKeyId.NotFound",
                404,
            ),
            (
                ApiError::invalid_action("A", "V"),
                "InvalidAction.NotFound",
                404,
            ),
            (
                ApiError::unsupported_method("PUT"),
                "UnsupportedHTTPMethod",
                405,
            ),
            (ApiError::invalid_version("1"), "InvalidVersion", 400),
            (ApiError::forbidden_ram("smc:X", "*"), "Forbidden.RAM", 403),
            (ApiError::no_permission(), "NoPermission", 403),
            (
                ApiError::no_permission_for("ram:GetUser", "*"),
                "NoPermission",
                403,
            ),
            (ApiError::internal(), "InternalError", 500),
            (ApiError::service_unavailable(), "ServiceUnavailable", 503),
            (
                ApiError::incomplete_signature("x"),
                "IncompleteSignature",
                400,
            ),
            (
                ApiError::signature_nonce_used("n"),
                "SignatureNonceUsed",
                400,
            ),
            (
                ApiError::invalid_timestamp_format("Timestamp", "x"),
                "InvalidTimeStamp.Format",
                400,
            ),
            (
                ApiError::invalid_timestamp_expired("a", "b", 15),
                "InvalidTimeStamp.Expired",
                400,
            ),
        ];
        for (e, code, status) in cases {
            assert_eq!(e.code, code);
            assert_eq!(e.status, status, "{code}");
            assert_eq!(e.is_client_error(), status < 500);
        }
    }

    #[test]
    fn json_envelope_has_all_fields() {
        let e = ApiError::new("ReplicationJob.InvalidStatus", 400, "job is running");
        let (ct, body) = e.render("REQ-1", Some(Product::Smc), Format::Json);
        assert_eq!(ct, "application/json;charset=utf-8");
        let v: Value = serde_json::from_str(&body).expect("envelope is JSON");
        assert_eq!(v["RequestId"], "REQ-1");
        assert_eq!(v["HostId"], "smc.aliyuncs.com");
        assert_eq!(v["Code"], "ReplicationJob.InvalidStatus");
        assert_eq!(v["Message"], "job is running");
        assert_eq!(
            v["Recommend"],
            "https://api.aliyun.com/troubleshoot?q=ReplicationJob.InvalidStatus&product=Smc&requestId=REQ-1"
        );
        assert!(v.get("AccessDeniedDetail").is_none());
    }

    #[test]
    fn access_denied_detail_is_rendered_when_set() {
        let e = ApiError::forbidden_ram("smc:DescribeSourceServers", "*").with_access_denied_detail(
            serde_json::json!({"AuthAction": "smc:DescribeSourceServers", "NoPermissionType": "ImplicitDeny"}),
        );
        let v = e.to_json("R", Some(Product::Smc));
        assert_eq!(v["AccessDeniedDetail"]["NoPermissionType"], "ImplicitDeny");
        let (_, xml) = e.render("R", Some(Product::Smc), Format::Xml);
        assert!(
            xml.contains("<AccessDeniedDetail><AuthAction>smc:DescribeSourceServers</AuthAction><NoPermissionType>ImplicitDeny</NoPermissionType></AccessDeniedDetail></Error>"),
            "{xml}"
        );
    }

    #[test]
    fn xml_envelope_escapes_and_uses_error_root() {
        let e = ApiError::invalid_parameter("Name", "must not contain <, > or &");
        let (ct, body) = e.render("R-2", None, Format::Xml);
        assert_eq!(ct, "text/xml;charset=utf-8");
        assert!(body.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><RequestId>R-2</RequestId><HostId>ferry</HostId><Code>InvalidParameter</Code>"), "{body}");
        assert!(
            body.contains("must not contain &lt;, &gt; or &amp;"),
            "{body}"
        );
        assert!(body.ends_with("</Recommend></Error>"), "{body}");
    }
}
