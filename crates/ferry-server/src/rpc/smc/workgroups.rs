//! Workgroups, i.e. migration waves (`../shared/ref/smc-api.md` §2.7): CreateWorkgroup,
//! DescribeWorkgroups, ModifyWorkgroupAttribute, DeleteWorkgroup, AssociateSourceServers and
//! DisassociateSourceServers.
//!
//! A workgroup stores only its name, description, tags and members. Its `Status` and `Warnings` are
//! derived on every read from each member's *current job* (the newest job of the source that is not being
//! deleted), by [`derive`]:
//!
//! * `Completed`: there are members, each has a job, and every job is `Finished`;
//! * `Cutover`: otherwise, some member's incremental job is being cut over (CutOverReplicationJob set its
//!   cutover mark, or it is cleaning up) or was cut over (an incremental job only finishes by cutover);
//! * `InProgress`: otherwise, some member's job has started (it is or was Running: Running, Waiting,
//!   Stopped, InError, Finished, or has a start time);
//! * `NotStarted`: otherwise (no members, no jobs, or only jobs that never ran).
//!
//! Warnings: `InError` lists members whose job is InError; `UnRelated` members with no job; `NotPassed`
//! members whose job's newest image failed its boot validation (`ValidationStatus` Failed, table
//! `image_pipeline`).
//!
//! Tags given to CreateWorkgroup are stored under the internal resource type `workgroup` (§2.8 lets
//! TagResources tag only source servers and jobs) and returned by DescribeWorkgroups, whose `Tag.N` filter
//! matches them.

use std::collections::{BTreeSet, HashMap};

use ferry_api::{ApiError, wrap_list};
use ferry_db::{AssociateOutcome, JobFilter, JobRecord, WORKGROUP_TAG_TYPE, WorkgroupRecord, now};
use ferry_types::ids::WorkgroupId;
use serde_json::{Value, json};

use super::tags::{parse_tag_filter, parse_tags, tags_json};
use crate::app::OrInternal;
use crate::rpc::{ActionResult, Call, paging, time_str};

/// Most members of one workgroup, and most `SourceId.N` (and `WorkgroupId.N`) per call.
const MAX_MEMBERS: usize = 50;
const STATUSES: [&str; 4] = ["NotStarted", "InProgress", "Cutover", "Completed"];

fn workgroup_not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidWorkgroupId.NotFound",
        404,
        format!("workgroup {id} does not exist: list workgroups with `ferry workgroup list`"),
    )
}

/// SMC's workgroup name rule: 2–64 characters, starting with a letter; letters, digits, `:`, `_`, `-`
/// and `.`.
fn check_workgroup_name(value: &str) -> Result<(), ApiError> {
    let len = value.chars().count();
    let starts_ok = value.chars().next().is_some_and(char::is_alphabetic);
    let chars_ok = value
        .chars()
        .all(|ch| ch.is_alphanumeric() || matches!(ch, ':' | '_' | '-' | '.'));
    if !(2..=64).contains(&len) || !starts_ok || !chars_ok {
        return Err(ApiError::invalid_parameter(
            "Name",
            "must be 2 to 64 characters long, start with a letter and hold only letters, digits, \
             colons, underscores, hyphens and periods",
        ));
    }
    Ok(())
}

fn check_description(value: &str) -> Result<(), ApiError> {
    if value.chars().count() > 256 || value.starts_with("http://") || value.starts_with("https://")
    {
        return Err(ApiError::invalid_parameter(
            "Description",
            "must be at most 256 characters long and not start with http:// or https://",
        ));
    }
    Ok(())
}

fn check_client_token(value: &str) -> Result<(), ApiError> {
    if value.len() > 64 || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid_parameter(
            "ClientToken",
            "must be at most 64 printable ASCII characters",
        ));
    }
    Ok(())
}

/// `Name.N` as a list of at most 50 distinct values (duplicates are dropped), at least one if `required`.
fn id_list(c: &Call<'_>, name: &str, required: bool) -> Result<Vec<String>, ApiError> {
    let raw = c.params.get_list(name);
    if raw.is_empty() && required {
        return Err(ApiError::missing_parameter(&format!("{name}.1")));
    }
    let mut seen = BTreeSet::new();
    let ids: Vec<String> = raw.into_iter().filter(|s| seen.insert(s.clone())).collect();
    if ids.len() > MAX_MEMBERS {
        return Err(ApiError::invalid_parameter(
            &format!("{name}.N"),
            format!(
                "gives {} IDs; give at most {MAX_MEMBERS} per call",
                ids.len()
            ),
        ));
    }
    Ok(ids)
}

