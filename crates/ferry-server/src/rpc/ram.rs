//! RAM 2015-05-01 actions (`../shared/ref/smc-api.md` §3.2): users, their access keys, custom policies,
//! policy attachments and roles. Response shapes and error codes are Alibaba RAM's, so the RAM SDKs work
//! unchanged.
//!
//! Invariants:
//! * An access key secret appears in exactly one response: CreateAccessKey's. Listing never shows it.
//! * A user has at most [`MAX_ACCESS_KEYS`] keys; a user or role with keys or policies cannot be deleted;
//!   a custom policy that is attached cannot be deleted. These are enforced in the data-access layer in
//!   single statements, so concurrent calls cannot get around them.
//! * Nothing is cached: authorization (`rpc::authorize`) reads attachments on every call, so a detach
//!   takes effect on the next request.
//!
//! Authorization happens before any action here runs; these functions trust that the caller may act.

use ferry_api::{ApiError, Params, wrap_list};
use ferry_db::{
    AccessKeyCreate, AccessKeyRecord, Attach, AttachmentRecord, POLICY_CUSTOM, POLICY_SYSTEM,
    PRINCIPAL_ROLE, PRINCIPAL_USER, PolicyDelete, PolicyRecord, RoleDelete, RoleRecord, UserDelete,
    UserRecord, UserUpdate, now,
};
use ferry_db::{LoginProfileChange, LoginProfileWrite, MfaBind, MfaDelete, MfaDeviceRecord};
use rand::Rng;
use serde_json::{Value, json};

use super::{ActionResult, Call, Principal, time_str};
use crate::app::{OrInternal, random_secret};

/// Access keys one RAM user may hold (Alibaba's limit).
pub const MAX_ACCESS_KEYS: i64 = 2;

/// Role session limits (seconds): Alibaba's `MaxSessionDuration` range.
const ROLE_SESSION_MIN: i64 = 3600;
const ROLE_SESSION_MAX: i64 = 43200;

/// System policies have no stored creation date; they are reported as created when RAM's API version
/// was published (2015-05-01T00:00:00Z), a fixed and recognisable date.
const SYSTEM_POLICY_DATE: i64 = 1_430_438_400;

