//! `ferry ram …`: RAM users, access keys, policies and roles (RAM `2015-05-01`), and temporary
//! credentials from STS `AssumeRole` (`2015-04-01`).
//!
//! Invariants:
//! * Secrets are printed only where the API hands them out once: a new access key's secret and
//!   AssumeRole's temporary credentials (not at all when they are saved with `--save-profile`).
//! * Policy and trust documents are checked locally to be JSON objects with a `Statement` before they
//!   are sent, so that a typo is reported with its line and column rather than as a server error.
//! * RAM lists page with `Marker`/`IsTruncated`; every page is read.

use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;

use super::Session;
use crate::cli::{
    AssumeRoleArgs, PolicyPrincipal, PolicyType, RamCommand, RamKeyCommand, RamMfaCommand,
    RamPolicyCommand, RamRoleCommand, RamUserCommand,
};
use crate::client::ClientError;
use crate::config::{self, Profile};
use crate::output::{Table, key_values, pretty_json};
use crate::view::{list, text, time};

/// RAM's largest page (`MaxItems` 1-1000).
const MAX_ITEMS: &str = "1000";

pub(super) async fn run(s: &mut Session<'_, '_>, cmd: RamCommand) -> anyhow::Result<()> {
    match cmd {
        RamCommand::User(c) => user(s, c).await,
        RamCommand::Key(c) => key(s, c).await,
        RamCommand::Policy(c) => policy(s, c).await,
        RamCommand::Role(c) => role(s, c).await,
        RamCommand::AssumeRole(args) => assume_role(s, args).await,
    }
}

fn p(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

/// Every item of a RAM list action, following `Marker` while `IsTruncated`. Returns the first
/// response with the list replaced by all items, and the items.
async fn fetch_marker(
    s: &Session<'_, '_>,
    action: &str,
    params: &[(String, String)],
    (outer, inner): (&str, &str),
) -> anyhow::Result<(Value, Vec<Value>)> {
    let mut items = Vec::new();
    let mut first: Option<Value> = None;
    let mut marker: Option<String> = None;
    loop {
        let mut all = params.to_vec();
        all.push(p("MaxItems", MAX_ITEMS));
        if let Some(m) = &marker {
            all.push(p("Marker", m.clone()));
        }
        let resp = s.client.ram(action, &all).await?;
        let got = list(&resp, outer, inner).to_vec();
        let truncated = resp
            .get("IsTruncated")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let next = text(&resp, "Marker");
        let empty = got.is_empty();
        items.extend(got);
        first.get_or_insert(resp);
        // A server that says "truncated" without a new marker would loop forever.
        if !truncated || empty || next.is_empty() || marker.as_deref() == Some(next.as_str()) {
            break;
        }
        marker = Some(next);
    }
    let mut doc = first.unwrap_or(Value::Null);
    if let Some(o) = doc.as_object_mut() {
        o.insert("IsTruncated".into(), Value::Bool(false));
        o.remove("Marker");
        o.insert(outer.into(), serde_json::json!({ inner: items.clone() }));
    }
    Ok((doc, items))
}

async fn user(s: &mut Session<'_, '_>, cmd: RamUserCommand) -> anyhow::Result<()> {
    match cmd {
        RamUserCommand::Create {
            name,
            display_name,
            email,
            comments,
        } => {
            let mut params = vec![p("UserName", name.clone())];
            for (k, v) in [
                ("DisplayName", display_name),
                ("Email", email),
                ("Comments", comments),
            ] {
                if let Some(v) = v {
                    params.push(p(k, v));
                }
            }
            let resp = s.client.ram("CreateUser", &params).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let id = resp
                .get("User")
                .map(|u| text(u, "UserId"))
                .unwrap_or_default();
            s.print(&format!(
                "Created RAM user {name} ({id}). It may do nothing until a policy is attached, e.g. \
                 `ferry ram policy attach AliyunSMCReadOnlyAccess --user {name}`; give it an access key \
                 with `ferry ram key create --user {name}`.\n"
            ))
        }
        RamUserCommand::List => {
            let (doc, items) = fetch_marker(s, "ListUsers", &[], ("Users", "User")).await?;
            if s.json_output() {
                return s.print_json(&doc);
            }
            if items.is_empty() {
                return s.print("No RAM users. Create one with `ferry ram user create NAME`.\n");
            }
            s.print(&users_table(&items).render())
        }
        RamUserCommand::Show { name } => {
            let mut resp = s
                .client
                .ram("GetUser", &[p("UserName", name.clone())])
                .await?;
            // The user's keys and policies come from two more calls; a caller allowed GetUser but
            // not those still sees the user.
            let keys = s
                .client
                .ram("ListAccessKeys", &[p("UserName", name.clone())])
                .await;
            let policies = s
                .client
                .ram("ListPoliciesForUser", &[p("UserName", name.clone())])
                .await;
            if s.json_output() {
                // One document: GetUser's answer plus the two lists, as the API wraps them.
                if let Some(o) = resp.as_object_mut() {
                    if let Ok(k) = &keys {
                        o.insert(
                            "AccessKeys".into(),
                            k.get("AccessKeys").cloned().unwrap_or(Value::Null),
                        );
                    }
                    if let Ok(pol) = &policies {
                        o.insert(
                            "Policies".into(),
                            pol.get("Policies").cloned().unwrap_or(Value::Null),
                        );
                    }
                }
                return s.print_json(&resp);
            }
            let u = resp.get("User").cloned().unwrap_or(Value::Null);
            s.print(&render_user(&u, &keys, &policies))
        }
        RamUserCommand::Delete { name } => {
            let resp = s
                .client
                .ram("DeleteUser", &[p("UserName", name.clone())])
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!("Deleted RAM user {name}.\n"))
        }
        RamUserCommand::SetPassword {
            name,
            password_stdin,
            require_mfa,
            reset_required,
        } => set_password(s, &name, password_stdin, require_mfa, reset_required).await,
        RamUserCommand::Mfa(RamMfaCommand::Enable {
            name,
            codes,
            device,
        }) => mfa_enable(s, &name, codes, device).await,
        RamUserCommand::Mfa(RamMfaCommand::Disable { name }) => mfa_disable(s, &name).await,
    }
}