async fn get_workgroup(c: &Call<'_>, id: &str) -> Result<WorkgroupRecord, ApiError> {
    c.st.db
        .workgroup_get(id)
        .await
        .or_internal()?
        .ok_or_else(|| workgroup_not_found(id))
}

pub(super) async fn create_workgroup(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let name = p.required("Name")?;
    check_workgroup_name(name)?;
    let description = p.get("Description").unwrap_or("");
    check_description(description)?;
    let tags = parse_tags(p)?;
    let token = p.get("ClientToken").filter(|t| !t.is_empty());
    if let Some(t) = token {
        check_client_token(t)?;
    }
    let rec = WorkgroupRecord {
        id: WorkgroupId::generate().to_string(),
        name: name.to_owned(),
        description: description.to_owned(),
        client_token: token.map(str::to_owned),
        created_at: now(),
    };
    let stored = c.st.db.workgroup_create(&rec, &tags).await.or_internal()?;
    Ok(json!({ "WorkgroupId": stored.id }))
}

pub(super) async fn modify_workgroup_attribute(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let id = p.required("WorkgroupId")?;
    let name = p.get("Name").filter(|v| !v.is_empty());
    if let Some(n) = name {
        check_workgroup_name(n)?;
    }
    let description = p.get("Description");
    if let Some(d) = description {
        check_description(d)?;
    }
    if !c
        .st
        .db
        .workgroup_update(id, name, description)
        .await
        .or_internal()?
    {
        return Err(workgroup_not_found(id));
    }
    Ok(json!({}))
}

pub(super) async fn delete_workgroup(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("WorkgroupId")?;
    if !c.st.db.workgroup_delete(id).await.or_internal()? {
        return Err(workgroup_not_found(id));
    }
    Ok(json!({}))
}

pub(super) async fn associate_source_servers(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("WorkgroupId")?;
    let sources = id_list(c, "SourceId", true)?;
    match c
        .st
        .db
        .workgroup_associate(id, &sources, MAX_MEMBERS as i64, now())
        .await
        .or_internal()?
    {
        AssociateOutcome::Done => Ok(json!({})),
        AssociateOutcome::NoSuchWorkgroup => Err(workgroup_not_found(id)),
        AssociateOutcome::NoSuchSource(s) => Err(crate::app::jobs::source_not_found(&s)),
        AssociateOutcome::InOtherWorkgroup {
            source_id,
            workgroup_id,
        } => Err(ApiError::new(
            "SourceServer.AssociatedWithOtherWorkgroup",
            400,
            format!(
                "source server {source_id} already belongs to workgroup {workgroup_id}: a source belongs to one \
                 workgroup, so remove it there first (DisassociateSourceServers)"
            ),
        )),
        AssociateOutcome::TooMany { count } => Err(ApiError::new(
            "QuotaExceeded.WorkgroupSourceServers",
            400,
            format!(
                "workgroup {id} would have {count} source servers, more than {MAX_MEMBERS}: split the wave \
                 into several workgroups"
            ),
        )),
    }
}

pub(super) async fn disassociate_source_servers(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("WorkgroupId")?;
    let sources = id_list(c, "SourceId", true)?;
    get_workgroup(c, id).await?;
    c.st.db
        .workgroup_disassociate(id, &sources)
        .await
        .or_internal()?;
    Ok(json!({}))
}

/// A workgroup's derived state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Derived {
    pub status: &'static str,
    /// (`WarningType`, source IDs), only types with sources, in the enum's order.
    pub warnings: Vec<(&'static str, Vec<String>)>,
}

/// What [`derive`] needs to know of a member's current job.
#[derive(Debug, Clone)]
pub(super) struct MemberJob {
    pub status: String,
    pub business_status: Option<String>,
    pub incremental: bool,
    pub started: bool,
    /// CutOverReplicationJob marked the job's final run.
    pub cutover_mark: bool,
    /// The job's newest image failed its boot validation.
    pub validation_failed: bool,
}

impl MemberJob {
    fn from_record(j: &JobRecord, cutover_mark: bool) -> Self {
        MemberJob {
            status: j.status.clone(),
            business_status: j.business_status.clone(),
            incremental: j.run_once == 0,
            started: j.start_time.is_some(),
            cutover_mark,
            validation_failed: false,
        }
    }
}

