//! Every action Ferry serves and what it touches: the resource ARNs a call is authorized against, and
//! its ActionTrail `EventRW` class.
//!
//! ARNs are `acs:<service>:<region>:<account>:<relative-id>`. The mapping (reference §2.1, §3.1, §3.2):
//!
//! | Service | Action | Resources |
//! |---|---|---|
//! | smc | DescribeSourceServers | `sourceServer/<id>` per `SourceId.N`, else `sourceServer/*` |
//! | smc | ModifySourceServerAttribute, DeleteSourceServer | `sourceServer/<SourceId>` |
//! | smc | CreateReplicationJob | `sourceServer/<SourceId>` and `replicationJob/*` |
//! | smc | DescribeReplicationJobs | `replicationJob/<id>` per `JobId.N`, else `replicationJob/*` |
//! | smc | Modify…/Start…/Stop…/Delete…/CutOverReplicationJob | `replicationJob/<JobId>` |
//! | smc | tokens, workgroups, tags, cross-zone jobs, anything else | `*` |
//! | ecs | Start/Stop/Reboot/DeleteInstance, DescribeInstanceAttribute, ModifyInstanceAttribute, GetInstanceConsoleOutput | `instance/<InstanceId>` |
//! | ecs | DescribeInstances | `instance/<id>` per `InstanceIds` (JSON array), else `*` |
//! | ecs | RunInstances, CreateInstance | `instance/*` and `image/<ImageId>` |
//! | ecs | DeleteImage, ExportImage, ModifyImageAttribute | `image/<ImageId>` |
//! | ecs | DescribeImages | `image/<id>` per comma-separated `ImageId`, else `*` |
//! | ecs | CreateImage | `image/*` and `instance/<InstanceId>` / `snapshot/<SnapshotId>` when given |
//! | ecs | ImportImage | `image/*` |
//! | ecs | DeleteSnapshot | `snapshot/<SnapshotId>` |
//! | ecs | DescribeSnapshots | `snapshot/<id>` per `SnapshotIds` (JSON array), else `*` |
//! | ecs | anything else | `*` |
//! | ram | any | `acs:ram::<account>:` + `user/<UserName>`, `group/<GroupName>`, `role/<RoleName>`, `policy/<PolicyName>` for each parameter present, else `*` |
//! | sts | AssumeRole | `acs:ram::<account-of-RoleArn>:role/<name-of-RoleArn>` (`acs:ram::<account>:role/*` if RoleArn is not a role ARN) |
//! | actiontrail, sts (other), unknown | any | `*` |
//!
//! `*` above means the service-wide ARN `acs:<service>:<region>:<account>:*`. A missing id parameter
//! maps to `<type>/*`, which only a wildcard grant covers (the action then fails its own validation).
//! Invariants: the result is never empty; region and account cannot inject ARN segments (a `:` in
//! them is replaced by `_`).

/// The ARNs one call touches. `param` returns a request parameter's values (a scalar → one value, a
/// RepeatList like `SourceId.N` asked for as `"SourceId"` → all values, absent → none). Unknown or unscoped
/// actions → the service-wide ARN `acs:<service>:<region>:<account>:*`. A call is allowed only if every
/// returned resource is allowed.
///
/// RAM's `CreateAccessKey` & co. default `UserName` to the caller: a gateway that wants users to manage
/// their own keys returns the caller's name from `param("UserName")` when the request has none.
pub fn resources(
    service: &str,
    action: &str,
    region: &str,
    account: &str,
    param: &dyn Fn(&str) -> Vec<String>,
) -> Vec<String> {
    let service = service.to_ascii_lowercase();
    let region = region.replace(':', "_");
    let account = account.replace(':', "_");
    let arns = Arns {
        service: &service,
        region: &region,
        account: &account,
        param,
    };
    match service.as_str() {
        "smc" => smc(&arns, action),
        "ecs" => ecs(&arns, action),
        "ram" => ram(&arns),
        "sts" if action == "AssumeRole" => vec![assume_role(&arns)],
        _ => vec![arns.all()],
    }
}

/// ActionTrail's `EventRW`: `"Read"` for `Describe*`/`List*`/`Get*`/`Lookup*`, else `"Write"`. Accepts the
/// bare API name or `<service>:<Api>`.
pub fn event_rw(action: &str) -> &'static str {
    let api = action.split_once(':').map_or(action, |(_, api)| api);
    if ["Describe", "List", "Get", "Lookup"]
        .iter()
        .any(|p| api.starts_with(p))
    {
        "Read"
    } else {
        "Write"
    }
}

struct Arns<'a> {
    service: &'a str,
    region: &'a str,
    account: &'a str,
    param: &'a dyn Fn(&str) -> Vec<String>,
}