/// A generated console password: 20 letters and digits with at least one of each (the server's policy).
fn generated_password() -> String {
    loop {
        let pw = ferry_server::app::random_secret(20);
        if pw.chars().any(|c| c.is_ascii_alphabetic()) && pw.chars().any(|c| c.is_ascii_digit()) {
            return pw;
        }
    }
}

/// `ferry ram user set-password`: CreateLoginProfile, or UpdateLoginProfile when the user has one.
async fn set_password(
    s: &mut Session<'_, '_>,
    name: &str,
    from_stdin: bool,
    require_mfa: bool,
    reset_required: bool,
) -> anyhow::Result<()> {
    let (password, generated) = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        let pw = line.trim_end_matches(['\r', '\n']).to_owned();
        anyhow::ensure!(
            !pw.is_empty(),
            "standard input held no password: pipe it in, e.g. `printf '%s\\n' \"$PW\" | ferry ram user set-password {name} --password-stdin`"
        );
        (pw, false)
    } else {
        (generated_password(), true)
    };
    let params = vec![
        p("UserName", name),
        p("Password", password.clone()),
        p("PasswordResetRequired", reset_required.to_string()),
        p("MFABindRequired", require_mfa.to_string()),
    ];
    let resp = match s.client.ram("CreateLoginProfile", &params).await {
        Ok(r) => r,
        Err(e) if e.api_code() == Some("EntityAlreadyExists.User.LoginProfile") => {
            s.client.ram("UpdateLoginProfile", &params).await?
        }
        Err(e) => return Err(e.into()),
    };
    if s.json_output() {
        // The password is only in the JSON when this command made it up (nobody else knows it).
        let mut doc = resp;
        if generated && let Some(o) = doc.as_object_mut() {
            o.insert("Password".into(), Value::String(password));
        }
        return s.print_json(&doc);
    }
    let mut out = format!("Console password set for {name}.");
    if generated {
        out.push_str(&format!(
            " Generated password (shown once, give it to the user): {password}"
        ));
    }
    out.push_str(&format!(
        "\nSign in at <endpoint>/console/. Console actions need policies like any API call (e.g. \
         `ferry ram policy attach AdministratorAccess --user {name}`).\n"
    ));
    if require_mfa {
        out.push_str(&format!(
            "MFA is requested: bind a device with `ferry ram user mfa enable {name}`.\n"
        ));
    }
    s.print(&out)
}