/// Status and warnings of a workgroup from its members (in order) and their current jobs.
pub(super) fn derive(members: &[String], jobs: &HashMap<String, MemberJob>) -> Derived {
    let current: Vec<Option<&MemberJob>> = members.iter().map(|s| jobs.get(s)).collect();
    let all_finished = !members.is_empty()
        && current
            .iter()
            .all(|j| j.is_some_and(|j| j.status == "Finished"));
    let cutting_over = current.iter().flatten().any(|j| {
        j.cutover_mark
            || (j.incremental
                && (j.status == "Finished"
                    || (j.status == "Running" && j.business_status.as_deref() == Some("Cleaning"))))
    });
    let started = current.iter().flatten().any(|j| {
        j.started
            || matches!(
                j.status.as_str(),
                "Running" | "Waiting" | "Stopped" | "InError" | "Finished"
            )
    });
    let status = if all_finished {
        "Completed"
    } else if cutting_over {
        "Cutover"
    } else if started {
        "InProgress"
    } else {
        "NotStarted"
    };
    let pick = |want: fn(Option<&MemberJob>) -> bool| -> Vec<String> {
        members
            .iter()
            .zip(&current)
            .filter(|(_, j)| want(j.as_deref()))
            .map(|(s, _)| s.clone())
            .collect()
    };
    let warnings = [
        (
            "InError",
            pick(|j| j.is_some_and(|j| j.status == "InError")),
        ),
        ("UnRelated", pick(|j| j.is_none())),
        (
            "NotPassed",
            pick(|j| j.is_some_and(|j| j.validation_failed)),
        ),
    ]
    .into_iter()
    .filter(|(_, ids)| !ids.is_empty())
    .collect();
    Derived { status, warnings }
}

/// The current job of each source in `sources` (the newest that is not being deleted), in one listing.
async fn current_jobs(
    c: &Call<'_>,
    sources: &[String],
) -> Result<HashMap<String, MemberJob>, ApiError> {
    if sources.is_empty() {
        return Ok(HashMap::new());
    }
    let filter = JobFilter {
        source_ids: sources.to_vec(),
        ..Default::default()
    };
    let (jobs, _) = c.st.db.job_list(&filter, 0, i64::MAX).await.or_internal()?;
    // Oldest first, so the last one seen per source is its newest.
    let mut newest: HashMap<String, &JobRecord> = HashMap::new();
    for j in jobs.iter().filter(|j| j.status != "Deleting") {
        newest.insert(j.source_id.clone(), j);
    }
    let mut out = HashMap::with_capacity(newest.len());
    for (source, j) in newest {
        // Only a running incremental job can carry a cutover mark that matters for the status.
        let mark = if j.run_once == 0 && j.status == "Running" {
            c.st.db.job_settings_get(&j.id).await.or_internal()?.cutover != 0
        } else {
            false
        };
        let mut member = MemberJob::from_record(j, mark);
        if let Some(image) = c.st.db.image_list_by_job(&j.id).await.or_internal()?.last() {
            member.validation_failed =
                c.st.db
                    .image_pipeline_get(&image.id)
                    .await
                    .or_internal()?
                    .is_some_and(|p| p.validation_status == "Failed");
        }
        out.insert(source, member);
    }
    Ok(out)
}