impl Arns<'_> {
    fn arn(&self, relative: &str) -> String {
        format!(
            "acs:{}:{}:{}:{relative}",
            self.service, self.region, self.account
        )
    }

    fn all(&self) -> String {
        self.arn("*")
    }

    /// The non-empty values of `name`, without duplicates, in request order.
    fn values(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for v in (self.param)(name) {
            if !v.is_empty() && !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }

    /// `<kind>/<id>` for the first value of `name`, or `<kind>/*` when absent.
    fn one(&self, kind: &str, name: &str) -> String {
        match self.values(name).first() {
            Some(id) => self.arn(&format!("{kind}/{id}")),
            None => self.arn(&format!("{kind}/*")),
        }
    }

    /// `<kind>/<id>` for every id in `ids`, or `fallback` when there are none.
    fn each(&self, kind: &str, ids: Vec<String>, fallback: String) -> Vec<String> {
        if ids.is_empty() {
            vec![fallback]
        } else {
            ids.iter()
                .map(|id| self.arn(&format!("{kind}/{id}")))
                .collect()
        }
    }

    /// Ids from a parameter holding a JSON array of strings (`InstanceIds=["i-1","i-2"]`). `None` when
    /// the parameter is present but not such an array.
    fn json_ids(&self, name: &str) -> Option<Vec<String>> {
        let mut ids = Vec::new();
        for v in self.values(name) {
            let list: Vec<String> = serde_json::from_str(&v).ok()?;
            ids.extend(list.into_iter().filter(|s| !s.is_empty()));
        }
        Some(ids)
    }
}

fn smc(a: &Arns<'_>, action: &str) -> Vec<String> {
    match action {
        "DescribeSourceServers" => a.each(
            "sourceServer",
            a.values("SourceId"),
            a.arn("sourceServer/*"),
        ),
        "ModifySourceServerAttribute" | "DeleteSourceServer" => {
            vec![a.one("sourceServer", "SourceId")]
        }
        "CreateReplicationJob" => {
            vec![a.one("sourceServer", "SourceId"), a.arn("replicationJob/*")]
        }
        "DescribeReplicationJobs" => a.each(
            "replicationJob",
            a.values("JobId"),
            a.arn("replicationJob/*"),
        ),
        "ModifyReplicationJobAttribute"
        | "StartReplicationJob"
        | "StopReplicationJob"
        | "DeleteReplicationJob"
        | "CutOverReplicationJob" => vec![a.one("replicationJob", "JobId")],
        _ => vec![a.all()],
    }
}

fn ecs(a: &Arns<'_>, action: &str) -> Vec<String> {
    match action {
        "StartInstance"
        | "StopInstance"
        | "RebootInstance"
        | "DeleteInstance"
        | "DescribeInstanceAttribute"
        | "ModifyInstanceAttribute"
        | "GetInstanceConsoleOutput" => vec![a.one("instance", "InstanceId")],
        "DescribeInstances" => match a.json_ids("InstanceIds") {
            Some(ids) => a.each("instance", ids, a.all()),
            None => vec![a.all()],
        },
        "RunInstances" | "CreateInstance" => {
            let mut out = vec![a.arn("instance/*")];
            out.extend(
                a.values("ImageId")
                    .first()
                    .map(|id| a.arn(&format!("image/{id}"))),
            );
            out
        }
        "DeleteImage" | "ExportImage" | "ModifyImageAttribute" => vec![a.one("image", "ImageId")],
        "DescribeImages" => {
            let ids: Vec<String> = a
                .values("ImageId")
                .iter()
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            a.each("image", ids, a.all())
        }
        "CreateImage" => {
            let mut out = vec![a.arn("image/*")];
            out.extend(
                a.values("InstanceId")
                    .first()
                    .map(|id| a.arn(&format!("instance/{id}"))),
            );
            out.extend(
                a.values("SnapshotId")
                    .first()
                    .map(|id| a.arn(&format!("snapshot/{id}"))),
            );
            out
        }
        "ImportImage" => vec![a.arn("image/*")],
        "DeleteSnapshot" => vec![a.one("snapshot", "SnapshotId")],
        "DescribeSnapshots" => match a.json_ids("SnapshotIds") {
            Some(ids) => a.each("snapshot", ids, a.all()),
            None => vec![a.all()],
        },
        _ => vec![a.all()],
    }
}

/// RAM resources live in the account, not a region: `acs:ram::<account>:<type>/<name>`.
fn ram(a: &Arns<'_>) -> Vec<String> {
    let arn = |relative: &str| format!("acs:ram::{}:{relative}", a.account);
    let mut out = Vec::new();
    for (kind, name) in [
        ("user", "UserName"),
        ("group", "GroupName"),
        ("role", "RoleName"),
        ("policy", "PolicyName"),
    ] {
        out.extend(a.values(name).iter().map(|v| arn(&format!("{kind}/{v}"))));
    }
    if out.is_empty() {
        out.push(arn("*"));
    }
    out
}

/// `sts:AssumeRole` is authorized against the role it assumes, taken from `RoleArn`.
fn assume_role(a: &Arns<'_>) -> String {
    let role = a.values("RoleArn").first().and_then(|arn| {
        let [acs, service, _region, account, relative] = crate::pattern::split_arn(arn)?;
        let name = relative.strip_prefix("role/")?;
        let ok = acs == "acs"
            && service.eq_ignore_ascii_case("ram")
            && !account.is_empty()
            && !name.is_empty();
        ok.then(|| format!("acs:ram::{account}:role/{name}"))
    });
    role.unwrap_or_else(|| format!("acs:ram::{}:role/*", a.account))
}