/// The `otpauth://` URI of a virtual MFA device (what authenticator apps import).
fn otpauth_uri(account_label: &str, base32_seed: &str) -> String {
    let enc = |t: &str| -> String {
        t.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    format!(
        "otpauth://totp/Ferry:{}?secret={base32_seed}&issuer=Ferry&algorithm=SHA1&digits=6&period=30",
        enc(account_label)
    )
}

/// The virtual MFA device named `device`: its serial number and whether it is bound to a user.
async fn find_device(s: &Session<'_, '_>, device: &str) -> anyhow::Result<Option<(String, bool)>> {
    let resp = s.client.ram("ListVirtualMFADevices", &[]).await?;
    let suffix = format!(":mfa/{device}");
    Ok(list(&resp, "VirtualMFADevices", "VirtualMFADevice")
        .iter()
        .map(|d| (text(d, "SerialNumber"), d.get("User").is_some()))
        .find(|(serial, _)| serial.ends_with(&suffix)))
}

/// `ferry ram user mfa enable`, in one or two steps:
/// * without `--codes`: creates the virtual MFA device (replacing an unbound one of the same name, whose
///   seed cannot be shown again) and prints its `otpauth://` URI; on a terminal it then asks for two codes
///   and binds, otherwise it says to run again with `--codes`;
/// * with `--codes C1,C2`: binds the unbound device created before (or, if there is none, fails saying to
///   run without `--codes` first).
async fn mfa_enable(
    s: &mut Session<'_, '_>,
    name: &str,
    codes: Vec<String>,
    device: Option<String>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        codes.is_empty() || codes.len() == 2,
        "--codes takes two consecutive codes separated by a comma, e.g. --codes 123456,654321"
    );
    let device = device.unwrap_or_else(|| name.to_owned());
    let existing = find_device(s, &device).await?;
    let (serial, codes) = if codes.is_empty() {
        match existing {
            Some((_, true)) => anyhow::bail!(
                "the MFA device {device:?} is bound already: `ferry ram user mfa disable {name}` first, or pass --device NAME"
            ),
            // Its seed was shown once, when it was made: make a new one.
            Some((serial, false)) => {
                s.client
                    .ram("DeleteVirtualMFADevice", &[p("SerialNumber", serial)])
                    .await?;
            }
            None => {}
        }
        let created = s
            .client
            .ram(
                "CreateVirtualMFADevice",
                &[p("VirtualMFADeviceName", device.clone())],
            )
            .await?;
        let v = created
            .get("VirtualMFADevice")
            .cloned()
            .unwrap_or(Value::Null);
        let serial = text(&v, "SerialNumber");
        let uri = otpauth_uri(name, &text(&v, "Base32StringSeed"));
        if !s.io.interactive {
            if s.json_output() {
                return s.print_json(&serde_json::json!({
                    "UserName": name,
                    "SerialNumber": serial,
                    "OtpauthUri": uri,
                    "Bound": false,
                }));
            }
            return s.print(&format!(
                "Created MFA device {serial}. Add this to {name}'s authenticator app (as a QR code or typed):\n  {uri}\n\
                 Then bind it with two consecutive codes: `ferry ram user mfa enable {name} --codes C1,C2`.\n"
            ));
        }
        s.print(&format!(
            "Add this to {name}'s authenticator app (as a QR code or typed):\n  {uri}\n\
             Enter the code it shows, then wait for the next one and enter it too.\n"
        ))?;
        let mut out = Vec::new();
        for which in ["first", "second"] {
            s.print(&format!("{which} code: "))?;
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading a code from standard input")?;
            out.push(line.trim().to_owned());
        }
        (serial, out)
    } else {
        match existing {
            Some((serial, false)) => (serial, codes),
            Some((_, true)) => anyhow::bail!(
                "the MFA device {device:?} is bound already: nothing to do (`ferry ram user mfa disable {name}` removes it)"
            ),
            None => anyhow::bail!(
                "{name} has no MFA device {device:?} waiting for codes: run `ferry ram user mfa enable {name}` without --codes first, add the URI it prints to the authenticator app, then run it again with --codes"
            ),
        }
    };
    s.client
        .ram(
            "BindMFADevice",
            &[
                p("SerialNumber", serial.clone()),
                p("UserName", name),
                p("AuthenticationCode1", codes[0].clone()),
                p("AuthenticationCode2", codes[1].clone()),
            ],
        )
        .await
        .with_context(|| {
            format!(
                "binding the MFA device to {name} failed: run `ferry ram user mfa enable {name} --codes C1,C2` with two fresh consecutive codes"
            )
        })?;
    if s.json_output() {
        return s.print_json(&serde_json::json!({
            "UserName": name,
            "SerialNumber": serial,
            "Bound": true,
        }));
    }
    s.print(&format!(
        "MFA enabled for {name} (device {serial}): console sign-in now asks for a code.\n"
    ))
}