pub(super) async fn describe_workgroups(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let (number, size, offset) = paging(p, 50)?;
    let ids = id_list(c, "WorkgroupId", false)?;
    let status = p.get("Status").filter(|s| !s.is_empty());
    if let Some(s) = status
        && !STATUSES.contains(&s)
    {
        return Err(ApiError::invalid_parameter(
            "Status",
            format!(
                "{s:?} is not a workgroup status; use one of {}",
                STATUSES.join(", ")
            ),
        ));
    }
    let tag_filter = parse_tag_filter(p)?;
    let name = p.get("Name").filter(|n| !n.is_empty());
    let mut groups = c.st.db.workgroup_list(&ids, name).await.or_internal()?;
    if !tag_filter.is_empty() {
        let tagged =
            c.st.db
                .tag_match(WORKGROUP_TAG_TYPE, &tag_filter)
                .await
                .or_internal()?;
        groups.retain(|g| tagged.contains(&g.id));
    }
    let group_ids: Vec<String> = groups.iter().map(|g| g.id.clone()).collect();
    let mut members: HashMap<String, Vec<String>> = HashMap::new();
    for m in c.st.db.workgroup_members(&group_ids).await.or_internal()? {
        members.entry(m.workgroup_id).or_default().push(m.source_id);
    }
    let all_sources: Vec<String> = members.values().flatten().cloned().collect();
    let jobs = current_jobs(c, &all_sources).await?;
    // The Status filter needs every group's derived status, so paging happens after deriving.
    let none = Vec::new();
    let derived: Vec<(WorkgroupRecord, Derived)> = groups
        .into_iter()
        .map(|g| {
            let d = derive(members.get(&g.id).unwrap_or(&none), &jobs);
            (g, d)
        })
        .filter(|(_, d)| status.is_none_or(|s| d.status == s))
        .collect();
    let total = derived.len();
    let page: Vec<(WorkgroupRecord, Derived)> = derived
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        .take(usize::try_from(size).unwrap_or(0))
        .collect();
    let page_ids: Vec<String> = page.iter().map(|(g, _)| g.id.clone()).collect();
    let tags =
        c.st.db
            .tags_of(WORKGROUP_TAG_TYPE, &page_ids)
            .await
            .or_internal()?;
    let items: Vec<Value> = page
        .iter()
        .map(|(g, d)| {
            let warnings: Vec<Value> = d
                .warnings
                .iter()
                .map(|(kind, ids)| {
                    json!({
                        "WarningType": kind,
                        "SourceIds": wrap_list("SourceId", ids.iter().map(|s| json!(s)).collect()),
                    })
                })
                .collect();
            let member_ids: Vec<Value> = members
                .get(&g.id)
                .unwrap_or(&none)
                .iter()
                .map(|s| json!(s))
                .collect();
            json!({
                "WorkgroupId": g.id,
                "Name": g.name,
                "Description": g.description,
                "Status": d.status,
                "Tags": tags_json(tags.get(&g.id)),
                "Warnings": wrap_list("Warning", warnings),
                // Ferry's additions: when it was created and who is in it.
                "CreationTime": time_str(g.created_at),
                "SourceIds": wrap_list("SourceId", member_ids),
            })
        })
        .collect();
    Ok(json!({
        "PageNumber": number,
        "PageSize": size,
        "TotalCount": total,
        "Workgroups": wrap_list("Workgroup", items),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(status: &str, incremental: bool, started: bool) -> MemberJob {
        MemberJob {
            status: status.into(),
            business_status: None,
            incremental,
            started,
            cutover_mark: false,
            validation_failed: false,
        }
    }

    fn members(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("s-{i}")).collect()
    }

    fn with(jobs: &[(usize, MemberJob)]) -> HashMap<String, MemberJob> {
        jobs.iter()
            .map(|(i, j)| (format!("s-{i}"), j.clone()))
            .collect()
    }

    #[test]
    fn status_follows_the_members_jobs() {
        let m = members(2);
        assert_eq!(derive(&[], &HashMap::new()).status, "NotStarted");
        let ready = with(&[
            (0, job("Ready", false, false)),
            (1, job("Ready", false, false)),
        ]);
        assert_eq!(derive(&m, &ready).status, "NotStarted");
        let running = with(&[
            (0, job("Running", false, true)),
            (1, job("Ready", false, false)),
        ]);
        assert_eq!(derive(&m, &running).status, "InProgress");
        let one_done = with(&[
            (0, job("Finished", false, true)),
            (1, job("Ready", false, false)),
        ]);
        assert_eq!(derive(&m, &one_done).status, "InProgress");
        let done = with(&[
            (0, job("Finished", false, true)),
            (1, job("Finished", true, true)),
        ]);
        assert_eq!(derive(&m, &done).status, "Completed");
        let cut = with(&[
            (0, job("Finished", true, true)),
            (1, job("Waiting", true, true)),
        ]);
        assert_eq!(derive(&m, &cut).status, "Cutover");
        let mut marked = job("Running", true, true);
        marked.cutover_mark = true;
        assert_eq!(
            derive(&m, &with(&[(0, marked), (1, job("Waiting", true, true))])).status,
            "Cutover"
        );
        // A member without a job keeps the group from being Completed.
        let partial = with(&[(0, job("Finished", false, true))]);
        assert_eq!(derive(&m, &partial).status, "InProgress");
    }

    #[test]
    fn warnings_name_the_sources() {
        let m = members(3);
        let jobs = with(&[
            (0, job("InError", false, true)),
            (1, job("Running", false, true)),
        ]);
        let d = derive(&m, &jobs);
        assert_eq!(
            d.warnings,
            vec![
                ("InError", vec!["s-0".to_owned()]),
                ("UnRelated", vec!["s-2".to_owned()])
            ]
        );
        let quiet = derive(&m[1..2], &jobs);
        assert!(quiet.warnings.is_empty());
    }

    #[test]
    fn a_failed_validation_is_not_passed() {
        let m = members(2);
        let mut failed = job("Waiting", true, true);
        failed.validation_failed = true;
        let jobs = with(&[(0, failed), (1, job("Waiting", true, true))]);
        let d = derive(&m, &jobs);
        assert_eq!(d.warnings, vec![("NotPassed", vec!["s-0".to_owned()])]);
    }

    #[test]
    fn names_follow_the_workgroup_rule() {
        for ok in ["wave-1", "Wave.2:a_b", "波次一"] {
            assert!(check_workgroup_name(ok).is_ok(), "{ok}");
        }
        for bad in ["w", "1wave", "wave 1", "http://x", &"w".repeat(65)] {
            assert!(check_workgroup_name(bad).is_err(), "{bad}");
        }
    }
}
