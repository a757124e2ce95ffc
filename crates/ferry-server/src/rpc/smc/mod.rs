//! SMC 2019-06-01 actions (`../shared/ref/smc-api.md` §2), one file per resource: activation codes
//! (`tokens`), source servers (`sources`), replication jobs (`jobs`).

mod jobs;
mod sources;
mod tags;
mod tokens;
mod workgroups;

use ferry_api::ApiError;

use super::{ActionResult, Call};

pub async fn dispatch(c: &Call<'_>, action: &str) -> Option<ActionResult> {
    Some(match action {
        "CreateAccessToken" => tokens::create_access_token(c).await,
        "ListAccessTokens" => tokens::list_access_tokens(c).await,
        "DisableAccessToken" => tokens::disable_access_token(c).await,
        "DeleteAccessToken" => tokens::delete_access_token(c).await,
        "DescribeSourceServers" => sources::describe_source_servers(c).await,
        "ModifySourceServerAttribute" => sources::modify_source_server_attribute(c).await,
        "DeleteSourceServer" => sources::delete_source_server(c).await,
        "CreateReplicationJob" => jobs::create_replication_job(c).await,
        "StartReplicationJob" => jobs::start_replication_job(c).await,
        "StopReplicationJob" => jobs::stop_replication_job(c).await,
        "DescribeReplicationJobs" => jobs::describe_replication_jobs(c).await,
        "ModifyReplicationJobAttribute" => jobs::modify_replication_job_attribute(c).await,
        "DeleteReplicationJob" => jobs::delete_replication_job(c).await,
        "CutOverReplicationJob" => jobs::cut_over_replication_job(c).await,
        "CreateCrossZoneMigrationJob" => jobs::create_cross_zone_migration_job(c).await,
        "CreateWorkgroup" => workgroups::create_workgroup(c).await,
        "DescribeWorkgroups" => workgroups::describe_workgroups(c).await,
        "ModifyWorkgroupAttribute" => workgroups::modify_workgroup_attribute(c).await,
        "DeleteWorkgroup" => workgroups::delete_workgroup(c).await,
        "AssociateSourceServers" => workgroups::associate_source_servers(c).await,
        "DisassociateSourceServers" => workgroups::disassociate_source_servers(c).await,
        "TagResources" => tags::tag_resources(c).await,
        "UntagResources" => tags::untag_resources(c).await,
        "ListTagResources" => tags::list_tag_resources(c).await,
        _ => return None,
    })
}

/// SMC's name rule: 2–128 characters, starts with a letter, no `http(s)://` prefix.
pub(super) fn check_name(param: &str, value: &str) -> Result<(), ApiError> {
    let len = value.chars().count();
    let starts_ok = value.chars().next().is_some_and(|ch| ch.is_alphabetic());
    if !(2..=128).contains(&len)
        || !starts_ok
        || value.starts_with("http://")
        || value.starts_with("https://")
    {
        return Err(ApiError::invalid_parameter(
            param,
            "must be 2 to 128 characters long and start with a letter (not http:// or https://)",
        ));
    }
    Ok(())
}