/// `ferry ram user mfa disable`: UnbindMFADevice, then DeleteVirtualMFADevice.
async fn mfa_disable(s: &mut Session<'_, '_>, name: &str) -> anyhow::Result<()> {
    let resp = s
        .client
        .ram("UnbindMFADevice", &[p("UserName", name)])
        .await?;
    let serial = resp
        .get("MFADevice")
        .map(|d| text(d, "SerialNumber"))
        .unwrap_or_default();
    if !serial.is_empty() {
        s.client
            .ram(
                "DeleteVirtualMFADevice",
                &[p("SerialNumber", serial.clone())],
            )
            .await?;
    }
    if s.json_output() {
        return s.print_json(&resp);
    }
    s.print(&format!(
        "MFA disabled for {name}: device {serial} unbound and deleted. The password alone signs in again.\n"
    ))
}

fn users_table(items: &[Value]) -> Table {
    let mut t = Table::new(&["NAME", "ID", "DISPLAY NAME", "EMAIL", "CREATED", "COMMENTS"]);
    for u in items {
        t.row(vec![
            text(u, "UserName"),
            text(u, "UserId"),
            text(u, "DisplayName"),
            text(u, "Email"),
            time(u, "CreateDate"),
            text(u, "Comments"),
        ]);
    }
    t
}

fn indent(table: &Table) -> String {
    table.render().lines().map(|l| format!("  {l}\n")).collect()
}

/// A user with its access keys and attached policies (either list may have failed).
pub fn render_user(
    u: &Value,
    keys: &Result<Value, ClientError>,
    policies: &Result<Value, ClientError>,
) -> String {
    let mut out = format!("RAM user {} ({})\n", text(u, "UserName"), text(u, "UserId"));
    out.push_str(&key_values(
        &[
            ("Display name", text(u, "DisplayName")),
            ("Email", text(u, "Email")),
            ("Mobile", text(u, "MobilePhone")),
            ("Comments", text(u, "Comments")),
            ("Created", time(u, "CreateDate")),
            ("Last login", time(u, "LastLoginDate")),
        ],
        2,
    ));
    out.push_str("\nAccess keys:\n");
    match keys {
        Err(e) => out.push_str(&format!("  could not be listed: {e}\n")),
        Ok(k) => {
            let items = list(k, "AccessKeys", "AccessKey");
            if items.is_empty() {
                out.push_str("  none\n");
            } else {
                out.push_str(&indent(&keys_table(items)));
            }
        }
    }
    out.push_str("\nPolicies:\n");
    match policies {
        Err(e) => out.push_str(&format!("  could not be listed: {e}\n")),
        Ok(pol) => {
            let items = list(pol, "Policies", "Policy");
            if items.is_empty() {
                out.push_str("  none: the user may do nothing\n");
            } else {
                let mut t = Table::new(&["NAME", "TYPE", "ATTACHED", "DESCRIPTION"]);
                for i in items {
                    t.row(vec![
                        text(i, "PolicyName"),
                        text(i, "PolicyType"),
                        time(i, "AttachDate"),
                        text(i, "Description"),
                    ]);
                }
                out.push_str(&indent(&t));
            }
        }
    }
    out
}

fn with_user(mut params: Vec<(String, String)>, user: Option<String>) -> Vec<(String, String)> {
    if let Some(u) = user {
        params.push(p("UserName", u));
    }
    params
}

fn whose(user: &Option<String>) -> String {
    match user {
        Some(u) => format!("user {u}"),
        None => "the caller".to_owned(),
    }
}

async fn key(s: &mut Session<'_, '_>, cmd: RamKeyCommand) -> anyhow::Result<()> {
    match cmd {
        RamKeyCommand::Create { user } => {
            let resp = s
                .client
                .ram("CreateAccessKey", &with_user(Vec::new(), user.clone()))
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let k = resp.get("AccessKey").cloned().unwrap_or(Value::Null);
            let id = text(&k, "AccessKeyId");
            let mut out = format!("Created an access key for {}:\n", whose(&user));
            out.push_str(&key_values(
                &[
                    ("AccessKeyId", id.clone()),
                    ("AccessKeySecret", text(&k, "AccessKeySecret")),
                ],
                2,
            ));
            out.push_str(&format!(
                "\nwarning: the secret is shown only now and cannot be shown again: store it safely, e.g. \
                 `ferry configure --profile NAME --access-key-id {id} --access-key-secret <secret> \
                 --endpoint {}`.\n",
                s.client.endpoint()
            ));
            s.print(&out)
        }
        RamKeyCommand::List { user } => {
            let resp = s
                .client
                .ram("ListAccessKeys", &with_user(Vec::new(), user.clone()))
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let items = list(&resp, "AccessKeys", "AccessKey");
            if items.is_empty() {
                return s.print(&format!(
                    "No access keys for {}. Create one with `ferry ram key create{}`.\n",
                    whose(&user),
                    user.as_deref()
                        .map(|u| format!(" --user {u}"))
                        .unwrap_or_default()
                ));
            }
            s.print(&keys_table(items).render())
        }
        RamKeyCommand::Disable { id, user } => set_key_status(s, id, user, "Inactive").await,
        RamKeyCommand::Enable { id, user } => set_key_status(s, id, user, "Active").await,
        RamKeyCommand::Delete { id, user } => {
            let resp = s
                .client
                .ram(
                    "DeleteAccessKey",
                    &with_user(vec![p("UserAccessKeyId", id.clone())], user),
                )
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!(
                "Deleted access key {id}: requests signed with it are refused from now on.\n"
            ))
        }
    }
}