pub async fn dispatch(c: &Call<'_>, action: &str) -> Option<ActionResult> {
    Some(match action {
        "CreateUser" => create_user(c).await,
        "GetUser" => get_user(c).await,
        "UpdateUser" => update_user(c).await,
        "ListUsers" => list_users(c).await,
        "DeleteUser" => delete_user(c).await,
        "CreateAccessKey" => create_access_key(c).await,
        "ListAccessKeys" => list_access_keys(c).await,
        "UpdateAccessKey" => update_access_key(c).await,
        "DeleteAccessKey" => delete_access_key(c).await,
        "CreatePolicy" => create_policy(c).await,
        "GetPolicy" => get_policy(c).await,
        "ListPolicies" => list_policies(c).await,
        "DeletePolicy" => delete_policy(c).await,
        "CreatePolicyVersion" => create_policy_version(c).await,
        "AttachPolicyToUser" => attach_policy(c, PRINCIPAL_USER).await,
        "DetachPolicyFromUser" => detach_policy(c, PRINCIPAL_USER).await,
        "ListPoliciesForUser" => list_policies_for(c, PRINCIPAL_USER).await,
        "AttachPolicyToRole" => attach_policy(c, PRINCIPAL_ROLE).await,
        "DetachPolicyFromRole" => detach_policy(c, PRINCIPAL_ROLE).await,
        "ListPoliciesForRole" => list_policies_for(c, PRINCIPAL_ROLE).await,
        "ListEntitiesForPolicy" => list_entities_for_policy(c).await,
        "CreateRole" => create_role(c).await,
        "GetRole" => get_role(c).await,
        "ListRoles" => list_roles(c).await,
        "DeleteRole" => delete_role(c).await,
        "CreateLoginProfile" => create_login_profile(c).await,
        "GetLoginProfile" => get_login_profile(c).await,
        "UpdateLoginProfile" => update_login_profile(c).await,
        "DeleteLoginProfile" => delete_login_profile(c).await,
        "CreateVirtualMFADevice" => create_virtual_mfa_device(c).await,
        "ListVirtualMFADevices" => list_virtual_mfa_devices(c).await,
        "DeleteVirtualMFADevice" => delete_virtual_mfa_device(c).await,
        "BindMFADevice" => bind_mfa_device(c).await,
        "UnbindMFADevice" => unbind_mfa_device(c).await,
        "GetUserMFAInfo" => get_user_mfa_info(c).await,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------------------
// validation

/// Checks a name against RAM's rule: `min..=max` characters from ASCII letters, digits and `extra`.
/// Errors are `InvalidParameter.<Param>.Length` / `.InvalidChars` (400), as RAM reports them.
fn check_chars(
    param: &str,
    value: &str,
    min: usize,
    max: usize,
    extra: &str,
) -> Result<(), ApiError> {
    let len = value.chars().count();
    if !(min..=max).contains(&len) {
        return Err(ApiError::new(
            format!("InvalidParameter.{param}.Length"),
            400,
            format!("The parameter {param} must be {min} to {max} characters long (it is {len})."),
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || extra.contains(*ch)))
    {
        let allowed: String = extra.chars().map(|c| format!(" {c}")).collect();
        return Err(ApiError::new(
            format!("InvalidParameter.{param}.InvalidChars"),
            400,
            format!(
                "The parameter {param} contains {bad:?}: use only letters, digits and{allowed}."
            ),
        ));
    }
    Ok(())
}

/// An optional free-text field of at most `max` characters (`InvalidParameter.<Param>.Length`).
fn check_len(param: &str, value: &str, max: usize) -> Result<(), ApiError> {
    let len = value.chars().count();
    if len > max {
        return Err(ApiError::new(
            format!("InvalidParameter.{param}.Length"),
            400,
            format!("The parameter {param} must be at most {max} characters long (it is {len})."),
        ));
    }
    Ok(())
}

fn check_user_name(param: &str, v: &str) -> Result<(), ApiError> {
    check_chars(param, v, 1, 64, "._-")
}

fn check_display_name(param: &str, v: &str) -> Result<(), ApiError> {
    check_chars(param, v, 1, 128, "._-@")
}

fn check_mobile(param: &str, v: &str) -> Result<(), ApiError> {
    // `<country code>-<number>`, e.g. 86-18688888888.
    let ok = v.split_once('-').is_some_and(|(cc, n)| {
        !cc.is_empty()
            && !n.is_empty()
            && cc.len() <= 4
            && n.len() <= 20
            && cc.bytes().all(|b| b.is_ascii_digit())
            && n.bytes().all(|b| b.is_ascii_digit())
    });
    if !ok {
        return Err(ApiError::new(
            format!("InvalidParameter.{param}.Format"),
            400,
            format!(
                "The parameter {param} must look like <country code>-<number>, e.g. 86-18688888888."
            ),
        ));
    }
    Ok(())
}

fn check_email(param: &str, v: &str) -> Result<(), ApiError> {
    let ok = v.len() <= 128
        && v.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if !ok {
        return Err(ApiError::new(
            format!("InvalidParameter.{param}.Format"),
            400,
            format!("The parameter {param} must be an email address like alice@example.com."),
        ));
    }
    Ok(())
}

fn check_policy_name(v: &str) -> Result<(), ApiError> {
    check_chars("PolicyName", v, 1, 128, "-")
}

fn check_role_name(v: &str) -> Result<(), ApiError> {
    check_chars("RoleName", v, 1, 64, ".-")
}

/// `PolicyType`: `System` or `Custom`.
fn policy_type(p: &Params) -> Result<&'static str, ApiError> {
    match p.required("PolicyType")? {
        "System" => Ok(POLICY_SYSTEM),
        "Custom" => Ok(POLICY_CUSTOM),
        other => Err(ApiError::new(
            "InvalidParameter.PolicyType.InvalidValue",
            400,
            format!("PolicyType {other:?} is not valid: use System or Custom."),
        )),
    }
}

/// Parses and checks a policy document (including Alibaba's size limit, which `ferry-iam` applies to the
/// canonical form); returns the canonical form, which is what is stored and shown.
fn check_policy_document(doc: &str) -> Result<String, ApiError> {
    Ok(ferry_iam::PolicyDocument::parse(doc)
        .map_err(malformed)?
        .to_json())
}

fn malformed(e: ferry_iam::PolicyError) -> ApiError {
    ApiError::new(
        "MalformedPolicyDocument",
        400,
        format!("The policy document is malformed: {e}. Fix it and send it again."),
    )
}

// ---------------------------------------------------------------------------------------------------------
// errors

fn user_not_found(name: &str) -> ApiError {
    ApiError::new(
        "EntityNotExist.User",
        404,
        format!("The user {name:?} does not exist: check the name with ListUsers."),
    )
}

fn role_not_found(name: &str) -> ApiError {
    ApiError::new(
        "EntityNotExist.Role",
        404,
        format!("The role {name:?} does not exist: check the name with ListRoles."),
    )
}

fn policy_not_found(kind: &str, name: &str) -> ApiError {
    ApiError::new(
        "EntityNotExist.Policy",
        404,
        format!(
            "The {kind} policy {name:?} does not exist: check the name and PolicyType with ListPolicies."
        ),
    )
}

fn principal_not_found(ptype: &str, name: &str) -> ApiError {
    if ptype == PRINCIPAL_ROLE {
        role_not_found(name)
    } else {
        user_not_found(name)
    }
}

// ---------------------------------------------------------------------------------------------------------
// JSON shapes

/// A numeric ID of `digits` digits, like RAM's user and role IDs.
fn numeric_id(digits: usize) -> String {
    let mut rng = rand::thread_rng();
    let first = char::from(b'0' + rng.gen_range(1..10u8));
    let rest: String = (1..digits)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect();
    format!("{first}{rest}")
}

fn user_json(u: &UserRecord) -> Value {
    json!({
        "UserId": u.id,
        "UserName": u.name,
        "DisplayName": u.display_name,
        "MobilePhone": u.mobile_phone,
        "Email": u.email,
        "Comments": u.comments,
        "CreateDate": time_str(u.created_at),
        "UpdateDate": time_str(u.updated_at),
    })
}

fn role_json(r: &RoleRecord) -> Value {
    json!({
        "RoleId": r.id,
        "RoleName": r.name,
        "Arn": r.arn,
        "Description": r.description,
        "AssumeRolePolicyDocument": r.trust_policy,
        "MaxSessionDuration": r.max_session_duration,
        "CreateDate": time_str(r.created_at),
        "UpdateDate": time_str(r.updated_at),
    })
}

/// One policy of either type, as GetPolicy and ListPolicies show it.
struct PolicyView {
    name: String,
    kind: &'static str,
    description: String,
    default_version: String,
    document: String,
    created_at: i64,
    updated_at: i64,
}

impl PolicyView {
    fn custom(p: PolicyRecord) -> PolicyView {
        PolicyView {
            name: p.name,
            kind: POLICY_CUSTOM,
            description: p.description,
            default_version: p.default_version,
            document: p.document,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }

    fn system(p: &ferry_iam::system::SystemPolicy) -> PolicyView {
        PolicyView {
            name: p.name.to_owned(),
            kind: POLICY_SYSTEM,
            description: p.description.to_owned(),
            default_version: "v1".to_owned(),
            document: p.document.to_owned(),
            created_at: SYSTEM_POLICY_DATE,
            updated_at: SYSTEM_POLICY_DATE,
        }
    }

    fn json(&self, attachment_count: usize) -> Value {
        json!({
            "PolicyName": self.name,
            "PolicyType": self.kind,
            "Description": self.description,
            "DefaultVersion": self.default_version,
            "CreateDate": time_str(self.created_at),
            "UpdateDate": time_str(self.updated_at),
            "AttachmentCount": attachment_count,
        })
    }
}

/// The policy `name` of type `kind` (`System`/`Custom`), or `EntityNotExist.Policy`.
async fn find_policy(c: &Call<'_>, kind: &str, name: &str) -> Result<PolicyView, ApiError> {
    if kind == POLICY_SYSTEM {
        return ferry_iam::system::get(name)
            .map(PolicyView::system)
            .ok_or_else(|| policy_not_found(kind, name));
    }
    c.st.db
        .policy_get(name)
        .await
        .or_internal()?
        .map(PolicyView::custom)
        .ok_or_else(|| policy_not_found(kind, name))
}

/// `Marker`/`MaxItems` paging as RAM does it: the marker is opaque to clients (here: the offset of the
/// next item), `IsTruncated` says whether there is more.
fn marker_page(p: &Params, items: Vec<Value>) -> Result<(Vec<Value>, Value), ApiError> {
    let max = p.get_int_in("MaxItems", 1, 1000)?.unwrap_or(100) as usize;
    let start = match p.get("Marker").filter(|m| !m.is_empty()) {
        None => 0,
        Some(m) => m.parse::<usize>().map_err(|_| {
            ApiError::invalid_parameter(
                "Marker",
                "is not a marker this server returned; pass the Marker of the previous page unchanged",
            )
        })?,
    };
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(start).take(max).collect();
    let next = start + page.len();
    let mut extra = json!({ "IsTruncated": next < total });
    if next < total
        && let Some(obj) = extra.as_object_mut()
    {
        obj.insert("Marker".into(), json!(next.to_string()));
    }
    Ok((page, extra))
}

/// A `Marker`-paged list answer: `{"<plural>": {"<singular>": [page]}, "IsTruncated", "Marker"?}`.
fn marker_list(p: &Params, plural: &str, singular: &str, items: Vec<Value>) -> ActionResult {
    let (page, extra) = marker_page(p, items)?;
    let mut body = json!({ plural: wrap_list(singular, page) });
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    Ok(body)
}

// ---------------------------------------------------------------------------------------------------------
// users

async fn create_user(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let name = p.required("UserName")?;
    check_user_name("UserName", name)?;
    let display = p
        .get("DisplayName")
        .filter(|v| !v.is_empty())
        .unwrap_or(name);
    check_display_name("DisplayName", display)?;
    let mobile = p.get("MobilePhone").unwrap_or("");
    if !mobile.is_empty() {
        check_mobile("MobilePhone", mobile)?;
    }
    let email = p.get("Email").unwrap_or("");
    if !email.is_empty() {
        check_email("Email", email)?;
    }
    let comments = p.get("Comments").unwrap_or("");
    check_len("Comments", comments, 128)?;
    let t = now();
    let user = UserRecord {
        name: name.to_owned(),
        id: numeric_id(16),
        display_name: display.to_owned(),
        email: email.to_owned(),
        mobile_phone: mobile.to_owned(),
        comments: comments.to_owned(),
        created_at: t,
        updated_at: t,
        password_hash: None,
        mfa_secret: None,
    };
    if !c.st.db.user_create(&user).await.or_internal()? {
        return Err(ApiError::new(
            "EntityAlreadyExists.User",
            409,
            format!("The user {name:?} already exists: choose another UserName."),
        ));
    }
    Ok(json!({ "User": user_json(&user) }))
}

async fn get_user(c: &Call<'_>) -> ActionResult {
    let name = c.params.required("UserName")?;
    let u = c.st.db.user_get(name).await.or_internal()?;
    let u = u.ok_or_else(|| user_not_found(name))?;
    Ok(json!({ "User": user_json(&u) }))
}

async fn update_user(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let name = p.required("UserName")?;
    let mut u =
        c.st.db
            .user_get(name)
            .await
            .or_internal()?
            .ok_or_else(|| user_not_found(name))?;
    let new = |k: &str| p.get(k).filter(|v| !v.is_empty());
    if let Some(v) = new("NewUserName") {
        check_user_name("NewUserName", v)?;
        u.name = v.to_owned();
    }
    if let Some(v) = new("NewDisplayName") {
        check_display_name("NewDisplayName", v)?;
        u.display_name = v.to_owned();
    }
    if let Some(v) = new("NewMobilePhone") {
        check_mobile("NewMobilePhone", v)?;
        u.mobile_phone = v.to_owned();
    }
    if let Some(v) = new("NewEmail") {
        check_email("NewEmail", v)?;
        u.email = v.to_owned();
    }
    if let Some(v) = p.get("NewComments") {
        check_len("NewComments", v, 128)?;
        u.comments = v.to_owned();
    }
    u.updated_at = now();
    match c.st.db.user_update(name, &u).await.or_internal()? {
        UserUpdate::Updated => Ok(json!({ "User": user_json(&u) })),
        UserUpdate::NotFound => Err(user_not_found(name)),
        UserUpdate::NameTaken => Err(ApiError::new(
            "EntityAlreadyExists.User",
            409,
            format!(
                "The user {:?} already exists: choose another NewUserName.",
                u.name
            ),
        )),
    }
}

async fn list_users(c: &Call<'_>) -> ActionResult {
    let users: Vec<Value> =
        c.st.db
            .user_list()
            .await
            .or_internal()?
            .iter()
            .map(user_json)
            .collect();
    marker_list(c.params, "Users", "User", users)
}

async fn delete_user(c: &Call<'_>) -> ActionResult {
    let name = c.params.required("UserName")?;
    let id = c.st.db.user_id_of(name).await.or_internal()?;
    match c.st.db.user_delete(name).await.or_internal()? {
        UserDelete::Deleted => {
            // The password went with the user's row; its console sessions, login profile settings and
            // MFA binding are keyed by the (never reused) user ID and go now.
            if let Some(id) = id {
                c.st.db.console_user_forget(&id).await.or_internal()?;
            }
            Ok(json!({}))
        }
        UserDelete::NotFound => Err(user_not_found(name)),
        UserDelete::HasAccessKeys => Err(ApiError::new(
            "DeleteConflict.User.AccessKey",
            409,
            format!(
                "The user {name:?} still has access keys: delete them (ListAccessKeys, DeleteAccessKey) first."
            ),
        )),
        UserDelete::HasPolicies => Err(ApiError::new(
            "DeleteConflict.User.Policy",
            409,
            format!(
                "The user {name:?} still has attached policies: detach them (ListPoliciesForUser, DetachPolicyFromUser) first."
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------------------------
// access keys

/// The user whose keys an access-key action addresses: `UserName`, or the calling RAM user. `None` is the
/// root account's own keys (only the root account itself may name them by leaving `UserName` out).
fn key_owner<'a>(c: &'a Call<'_>) -> Result<Option<&'a str>, ApiError> {
    if let Some(u) = c.params.get("UserName").filter(|v| !v.is_empty()) {
        return Ok(Some(u));
    }
    match &c.caller.principal {
        Principal::User { name } => Ok(Some(name)),
        Principal::Root => Ok(None),
        Principal::AssumedRole { .. } => Err(ApiError::missing_parameter("UserName")),
    }
}

fn access_key_not_found(id: &str) -> ApiError {
    ApiError::new(
        "EntityNotExist.User.AccessKey",
        404,
        format!(
            "The access key {id:?} does not exist for this user: check it with ListAccessKeys."
        ),
    )
}

async fn create_access_key(c: &Call<'_>) -> ActionResult {
    let Some(owner) = key_owner(c)? else {
        // The root account's key is made at first start and written to the data directory; more root
        // keys would be more secrets that can do everything. Routine work belongs to RAM users.
        return Err(ApiError::new(
            "InvalidParameter.UserName",
            400,
            "The root account's access key is created by the server at first start: pass UserName to create a key for a RAM user.",
        ));
    };
    check_user_name("UserName", owner)?;
    let key = AccessKeyRecord {
        id: format!("LTAI{}", random_secret(20)),
        secret: random_secret(30),
        user_name: Some(owner.to_owned()),
        status: "Active".to_owned(),
        created_at: now(),
    };
    match c
        .st
        .db
        .access_key_create_for_user(&key, MAX_ACCESS_KEYS)
        .await
        .or_internal()?
    {
        AccessKeyCreate::Created => Ok(json!({
            "AccessKey": {
                "AccessKeyId": key.id,
                "AccessKeySecret": key.secret,
                "Status": key.status,
                "CreateDate": time_str(key.created_at),
            }
        })),
        AccessKeyCreate::UserNotFound => Err(user_not_found(owner)),
        AccessKeyCreate::LimitExceeded => Err(ApiError::new(
            "LimitExceeded.User.AccessKey",
            409,
            format!(
                "The user {owner:?} already has {MAX_ACCESS_KEYS} access keys, the most a user may have: delete one first."
            ),
        )),
    }
}

async fn list_access_keys(c: &Call<'_>) -> ActionResult {
    let owner = key_owner(c)?;
    if let Some(u) = owner
        && c.st.db.user_get(u).await.or_internal()?.is_none()
    {
        return Err(user_not_found(u));
    }
    let keys: Vec<Value> =
        c.st.db
            .access_key_list(owner)
            .await
            .or_internal()?
            .into_iter()
            .map(|k| {
                json!({
                    "AccessKeyId": k.id,
                    "Status": k.status,
                    "CreateDate": time_str(k.created_at),
                })
            })
            .collect();
    Ok(json!({ "AccessKeys": wrap_list("AccessKey", keys) }))
}

async fn update_access_key(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("UserAccessKeyId")?;
    let status = match c.params.required("Status")? {
        "Active" => "Active",
        "Inactive" => "Inactive",
        other => {
            return Err(ApiError::new(
                "InvalidParameter.Status",
                400,
                format!("Status {other:?} is not valid: use Active or Inactive."),
            ));
        }
    };
    let owner = key_owner(c)?;
    if status == "Inactive" && is_bootstrap_key(c, owner, id).await? {
        return Err(root_key_protected(id));
    }
    if !c
        .st
        .db
        .access_key_set_status(id, owner, status)
        .await
        .or_internal()?
    {
        return Err(access_key_not_found(id));
    }
    Ok(json!({}))
}

/// Is `id`, addressed among the root account's own keys (`owner` `None`), the bootstrap key?
async fn is_bootstrap_key(c: &Call<'_>, owner: Option<&str>, id: &str) -> Result<bool, ApiError> {
    if owner.is_some() {
        return Ok(false);
    }
    let bootstrap = c.st.db.meta_get("root_access_key_id").await.or_internal()?;
    Ok(bootstrap.as_deref() == Some(id))
}

/// The first root key is what the CLI and the data directory's credentials file use; disabling or
/// deleting it over the API would lock the operator out of the server.
fn root_key_protected(id: &str) -> ApiError {
    ApiError::new(
        "InvalidParameter.UserAccessKeyId",
        400,
        format!(
            "The access key {id:?} is the root account's bootstrap key (in root-credentials.json): it cannot be disabled or deleted over the API."
        ),
    )
}

async fn delete_access_key(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("UserAccessKeyId")?;
    let owner = key_owner(c)?;
    if is_bootstrap_key(c, owner, id).await? {
        return Err(root_key_protected(id));
    }
    if !c.st.db.access_key_delete(id, owner).await.or_internal()? {
        return Err(access_key_not_found(id));
    }
    Ok(json!({}))
}

// ---------------------------------------------------------------------------------------------------------
// policies

async fn create_policy(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let name = p.required("PolicyName")?;
    check_policy_name(name)?;
    let doc = p.required("PolicyDocument")?;
    let doc = check_policy_document(doc)?;
    let description = p.get("Description").unwrap_or("");
    check_len("Description", description, 1024)?;
    if ferry_iam::system::get(name).is_some() {
        return Err(policy_exists(name));
    }
    let t = now();
    let rec = PolicyRecord {
        name: name.to_owned(),
        document: doc,
        description: description.to_owned(),
        default_version: "v1".to_owned(),
        created_at: t,
        updated_at: t,
    };
    if !c.st.db.policy_create(&rec).await.or_internal()? {
        return Err(policy_exists(name));
    }
    Ok(json!({
        "Policy": {
            "PolicyName": rec.name,
            "PolicyType": POLICY_CUSTOM,
            "Description": rec.description,
            "DefaultVersion": rec.default_version,
            "CreateDate": time_str(rec.created_at),
        }
    }))
}

fn policy_exists(name: &str) -> ApiError {
    ApiError::new(
        "EntityAlreadyExists.Policy",
        409,
        format!("A policy named {name:?} already exists: choose another PolicyName."),
    )
}

async fn get_policy(c: &Call<'_>) -> ActionResult {
    let kind = policy_type(c.params)?;
    let name = c.params.required("PolicyName")?;
    let view = find_policy(c, kind, name).await?;
    let count =
        c.st.db
            .attachment_list_for_policy(kind, name)
            .await
            .or_internal()?
            .len();
    Ok(json!({
        "Policy": view.json(count),
        "DefaultPolicyVersion": {
            "VersionId": view.default_version,
            "IsDefaultVersion": true,
            "PolicyDocument": view.document,
            "CreateDate": time_str(view.updated_at),
        },
    }))
}

async fn list_policies(c: &Call<'_>) -> ActionResult {
    let wanted = match c.params.get("PolicyType").filter(|v| !v.is_empty()) {
        None => None,
        Some(_) => Some(policy_type(c.params)?),
    };
    let mut views = Vec::new();
    if wanted.is_none_or(|k| k == POLICY_SYSTEM) {
        views.extend(ferry_iam::system::all().iter().map(PolicyView::system));
    }
    if wanted.is_none_or(|k| k == POLICY_CUSTOM) {
        let custom = c.st.db.policy_list().await.or_internal()?;
        views.extend(custom.into_iter().map(PolicyView::custom));
    }
    let mut items = Vec::with_capacity(views.len());
    for v in &views {
        let count =
            c.st.db
                .attachment_list_for_policy(v.kind, &v.name)
                .await
                .or_internal()?
                .len();
        items.push(v.json(count));
    }
    marker_list(c.params, "Policies", "Policy", items)
}

async fn delete_policy(c: &Call<'_>) -> ActionResult {
    let name = c.params.required("PolicyName")?;
    match c.st.db.policy_delete(name).await.or_internal()? {
        PolicyDelete::Deleted => Ok(json!({})),
        PolicyDelete::NotFound => Err(policy_not_found(POLICY_CUSTOM, name)),
        PolicyDelete::Attached => {
            let holders =
                c.st.db
                    .attachment_list_for_policy(POLICY_CUSTOM, name)
                    .await
                    .or_internal()?;
            let on_user = holders.iter().any(|a| a.principal_type == PRINCIPAL_USER);
            let (code, what) = if on_user {
                ("DeleteConflict.Policy.User", "users (DetachPolicyFromUser)")
            } else {
                ("DeleteConflict.Policy.Role", "roles (DetachPolicyFromRole)")
            };
            Err(ApiError::new(
                code,
                409,
                format!(
                    "The policy {name:?} is still attached to {what}: detach it everywhere (ListEntitiesForPolicy shows where) first."
                ),
            ))
        }
    }
}

/// Ferry keeps one version per custom policy: a new version replaces the document and becomes the
/// default at once, so `SetAsDefault` must be true (or absent).
async fn create_policy_version(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let name = p.required("PolicyName")?;
    let doc = p.required("PolicyDocument")?;
    if p.get_bool("SetAsDefault")? == Some(false) {
        return Err(ApiError::invalid_parameter(
            "SetAsDefault",
            "Ferry keeps a single version per policy, which is always the default: pass SetAsDefault=true",
        ));
    }
    let doc = check_policy_document(doc)?;
    let current =
        c.st.db
            .policy_get(name)
            .await
            .or_internal()?
            .ok_or_else(|| policy_not_found(POLICY_CUSTOM, name))?;
    let n: u64 = current
        .default_version
        .strip_prefix('v')
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let version = format!("v{}", n + 1);
    let t = now();
    if !c
        .st
        .db
        .policy_set_document(name, &doc, &version, t)
        .await
        .or_internal()?
    {
        return Err(policy_not_found(POLICY_CUSTOM, name));
    }
    Ok(json!({
        "PolicyVersion": {
            "VersionId": version,
            "IsDefaultVersion": true,
            "PolicyDocument": doc,
            "CreateDate": time_str(t),
        }
    }))
}

/// `UserName` or `RoleName`, checked.
fn principal_param<'a>(c: &'a Call<'_>, ptype: &str) -> Result<&'a str, ApiError> {
    if ptype == PRINCIPAL_ROLE {
        let n = c.params.required("RoleName")?;
        check_role_name(n)?;
        Ok(n)
    } else {
        let n = c.params.required("UserName")?;
        check_user_name("UserName", n)?;
        Ok(n)
    }
}

/// Fails with the principal type's `EntityNotExist` error unless the user or role `name` exists.
async fn require_principal(c: &Call<'_>, ptype: &str, name: &str) -> Result<(), ApiError> {
    let exists = if ptype == PRINCIPAL_ROLE {
        c.st.db.role_get(name).await.or_internal()?.is_some()
    } else {
        c.st.db.user_get(name).await.or_internal()?.is_some()
    };
    if exists {
        Ok(())
    } else {
        Err(principal_not_found(ptype, name))
    }
}

async fn attach_policy(c: &Call<'_>, ptype: &str) -> ActionResult {
    let kind = policy_type(c.params)?;
    let policy = c.params.required("PolicyName")?;
    let principal = principal_param(c, ptype)?;
    if kind == POLICY_SYSTEM && ferry_iam::system::get(policy).is_none() {
        return Err(policy_not_found(kind, policy));
    }
    let rec = AttachmentRecord {
        principal_type: ptype.to_owned(),
        principal_name: principal.to_owned(),
        policy_type: kind.to_owned(),
        policy_name: policy.to_owned(),
        attached_at: now(),
    };
    match c.st.db.attachment_create(&rec).await.or_internal()? {
        Attach::Attached => Ok(json!({})),
        Attach::PrincipalNotFound => Err(principal_not_found(ptype, principal)),
        Attach::PolicyNotFound => Err(policy_not_found(kind, policy)),
        Attach::AlreadyAttached => Err(ApiError::new(
            format!("EntityAlreadyExists.{ptype}.Policy"),
            409,
            format!(
                "The {kind} policy {policy:?} is already attached to the {} {principal:?}.",
                ptype.to_lowercase()
            ),
        )),
    }
}

async fn detach_policy(c: &Call<'_>, ptype: &str) -> ActionResult {
    let kind = policy_type(c.params)?;
    let policy = c.params.required("PolicyName")?;
    let principal = principal_param(c, ptype)?;
    if c.st
        .db
        .attachment_delete(ptype, principal, kind, policy)
        .await
        .or_internal()?
    {
        return Ok(json!({}));
    }
    require_principal(c, ptype, principal).await?;
    find_policy(c, kind, policy).await?;
    Err(ApiError::new(
        format!("EntityNotExist.{ptype}.Policy"),
        404,
        format!(
            "The {kind} policy {policy:?} is not attached to the {} {principal:?}: see what is with ListPoliciesFor{ptype}.",
            ptype.to_lowercase()
        ),
    ))
}

async fn list_policies_for(c: &Call<'_>, ptype: &str) -> ActionResult {
    let principal = principal_param(c, ptype)?;
    require_principal(c, ptype, principal).await?;
    let mut items = Vec::new();
    for a in
        c.st.db
            .attachment_list_for_principal(ptype, principal)
            .await
            .or_internal()?
    {
        // A custom policy cannot be deleted while attached, and system policies are built in; a policy
        // that is gone anyway (a system policy dropped by an upgrade) is listed with what is known.
        let view = find_policy(c, &a.policy_type, &a.policy_name).await.ok();
        items.push(json!({
            "PolicyName": a.policy_name,
            "PolicyType": a.policy_type,
            "Description": view.as_ref().map(|v| v.description.clone()).unwrap_or_default(),
            "DefaultVersion": view.as_ref().map(|v| v.default_version.clone()).unwrap_or_else(|| "v1".to_owned()),
            "AttachDate": time_str(a.attached_at),
        }));
    }
    Ok(json!({ "Policies": wrap_list("Policy", items) }))
}

async fn list_entities_for_policy(c: &Call<'_>) -> ActionResult {
    let kind = policy_type(c.params)?;
    let name = c.params.required("PolicyName")?;
    find_policy(c, kind, name).await?;
    let mut users = Vec::new();
    let mut roles = Vec::new();
    for a in
        c.st.db
            .attachment_list_for_policy(kind, name)
            .await
            .or_internal()?
    {
        if a.principal_type == PRINCIPAL_ROLE {
            if let Some(r) = c.st.db.role_get(&a.principal_name).await.or_internal()? {
                roles.push(json!({
                    "RoleId": r.id,
                    "RoleName": r.name,
                    "Arn": r.arn,
                    "Description": r.description,
                    "AttachDate": time_str(a.attached_at),
                }));
            }
        } else if let Some(u) = c.st.db.user_get(&a.principal_name).await.or_internal()? {
            users.push(json!({
                "UserId": u.id,
                "UserName": u.name,
                "DisplayName": u.display_name,
                "AttachDate": time_str(a.attached_at),
            }));
        }
    }
    Ok(json!({
        "Users": wrap_list("User", users),
        "Groups": wrap_list("Group", vec![]),
        "Roles": wrap_list("Role", roles),
    }))
}

// ---------------------------------------------------------------------------------------------------------
// roles

/// `acs:ram::<account>:role/<name>`; RAM spells role names in ARNs in lower case.
pub fn role_arn(account: &str, role_name: &str) -> String {
    format!("acs:ram::{account}:role/{}", role_name.to_lowercase())
}

async fn create_role(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let name = p.required("RoleName")?;
    check_role_name(name)?;
    let trust = p.required("AssumeRolePolicyDocument")?;
    let trust = ferry_iam::TrustPolicy::parse(trust)
        .map_err(malformed)?
        .to_json();
    let description = p.get("Description").unwrap_or("");
    check_len("Description", description, 1024)?;
    let max_session = p
        .get_int_in("MaxSessionDuration", ROLE_SESSION_MIN, ROLE_SESSION_MAX)?
        .unwrap_or(ROLE_SESSION_MIN);
    let t = now();
    let role = RoleRecord {
        name: name.to_owned(),
        id: numeric_id(19),
        arn: role_arn(&c.st.account_id, name),
        trust_policy: trust,
        max_session_duration: max_session,
        description: description.to_owned(),
        created_at: t,
        updated_at: t,
    };
    if !c.st.db.role_create(&role).await.or_internal()? {
        return Err(ApiError::new(
            "EntityAlreadyExists.Role",
            409,
            format!(
                "A role named {name:?} already exists (role names are compared without case): choose another RoleName."
            ),
        ));
    }
    Ok(json!({ "Role": role_json(&role) }))
}

async fn get_role(c: &Call<'_>) -> ActionResult {
    let name = c.params.required("RoleName")?;
    let r = c.st.db.role_get(name).await.or_internal()?;
    let r = r.ok_or_else(|| role_not_found(name))?;
    Ok(json!({ "Role": role_json(&r) }))
}

async fn list_roles(c: &Call<'_>) -> ActionResult {
    let roles: Vec<Value> =
        c.st.db
            .role_list()
            .await
            .or_internal()?
            .iter()
            .map(role_json)
            .collect();
    marker_list(c.params, "Roles", "Role", roles)
}

async fn delete_role(c: &Call<'_>) -> ActionResult {
    let name = c.params.required("RoleName")?;
    match c.st.db.role_delete(name).await.or_internal()? {
        RoleDelete::Deleted => Ok(json!({})),
        RoleDelete::NotFound => Err(role_not_found(name)),
        RoleDelete::HasPolicies => Err(ApiError::new(
            "DeleteConflict.Role.Policy",
            409,
            format!(
                "The role {name:?} still has attached policies: detach them (ListPoliciesForRole, DetachPolicyFromRole) first."
            ),
        )),
    }
}

// ---------------------------------------------------------------------------------------------------------
// console sign-in: login profiles and virtual MFA devices (docs/console.md)
//
// A login profile is a RAM user's console password (an Argon2id hash in `ram_users.password_hash`) and
// its settings. A virtual MFA device holds a TOTP seed, sealed at rest (`crate::console::seal`); the
// seed appears in exactly one response, CreateVirtualMFADevice's, and is never audited or logged.

fn login_profile_not_found(name: &str) -> ApiError {
    ApiError::new(
        "EntityNotExist.User.LoginProfile",
        404,
        format!(
            "The user {name:?} has no login profile (console password): create one with CreateLoginProfile."
        ),
    )
}

fn login_profile_json(p: &ferry_db::LoginProfileRecord) -> Value {
    json!({
        "UserName": p.user_name,
        "PasswordResetRequired": p.password_reset_required,
        "MFABindRequired": p.mfa_bind_required,
        "CreateDate": time_str(p.created_at),
        "UpdateDate": time_str(p.updated_at),
    })
}

async fn create_login_profile(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let name = p.required("UserName")?;
    check_user_name("UserName", name)?;
    let password = p.required("Password")?;
    crate::console::password::check_policy("Password", password)?;
    let reset = p.get_bool("PasswordResetRequired")?.unwrap_or(false);
    let bind = p.get_bool("MFABindRequired")?.unwrap_or(false);
    let hash = crate::console::password::hash(password).await?;
    match c
        .st
        .db
        .login_profile_create(name, &hash, reset, bind, now())
        .await
        .or_internal()?
    {
        LoginProfileWrite::Done => {}
        LoginProfileWrite::UserNotFound => return Err(user_not_found(name)),
        LoginProfileWrite::AlreadyExists | LoginProfileWrite::NotFound => {
            return Err(ApiError::new(
                "EntityAlreadyExists.User.LoginProfile",
                409,
                format!(
                    "The user {name:?} already has a login profile: change it with UpdateLoginProfile."
                ),
            ));
        }
    }
    let profile =
        c.st.db
            .login_profile_get(name)
            .await
            .or_internal()?
            .ok_or_else(|| login_profile_not_found(name))?;
    Ok(json!({ "LoginProfile": login_profile_json(&profile) }))
}

async fn get_login_profile(c: &Call<'_>) -> ActionResult {
    let name = c.params.required("UserName")?;
    match c.st.db.login_profile_get(name).await.or_internal()? {
        Some(p) => Ok(json!({ "LoginProfile": login_profile_json(&p) })),
        None if c.st.db.user_id_of(name).await.or_internal()?.is_none() => {
            Err(user_not_found(name))
        }
        None => Err(login_profile_not_found(name)),
    }
}

async fn update_login_profile(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let name = p.required("UserName")?;
    let password = p.get("Password").filter(|v| !v.is_empty());
    let password_hash = match password {
        Some(pw) => {
            crate::console::password::check_policy("Password", pw)?;
            Some(crate::console::password::hash(pw).await?)
        }
        None => None,
    };
    let change = LoginProfileChange {
        password_hash,
        password_reset_required: p.get_bool("PasswordResetRequired")?,
        mfa_bind_required: p.get_bool("MFABindRequired")?,
    };
    match c
        .st
        .db
        .login_profile_update(name, &change, now())
        .await
        .or_internal()?
    {
        LoginProfileWrite::Done | LoginProfileWrite::AlreadyExists => Ok(json!({})),
        LoginProfileWrite::UserNotFound => Err(user_not_found(name)),
        LoginProfileWrite::NotFound => Err(login_profile_not_found(name)),
    }
}

async fn delete_login_profile(c: &Call<'_>) -> ActionResult {
    let name = c.params.required("UserName")?;
    match c.st.db.login_profile_delete(name).await.or_internal()? {
        LoginProfileWrite::Done | LoginProfileWrite::AlreadyExists => Ok(json!({})),
        LoginProfileWrite::UserNotFound => Err(user_not_found(name)),
        LoginProfileWrite::NotFound => Err(login_profile_not_found(name)),
    }
}

fn mfa_device_not_found(serial: &str) -> ApiError {
    ApiError::new(
        "EntityNotExist.VirtualMFADevice",
        404,
        format!(
            "The virtual MFA device {serial:?} does not exist: check the SerialNumber with ListVirtualMFADevices."
        ),
    )
}

fn user_mfa_not_found(name: &str) -> ApiError {
    ApiError::new(
        "EntityNotExist.User.MFADevice",
        404,
        format!("The user {name:?} has no MFA device bound: bind one with BindMFADevice."),
    )
}

/// The user `name`, or `EntityNotExist.User`.
async fn existing_user(c: &Call<'_>, name: &str) -> Result<UserRecord, ApiError> {
    c.st.db
        .user_get(name)
        .await
        .or_internal()?
        .ok_or_else(|| user_not_found(name))
}

async fn create_virtual_mfa_device(c: &Call<'_>) -> ActionResult {
    use rand::RngCore as _;
    let name = c.params.required("VirtualMFADeviceName")?;
    check_chars("VirtualMFADeviceName", name, 1, 64, ".-_")?;
    let serial = format!("acs:ram::{}:mfa/{name}", c.st.account_id);
    let mut seed = vec![0u8; crate::console::totp::SEED_LEN];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let device = MfaDeviceRecord {
        serial_number: serial.clone(),
        name: name.to_owned(),
        seed: crate::console::seal::seal(c.st, &serial, &seed)?,
        user_id: None,
        activated_at: None,
        last_step: 0,
        created_at: now(),
    };
    if !c.st.db.mfa_device_create(&device).await.or_internal()? {
        return Err(ApiError::new(
            "EntityAlreadyExists.VirtualMFADevice",
            409,
            format!(
                "A virtual MFA device named {name:?} already exists: choose another VirtualMFADeviceName."
            ),
        ));
    }
    Ok(json!({
        "VirtualMFADevice": {
            "SerialNumber": serial,
            "Base32StringSeed": crate::console::totp::base32_encode(&seed),
        }
    }))
}

async fn list_virtual_mfa_devices(c: &Call<'_>) -> ActionResult {
    let users = c.st.db.user_list().await.or_internal()?;
    let devices: Vec<Value> =
        c.st.db
            .mfa_device_list()
            .await
            .or_internal()?
            .into_iter()
            .map(|d| {
                let mut v = json!({ "SerialNumber": d.serial_number });
                if let (Some(obj), Some(at)) = (v.as_object_mut(), d.activated_at) {
                    obj.insert("ActivateDate".into(), json!(time_str(at)));
                }
                if let (Some(obj), Some(u)) = (
                    v.as_object_mut(),
                    users.iter().find(|u| Some(&u.id) == d.user_id.as_ref()),
                ) {
                    obj.insert(
                        "User".into(),
                        json!({
                            "UserId": u.id,
                            "UserName": u.name,
                            "DisplayName": u.display_name,
                        }),
                    );
                }
                v
            })
            .collect();
    Ok(json!({ "VirtualMFADevices": wrap_list("VirtualMFADevice", devices) }))
}

async fn delete_virtual_mfa_device(c: &Call<'_>) -> ActionResult {
    let serial = c.params.required("SerialNumber")?;
    match c.st.db.mfa_device_delete(serial).await.or_internal()? {
        MfaDelete::Deleted => Ok(json!({})),
        MfaDelete::NotFound => Err(mfa_device_not_found(serial)),
        MfaDelete::Bound => Err(ApiError::new(
            "DeleteConflict.VirtualMFADevice.User",
            409,
            format!(
                "The virtual MFA device {serial:?} is bound to a user: unbind it (UnbindMFADevice) first."
            ),
        )),
    }
}

/// The time step of the first of two consecutive codes, `code1` then `code2`, when `code2` is the code
/// of the current step or of one step on either side (so `code1` may be one step older than that).
fn consecutive_codes(seed: &[u8], code1: &str, code2: &str, now: i64) -> Option<i64> {
    use crate::console::totp::{code_at_step, step_of};
    let current = step_of(now);
    (current - 2..=current).find(|&s| {
        let a = code_at_step(seed, s);
        let b = code_at_step(seed, s + 1);
        use subtle::ConstantTimeEq as _;
        bool::from(a.as_bytes().ct_eq(code1.trim().as_bytes()))
            & bool::from(b.as_bytes().ct_eq(code2.trim().as_bytes()))
    })
}

async fn bind_mfa_device(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let serial = p.required("SerialNumber")?;
    let name = p.required("UserName")?;
    let code1 = p.required("AuthenticationCode1")?;
    let code2 = p.required("AuthenticationCode2")?;
    let user = existing_user(c, name).await?;
    let device =
        c.st.db
            .mfa_device_get(serial)
            .await
            .or_internal()?
            .ok_or_else(|| mfa_device_not_found(serial))?;
    let seed = crate::console::seal::open(c.st, serial, &device.seed)?;
    let Some(step) = consecutive_codes(&seed, code1, code2, crate::console::now(c.st)) else {
        return Err(ApiError::new(
            "InvalidParameter.AuthenticationCode",
            400,
            "AuthenticationCode1 and AuthenticationCode2 must be two consecutive codes of the device, the second one current: add the seed to your authenticator app, then send the code it shows and the next one.",
        ));
    };
    match c
        .st
        .db
        .mfa_device_bind(serial, &user.id, step + 1, now())
        .await
        .or_internal()?
    {
        MfaBind::Bound => Ok(json!({})),
        MfaBind::DeviceNotFound => Err(mfa_device_not_found(serial)),
        MfaBind::DeviceInUse => Err(ApiError::new(
            "EntityAlreadyExists.VirtualMFADevice.User",
            409,
            format!(
                "The virtual MFA device {serial:?} is already bound to a user: create another device for {name:?}."
            ),
        )),
        MfaBind::UserHasDevice => Err(ApiError::new(
            "EntityAlreadyExists.User.MFADevice",
            409,
            format!(
                "The user {name:?} already has an MFA device: unbind it (UnbindMFADevice) first."
            ),
        )),
    }
}

async fn unbind_mfa_device(c: &Call<'_>) -> ActionResult {
    let name = c.params.required("UserName")?;
    let user = existing_user(c, name).await?;
    match c.st.db.mfa_device_unbind(&user.id).await.or_internal()? {
        Some(serial) => Ok(json!({ "MFADevice": { "SerialNumber": serial } })),
        None => Err(user_mfa_not_found(name)),
    }
}

async fn get_user_mfa_info(c: &Call<'_>) -> ActionResult {
    let name = c.params.required("UserName")?;
    let user = existing_user(c, name).await?;
    match c.st.db.mfa_device_for_user(&user.id).await.or_internal()? {
        Some(d) => Ok(json!({
            "MFADevice": { "SerialNumber": d.serial_number, "Type": "VMFA" }
        })),
        None => Err(user_mfa_not_found(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rams_rules() {
        assert!(check_user_name("UserName", "alice.ops_1-x").is_ok());
        let e = check_user_name("UserName", "").expect_err("empty");
        assert_eq!(e.code, "InvalidParameter.UserName.Length");
        let e = check_user_name("UserName", &"a".repeat(65)).expect_err("long");
        assert_eq!(e.code, "InvalidParameter.UserName.Length");
        let e = check_user_name("UserName", "alice@x").expect_err("@");
        assert_eq!(e.code, "InvalidParameter.UserName.InvalidChars");
        assert_eq!(e.status, 400);
        assert!(check_display_name("DisplayName", "alice@example").is_ok());
        assert!(check_role_name("Ops.Admin-1").is_ok());
        assert!(check_role_name("ops_admin").is_err());
        assert!(check_policy_name("read-only-1").is_ok());
        assert!(check_policy_name("read.only").is_err());
        assert!(check_mobile("MobilePhone", "86-18688888888").is_ok());
        assert!(check_mobile("MobilePhone", "18688888888").is_err());
        assert!(check_email("Email", "a@example.com").is_ok());
        assert!(check_email("Email", "a.example.com").is_err());
    }

    #[test]
    fn role_arns_use_lower_case_names() {
        assert_eq!(role_arn("123", "OpsAdmin"), "acs:ram::123:role/opsadmin");
    }

    #[test]
    fn marker_paging_walks_every_item_once() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let mut seen = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut q = "MaxItems=2".to_owned();
            if let Some(m) = &marker {
                q.push_str(&format!("&Marker={m}"));
            }
            let (page, extra) = marker_page(&Params::from_query(&q), items.clone()).expect("page");
            seen.extend(page);
            match extra.get("Marker").and_then(Value::as_str) {
                Some(m) => {
                    assert_eq!(extra["IsTruncated"], true);
                    marker = Some(m.to_owned());
                }
                None => {
                    assert_eq!(extra["IsTruncated"], false);
                    break;
                }
            }
        }
        assert_eq!(seen, items);
        assert!(marker_page(&Params::from_query("Marker=x"), items).is_err());
    }

    #[test]
    fn binding_takes_two_consecutive_codes_ending_now() {
        use crate::console::totp::{code_at_step, step_of};
        let seed = b"12345678901234567890";
        let now = 1_111_111_111;
        let s = step_of(now);
        let code = |d: i64| code_at_step(seed, s + d);
        assert_eq!(
            consecutive_codes(seed, &code(-1), &code(0), now),
            Some(s - 1)
        );
        assert_eq!(consecutive_codes(seed, &code(0), &code(1), now), Some(s));
        assert_eq!(
            consecutive_codes(seed, &code(-2), &code(-1), now),
            Some(s - 2)
        );
        // Not consecutive, out of order, or too old.
        assert_eq!(consecutive_codes(seed, &code(-1), &code(1), now), None);
        assert_eq!(consecutive_codes(seed, &code(0), &code(-1), now), None);
        assert_eq!(consecutive_codes(seed, &code(-3), &code(-2), now), None);
        assert_eq!(consecutive_codes(seed, &code(0), &code(0), now), None);
    }
}