async fn set_key_status(
    s: &mut Session<'_, '_>,
    id: String,
    user: Option<String>,
    status: &str,
) -> anyhow::Result<()> {
    let resp = s
        .client
        .ram(
            "UpdateAccessKey",
            &with_user(
                vec![p("UserAccessKeyId", id.clone()), p("Status", status)],
                user,
            ),
        )
        .await?;
    if s.json_output() {
        return s.print_json(&resp);
    }
    s.print(&if status == "Active" {
        format!("Enabled access key {id}.\n")
    } else {
        format!(
            "Disabled access key {id}: requests signed with it are refused until `ferry ram key enable {id}`.\n"
        )
    })
}

fn keys_table(items: &[Value]) -> Table {
    let mut t = Table::new(&["ACCESS KEY ID", "STATUS", "CREATED"]);
    for k in items {
        t.row(vec![
            text(k, "AccessKeyId"),
            text(k, "Status"),
            time(k, "CreateDate"),
        ]);
    }
    t
}

/// Reads a policy or trust document (`-` = standard input) and checks that it is a JSON object with a
/// `Statement`, as the policy language requires. Returns the text as written.
pub fn read_document(path: &Path, what: &str) -> anyhow::Result<String> {
    let shown = if path == Path::new("-") {
        "standard input".to_owned()
    } else {
        path.display().to_string()
    };
    let text = if path == Path::new("-") {
        let mut t = String::new();
        std::io::stdin()
            .read_to_string(&mut t)
            .with_context(|| format!("reading the {what} from standard input"))?;
        t
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the {what} {shown}: check the path"))?
    };
    check_document(&text, what, &shown)?;
    Ok(text)
}

/// The local check of [`read_document`].
pub fn check_document(text: &str, what: &str, shown: &str) -> anyhow::Result<()> {
    let example = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"smc:Describe*","Resource":"*"}]}"#;
    let v: Value = serde_json::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "the {what} in {shown} is not valid JSON (line {}, column {}: {e}): fix it; a document looks \
             like {example}",
            e.line(),
            e.column()
        )
    })?;
    let Some(o) = v.as_object() else {
        anyhow::bail!(
            "the {what} in {shown} is JSON but not an object: it must look like {example}"
        );
    };
    if !o
        .get("Statement")
        .is_some_and(|st| st.is_array() || st.is_object())
    {
        anyhow::bail!(
            "the {what} in {shown} has no \"Statement\" list: it must look like {example}"
        );
    }
    Ok(())
}

/// The policy's type: the one given, else Custom when a custom policy of that name exists, else
/// System (system and custom policies may share no name in practice, and custom ones are the
/// operator's own).
async fn policy_type(
    s: &Session<'_, '_>,
    name: &str,
    given: Option<PolicyType>,
) -> anyhow::Result<PolicyType> {
    if let Some(t) = given {
        return Ok(t);
    }
    let probe = s
        .client
        .ram(
            "GetPolicy",
            &[
                p("PolicyName", name),
                p("PolicyType", PolicyType::Custom.as_api()),
            ],
        )
        .await;
    match probe {
        Ok(_) => Ok(PolicyType::Custom),
        Err(e)
            if e.api_code()
                .is_some_and(|c| c.starts_with("EntityNotExist")) =>
        {
            Ok(PolicyType::System)
        }
        Err(e) => Err(e.into()),
    }
}

async fn policy(s: &mut Session<'_, '_>, cmd: RamPolicyCommand) -> anyhow::Result<()> {
    match cmd {
        RamPolicyCommand::Create {
            name,
            document,
            description,
        } => {
            let doc = read_document(&document, "policy document")?;
            let mut params = vec![p("PolicyName", name.clone()), p("PolicyDocument", doc)];
            if let Some(d) = description {
                params.push(p("Description", d));
            }
            let resp = s.client.ram("CreatePolicy", &params).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!(
                "Created custom policy {name}. Attach it with `ferry ram policy attach {name} --user NAME` \
                 (or --role NAME).\n"
            ))
        }
        RamPolicyCommand::List { policy_type } => {
            let params: Vec<_> = policy_type
                .map(|t| p("PolicyType", t.as_api()))
                .into_iter()
                .collect();
            let (doc, items) =
                fetch_marker(s, "ListPolicies", &params, ("Policies", "Policy")).await?;
            if s.json_output() {
                return s.print_json(&doc);
            }
            if items.is_empty() {
                return s.print(
                    "No policies. Create one with `ferry ram policy create --name N --document FILE`.\n",
                );
            }
            s.print(&policies_table(&items).render())
        }
        RamPolicyCommand::Show {
            name,
            policy_type: t,
        } => {
            let t = policy_type(s, &name, t).await?;
            let resp = s
                .client
                .ram(
                    "GetPolicy",
                    &[p("PolicyName", name.clone()), p("PolicyType", t.as_api())],
                )
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&render_policy(&resp))
        }
        RamPolicyCommand::Delete { name } => {
            let resp = s
                .client
                .ram("DeletePolicy", &[p("PolicyName", name.clone())])
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!("Deleted custom policy {name}.\n"))
        }
        RamPolicyCommand::Attach {
            name,
            to,
            policy_type: t,
        } => attach(s, &name, to, t, true).await,
        RamPolicyCommand::Detach {
            name,
            from,
            policy_type: t,
        } => attach(s, &name, from, t, false).await,
    }
}

async fn attach(
    s: &mut Session<'_, '_>,
    name: &str,
    principal: PolicyPrincipal,
    given: Option<PolicyType>,
    attach: bool,
) -> anyhow::Result<()> {
    let t = policy_type(s, name, given).await?;
    let (kind, key, who) = match (principal.user, principal.role) {
        (Some(u), _) => ("User", "UserName", u),
        (None, Some(r)) => ("Role", "RoleName", r),
        // clap's argument group requires one of the two.
        (None, None) => anyhow::bail!("say who with --user NAME or --role NAME"),
    };
    let action = if attach {
        format!("AttachPolicyTo{kind}")
    } else {
        format!("DetachPolicyFrom{kind}")
    };
    let params = [
        p("PolicyType", t.as_api()),
        p("PolicyName", name),
        p(key, who.clone()),
    ];
    let resp = s.client.ram(&action, &params).await?;
    if s.json_output() {
        return s.print_json(&resp);
    }
    let kind = kind.to_ascii_lowercase();
    s.print(&if attach {
        format!(
            "Attached {} policy {name} to {kind} {who}; it applies to the next request.\n",
            t.as_api()
        )
    } else {
        format!(
            "Detached {} policy {name} from {kind} {who}; it no longer applies from the next request.\n",
            t.as_api()
        )
    })
}

fn policies_table(items: &[Value]) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "TYPE",
        "ATTACHMENTS",
        "VERSION",
        "CREATED",
        "DESCRIPTION",
    ]);
    for i in items {
        t.row(vec![
            text(i, "PolicyName"),
            text(i, "PolicyType"),
            text(i, "AttachmentCount"),
            text(i, "DefaultVersion"),
            time(i, "CreateDate"),
            text(i, "Description"),
        ]);
    }
    t
}

/// A policy and its default version's document, pretty-printed.
pub fn render_policy(resp: &Value) -> String {
    let pol = resp.get("Policy").cloned().unwrap_or(Value::Null);
    let mut out = format!(
        "Policy {} ({})\n",
        text(&pol, "PolicyName"),
        text(&pol, "PolicyType")
    );
    out.push_str(&key_values(
        &[
            ("Description", text(&pol, "Description")),
            ("Version", text(&pol, "DefaultVersion")),
            ("Attachments", text(&pol, "AttachmentCount")),
            ("Created", time(&pol, "CreateDate")),
            ("Updated", time(&pol, "UpdateDate")),
        ],
        2,
    ));
    let doc = resp
        .get("DefaultPolicyVersion")
        .map(|v| text(v, "PolicyDocument"))
        .filter(|d| !d.is_empty())
        .or_else(|| Some(text(&pol, "PolicyDocument")).filter(|d| !d.is_empty()));
    if let Some(doc) = doc {
        out.push_str("\nDocument:\n");
        let pretty = serde_json::from_str::<Value>(&doc)
            .map(|v| pretty_json(&v))
            .unwrap_or_else(|_| format!("{doc}\n"));
        for line in pretty.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

async fn role(s: &mut Session<'_, '_>, cmd: RamRoleCommand) -> anyhow::Result<()> {
    match cmd {
        RamRoleCommand::Create {
            name,
            trust,
            max_session,
            description,
        } => {
            let doc = read_document(&trust, "trust policy")?;
            let mut params = vec![
                p("RoleName", name.clone()),
                p("AssumeRolePolicyDocument", doc),
            ];
            if let Some(m) = max_session {
                params.push(p("MaxSessionDuration", m.to_string()));
            }
            if let Some(d) = description {
                params.push(p("Description", d));
            }
            let resp = s.client.ram("CreateRole", &params).await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            let arn = resp.get("Role").map(|r| text(r, "Arn")).unwrap_or_default();
            s.print(&format!(
                "Created role {name} ({arn}). Give it permissions with `ferry ram policy attach POLICY --role \
                 {name}`; get credentials with `ferry ram assume-role --role-arn {arn} --session NAME`.\n"
            ))
        }
        RamRoleCommand::List => {
            let (doc, items) = fetch_marker(s, "ListRoles", &[], ("Roles", "Role")).await?;
            if s.json_output() {
                return s.print_json(&doc);
            }
            if items.is_empty() {
                return s.print(
                    "No roles. Create one with `ferry ram role create --name N --trust FILE`.\n",
                );
            }
            let mut t = Table::new(&["NAME", "ARN", "MAX SESSION", "CREATED", "DESCRIPTION"]);
            for r in &items {
                let max = text(r, "MaxSessionDuration");
                t.row(vec![
                    text(r, "RoleName"),
                    text(r, "Arn"),
                    if max.is_empty() {
                        max
                    } else {
                        format!("{max}s")
                    },
                    time(r, "CreateDate"),
                    text(r, "Description"),
                ]);
            }
            s.print(&t.render())
        }
        RamRoleCommand::Delete { name } => {
            let resp = s
                .client
                .ram("DeleteRole", &[p("RoleName", name.clone())])
                .await?;
            if s.json_output() {
                return s.print_json(&resp);
            }
            s.print(&format!("Deleted role {name}.\n"))
        }
    }
}

/// The profile that holds AssumeRole's credentials and reaches the same server as this session.
pub fn sts_profile(name: &str, resolved: &config::Resolved, creds: &Value) -> Profile {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    Profile {
        name: name.to_owned(),
        endpoint: resolved.endpoint.clone(),
        access_key_id: text(creds, "AccessKeyId"),
        access_key_secret: text(creds, "AccessKeySecret"),
        ca_cert: resolved.ca_cert.as_deref().map(absolute),
        ca_fingerprint: resolved.ca_fingerprint.clone(),
        region_id: resolved.region_id.clone(),
        security_token: Some(text(creds, "SecurityToken")).filter(|t| !t.is_empty()),
    }
}

async fn assume_role(s: &mut Session<'_, '_>, args: AssumeRoleArgs) -> anyhow::Result<()> {
    let mut params = vec![
        p("RoleArn", args.role_arn.clone()),
        p("RoleSessionName", args.session.clone()),
    ];
    if let Some(d) = args.duration {
        params.push(p("DurationSeconds", d.to_string()));
    }
    let resp = s.client.sts("AssumeRole", &params).await?;
    let creds = resp.get("Credentials").cloned().unwrap_or(Value::Null);
    let key_id = text(&creds, "AccessKeyId");
    if key_id.is_empty() || text(&creds, "AccessKeySecret").is_empty() {
        anyhow::bail!(
            "the server's AssumeRole answer has no Credentials.AccessKeyId/AccessKeySecret: see it with \
             `ferry call AssumeRole --api-version 2015-04-01 RoleArn=... RoleSessionName=...`"
        );
    }
    let expires = time(&creds, "Expiration");
    let saved = match &args.save_profile {
        Some(name) => {
            let profile = sts_profile(name, &s.resolved, &creds);
            Some(config::save_profile(s.io.home.as_deref(), profile)?)
        }
        None => None,
    };
    if s.json_output() {
        return s.print_json(&resp);
    }
    let who = resp
        .get("AssumedRoleUser")
        .map(|u| text(u, "Arn"))
        .unwrap_or_default();
    let mut out = format!("Assumed role {} as {who}.\n", args.role_arn);
    match (&args.save_profile, saved) {
        (Some(name), Some(path)) => {
            out.push_str(&format!(
                "Saved the temporary credentials (access key {key_id}) as profile {name:?} in {}: use them \
                 with `--profile {name}` until {expires} UTC.\n",
                path.display()
            ));
        }
        _ => {
            out.push_str(&key_values(
                &[
                    ("AccessKeyId", key_id),
                    ("AccessKeySecret", text(&creds, "AccessKeySecret")),
                    ("SecurityToken", text(&creds, "SecurityToken")),
                    ("Expiration", format!("{expires} UTC")),
                ],
                2,
            ));
            out.push_str(
                "\nwarning: these are secrets: keep them out of logs. Use them with --access-key-id, \
                 --access-key-secret and --security-token (or FERRY_SECURITY_TOKEN), or save them with \
                 --save-profile NAME.\n",
            );
        }
    }
    s.print(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_are_checked_locally_with_the_position_of_the_error() {
        let ok = r#"{"Version":"1","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        assert!(check_document(ok, "policy document", "p.json").is_ok());
        let msg = check_document(
            "{\"Version\": \"1\",\n  \"Statement\": [}",
            "policy document",
            "p.json",
        )
        .expect_err("broken JSON")
        .to_string();
        assert!(msg.contains("p.json is not valid JSON (line 2"), "{msg}");
        let msg = check_document("[1]", "trust policy", "t.json")
            .expect_err("not an object")
            .to_string();
        assert!(msg.contains("not an object"), "{msg}");
        let msg = check_document("{\"Version\":\"1\"}", "policy document", "p.json")
            .expect_err("no statements")
            .to_string();
        assert!(msg.contains("no \"Statement\""), "{msg}");
    }

    #[test]
    fn documents_are_read_from_files_as_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("p.json");
        let doc = "{ \"Statement\": [] }\n";
        std::fs::write(&path, doc).expect("write");
        assert_eq!(read_document(&path, "policy document").expect("reads"), doc);
        let missing =
            read_document(&dir.path().join("nope.json"), "policy document").expect_err("no file");
        assert!(format!("{missing:#}").contains("nope.json"), "{missing:#}");
    }

    #[test]
    fn a_policy_renders_its_document() {
        let resp = json!({
            "Policy": {"PolicyName": "ReadJobs", "PolicyType": "Custom", "DefaultVersion": "v1",
                       "CreateDate": "2024-05-01T10:00:00Z"},
            "DefaultPolicyVersion": {"VersionId": "v1",
                "PolicyDocument": "{\"Version\":\"1\",\"Statement\":[]}"}
        });
        let out = render_policy(&resp);
        assert!(out.starts_with("Policy ReadJobs (Custom)\n"), "{out}");
        assert!(out.contains("  \"Version\": \"1\""), "{out}");
    }

    #[test]
    fn a_user_renders_its_keys_and_policies() {
        let u =
            json!({"UserName": "alice", "UserId": "2001", "CreateDate": "2024-05-01T10:00:00Z"});
        let keys = Ok(json!({"AccessKeys": {"AccessKey": [
            {"AccessKeyId": "LTAIa", "Status": "Active", "CreateDate": "2024-05-01T10:00:00Z"}
        ]}}));
        let policies = Ok(json!({"Policies": {"Policy": []}}));
        let out = render_user(&u, &keys, &policies);
        assert!(out.contains("LTAIa          Active"), "{out}");
        assert!(out.contains("none: the user may do nothing"), "{out}");
    }

    #[test]
    fn sts_profiles_keep_the_token_and_the_connection() {
        let resolved = config::Resolved {
            endpoint: "https://h:1".into(),
            access_key_id: "LTAIroot".into(),
            access_key_secret: "s".into(),
            security_token: None,
            ca_cert: Some("/tmp/ca.pem".into()),
            ca_pem: None,
            ca_fingerprint: Some("sha256:ab".into()),
            region_id: "r1".into(),
        };
        let creds = json!({"AccessKeyId": "STS.x", "AccessKeySecret": "y", "SecurityToken": "z",
                           "Expiration": "2024-05-01T11:00:00Z"});
        let prof = sts_profile("tmp", &resolved, &creds);
        assert_eq!(
            (prof.access_key_id.as_str(), prof.security_token.as_deref()),
            ("STS.x", Some("z"))
        );
        assert_eq!(prof.endpoint, "https://h:1");
        assert_eq!(prof.region_id, "r1");
        assert_eq!(prof.ca_fingerprint.as_deref(), Some("sha256:ab"));
    }
}
