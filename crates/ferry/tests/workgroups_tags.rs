//! Workgroups and tags through the public API and the CLI (`../shared/ref/smc-api.md` §2.7, §2.8): an
//! in-process `ferry_server` on a loopback port with a fresh data directory per test, called with signed
//! requests like any SDK. Source servers are registered by playing the agent's part over the real agent
//! protocol (activate, heartbeat, finish); no disk is copied.

mod support;

use ferry_types::inventory::{Disk, DiskSource, Inventory};
use ferry_types::protocol::RunFinish;
use serde_json::Value;
use support::{Agent, Harness, items, printed_id};

/// Registers `n` source servers through the agent protocol; returns their agents.
async fn sources(h: &Harness, n: usize) -> Vec<Agent> {
    let created = h
        .smc("CreateAccessToken", &[("Count", &n.to_string())])
        .await;
    let code = created["AccessTokenCode"]
        .as_str()
        .expect("code")
        .to_owned();
    let http = h.https();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(Agent::activate(h, http.clone(), &code, inventory(i), vec![]).await);
    }
    out
}

/// web-<i> with one unpartitioned 2 GiB disk.
fn inventory(i: usize) -> Inventory {
    Inventory {
        disks: vec![Disk {
            index: 0,
            path: "/dev/vda".into(),
            source: DiskSource::BlockDevice,
            size_bytes: 2 << 30,
            model: None,
            partition_table: None,
            table_uuid: None,
            partitions: vec![],
            filesystem: None,
        }],
        ..support::inventory(&format!("web-{i:02}"))
    }
}

fn strs(v: &Value, outer: &str, inner: &str) -> Vec<String> {
    items(v, outer, inner)
        .iter()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

/// The one workgroup `id` as DescribeWorkgroups shows it.
async fn group(h: &Harness, id: &str) -> Value {
    let v = h.smc("DescribeWorkgroups", &[("WorkgroupId.1", id)]).await;
    let all = items(&v, "Workgroups", "Workgroup");
    assert_eq!(all.len(), 1, "{v}");
    all[0].clone()
}

/// (WarningType, SourceIds) of a workgroup.
fn warnings(w: &Value) -> Vec<(String, Vec<String>)> {
    items(w, "Warnings", "Warning")
        .iter()
        .map(|x| {
            (
                x["WarningType"].as_str().unwrap_or_default().to_owned(),
                strs(x, "SourceIds", "SourceId"),
            )
        })
        .collect()
}

async fn create_job(h: &Harness, source: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![("SourceId", source), ("RegionId", "local")];
    params.extend_from_slice(extra);
    let v = h.smc("CreateReplicationJob", &params).await;
    v["JobId"].as_str().expect("JobId").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workgroups_are_created_listed_modified_and_deleted() {
    let h = Harness::start().await;
    let created = h
        .smc(
            "CreateWorkgroup",
            &[
                ("Name", "wave-1"),
                ("Description", "first wave"),
                ("Tag.1.Key", "env"),
                ("Tag.1.Value", "prod"),
                ("ClientToken", "tok-1"),
            ],
        )
        .await;
    let w1 = created["WorkgroupId"]
        .as_str()
        .expect("WorkgroupId")
        .to_owned();
    assert!(w1.starts_with("w-"), "{w1}");
    // The same ClientToken returns the same workgroup and creates no other.
    let again = h
        .smc(
            "CreateWorkgroup",
            &[("Name", "wave-x"), ("ClientToken", "tok-1")],
        )
        .await;
    assert_eq!(again["WorkgroupId"], w1.as_str());
    let w2 = h.smc("CreateWorkgroup", &[("Name", "wave.2")]).await["WorkgroupId"]
        .as_str()
        .expect("id")
        .to_owned();
    let w3 = h.smc("CreateWorkgroup", &[("Name", "wave:3")]).await["WorkgroupId"]
        .as_str()
        .expect("id")
        .to_owned();

    let g = group(&h, &w1).await;
    assert_eq!(g["Name"], "wave-1");
    assert_eq!(g["Description"], "first wave");
    assert_eq!(g["Status"], "NotStarted");
    assert_eq!(g["Tags"]["Tag"][0]["Key"], "env");
    assert_eq!(g["Tags"]["Tag"][0]["Value"], "prod");
    assert_eq!(items(&g, "Warnings", "Warning").len(), 0, "{g}");

    // Validation.
    for (params, code) in [
        (vec![("Description", "x")], "MissingParameter"),
        (vec![("Name", "w")], "InvalidParameter"),
        (vec![("Name", "1wave")], "InvalidParameter"),
        (vec![("Name", "wave 1")], "InvalidParameter"),
        (
            vec![("Name", "wave-4"), ("Description", "http://x")],
            "InvalidParameter",
        ),
        (
            vec![("Name", "wave-4"), ("Tag.1.Key", "acs:x")],
            "InvalidTagKey.Malformed",
        ),
        (
            vec![("Name", "wave-4"), ("Tag.1.Value", "v")],
            "InvalidTagKey.Malformed",
        ),
    ] {
        assert_eq!(
            h.smc_code("CreateWorkgroup", &params).await,
            code,
            "{params:?}"
        );
    }
    let long_name = format!("w{}", "a".repeat(64));
    assert_eq!(
        h.smc_code("CreateWorkgroup", &[("Name", &long_name)]).await,
        "InvalidParameter"
    );
    let long_desc = "d".repeat(257);
    assert_eq!(
        h.smc_code(
            "CreateWorkgroup",
            &[("Name", "wave-4"), ("Description", &long_desc)]
        )
        .await,
        "InvalidParameter"
    );
    let long_token = "t".repeat(65);
    assert_eq!(
        h.smc_code(
            "CreateWorkgroup",
            &[("Name", "wave-4"), ("ClientToken", &long_token)]
        )
        .await,
        "InvalidParameter"
    );
    let keys: Vec<(String, String)> = (1..=21)
        .map(|i| (format!("Tag.{i}.Key"), format!("k{i}")))
        .collect();
    let mut params: Vec<(&str, &str)> =
        keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    params.push(("Name", "wave-4"));
    assert_eq!(
        h.smc_code("CreateWorkgroup", &params).await,
        "NumberExceed.Tags"
    );
    let listed = h.smc("DescribeWorkgroups", &[]).await;
    assert_eq!(
        listed["TotalCount"], 3,
        "a rejected create created something: {listed}"
    );

    // Filters and paging.
    let page = h
        .smc(
            "DescribeWorkgroups",
            &[("PageSize", "2"), ("PageNumber", "2")],
        )
        .await;
    assert_eq!(page["TotalCount"], 3);
    assert_eq!(page["PageNumber"], 2);
    assert_eq!(page["PageSize"], 2);
    let ids: Vec<&str> = items(&page, "Workgroups", "Workgroup")
        .iter()
        .filter_map(|w| w["WorkgroupId"].as_str())
        .collect();
    // Workgroups list oldest first; within one second of creation, by ID.
    let all: Vec<&str> = items(&listed, "Workgroups", "Workgroup")
        .iter()
        .filter_map(|w| w["WorkgroupId"].as_str())
        .collect();
    assert_eq!(all.len(), 3);
    assert!(all.contains(&w3.as_str()));
    assert_eq!(ids, [all[2]]);
    let by_ids = h
        .smc(
            "DescribeWorkgroups",
            &[("WorkgroupId.1", &w1), ("WorkgroupId.2", &w2)],
        )
        .await;
    assert_eq!(by_ids["TotalCount"], 2);
    let by_name = h.smc("DescribeWorkgroups", &[("Name", "wave.2")]).await;
    assert_eq!(
        by_name["Workgroups"]["Workgroup"][0]["WorkgroupId"],
        w2.as_str()
    );
    let by_tag = h
        .smc(
            "DescribeWorkgroups",
            &[("Tag.1.Key", "env"), ("Tag.1.Value", "prod")],
        )
        .await;
    assert_eq!(by_tag["TotalCount"], 1);
    let by_other_tag = h
        .smc(
            "DescribeWorkgroups",
            &[("Tag.1.Key", "env"), ("Tag.1.Value", "dev")],
        )
        .await;
    assert_eq!(by_other_tag["TotalCount"], 0);
    let by_status = h
        .smc("DescribeWorkgroups", &[("Status", "NotStarted")])
        .await;
    assert_eq!(by_status["TotalCount"], 3);
    let none = h
        .smc("DescribeWorkgroups", &[("Status", "Completed")])
        .await;
    assert_eq!(none["TotalCount"], 0);
    assert_eq!(
        h.smc_code("DescribeWorkgroups", &[("Status", "Done")])
            .await,
        "InvalidParameter"
    );
    assert_eq!(
        h.smc_code("DescribeWorkgroups", &[("Tag.1.Value", "prod")])
            .await,
        "InvalidParameter.TagValue"
    );
    assert_eq!(
        h.smc_code("DescribeWorkgroups", &[("PageSize", "51")])
            .await,
        "InvalidParameter"
    );
    let many_ids: Vec<(String, String)> = (1..=51)
        .map(|i| (format!("WorkgroupId.{i}"), format!("w-fe{i:018}")))
        .collect();
    let params: Vec<(&str, &str)> = many_ids
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        h.smc_code("DescribeWorkgroups", &params).await,
        "InvalidParameter"
    );

    // Modify and delete.
    h.smc(
        "ModifyWorkgroupAttribute",
        &[
            ("WorkgroupId", &w2),
            ("Name", "wave-two"),
            ("Description", "second"),
        ],
    )
    .await;
    let g = group(&h, &w2).await;
    assert_eq!(
        (g["Name"].as_str(), g["Description"].as_str()),
        (Some("wave-two"), Some("second"))
    );
    assert_eq!(
        h.smc_code(
            "ModifyWorkgroupAttribute",
            &[("WorkgroupId", &w2), ("Name", "x")]
        )
        .await,
        "InvalidParameter"
    );
    assert_eq!(
        h.smc_err(
            "ModifyWorkgroupAttribute",
            &[("WorkgroupId", "w-fenosuch"), ("Name", "wave")]
        )
        .await,
        (404, "InvalidWorkgroupId.NotFound".to_owned())
    );
    assert_eq!(
        h.smc_code("ModifyWorkgroupAttribute", &[("Name", "wave")])
            .await,
        "MissingParameter"
    );
    h.smc("DeleteWorkgroup", &[("WorkgroupId", &w1)]).await;
    assert_eq!(
        h.smc_err("DeleteWorkgroup", &[("WorkgroupId", &w1)]).await,
        (404, "InvalidWorkgroupId.NotFound".to_owned())
    );
    let left = h.smc("DescribeWorkgroups", &[]).await;
    assert_eq!(left["TotalCount"], 2);
    // Its tags went with it: a new workgroup reusing the key is the only match.
    let by_tag = h.smc("DescribeWorkgroups", &[("Tag.1.Key", "env")]).await;
    assert_eq!(by_tag["TotalCount"], 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_warnings_follow_the_members_jobs() {
    let h = Harness::start().await;
    let agents = sources(&h, 2).await;
    let (s1, s2) = (agents[0].source_id.clone(), agents[1].source_id.clone());
    let w = h.smc("CreateWorkgroup", &[("Name", "wave-1")]).await["WorkgroupId"]
        .as_str()
        .expect("id")
        .to_owned();
    let other = h.smc("CreateWorkgroup", &[("Name", "wave-2")]).await["WorkgroupId"]
        .as_str()
        .expect("id")
        .to_owned();

    assert_eq!(
        h.smc_code("AssociateSourceServers", &[("WorkgroupId", &w)])
            .await,
        "MissingParameter"
    );
    assert_eq!(
        h.smc_err(
            "AssociateSourceServers",
            &[("WorkgroupId", &w), ("SourceId.1", "s-fenosuch")]
        )
        .await,
        (404, "InvalidSourceId.NotFound".to_owned())
    );
    assert_eq!(
        h.smc_err(
            "AssociateSourceServers",
            &[("WorkgroupId", "w-fenosuch"), ("SourceId.1", &s1)]
        )
        .await,
        (404, "InvalidWorkgroupId.NotFound".to_owned())
    );
    h.smc(
        "AssociateSourceServers",
        &[
            ("WorkgroupId", &w),
            ("SourceId.1", &s1),
            ("SourceId.2", &s2),
        ],
    )
    .await;
    // A retry is harmless; another workgroup cannot take them.
    h.smc(
        "AssociateSourceServers",
        &[("WorkgroupId", &w), ("SourceId.1", &s1)],
    )
    .await;
    assert_eq!(
        h.smc_code(
            "AssociateSourceServers",
            &[("WorkgroupId", &other), ("SourceId.1", &s2)]
        )
        .await,
        "SourceServer.AssociatedWithOtherWorkgroup"
    );

    // Members appear with their WorkgroupId, and the WorkgroupId filter finds them.
    let listed = h.smc("DescribeSourceServers", &[("WorkgroupId", &w)]).await;
    assert_eq!(listed["TotalCount"], 2, "{listed}");
    for s in items(&listed, "SourceServers", "SourceServer") {
        assert_eq!(s["WorkgroupId"], w.as_str(), "{s}");
    }
    let listed = h
        .smc("DescribeSourceServers", &[("WorkgroupId", &other)])
        .await;
    assert_eq!(listed["TotalCount"], 0);

    let g = group(&h, &w).await;
    assert_eq!(g["Status"], "NotStarted");
    // Members added by one call list by source ID.
    let mut both = vec![s1.clone(), s2.clone()];
    both.sort();
    assert_eq!(strs(&g, "SourceIds", "SourceId"), both);
    assert_eq!(warnings(&g), [("UnRelated".to_owned(), both.clone())]);

    let j1 = create_job(&h, &s1, &[]).await;
    let g = group(&h, &w).await;
    assert_eq!(g["Status"], "NotStarted", "a Ready job has not started");
    assert_eq!(warnings(&g), [("UnRelated".to_owned(), vec![s2.clone()])]);
    let job = h.smc("DescribeReplicationJobs", &[("JobId.1", &j1)]).await;
    assert_eq!(
        job["ReplicationJobs"]["ReplicationJob"][0]["WorkgroupId"],
        w.as_str()
    );

    h.smc("StartReplicationJob", &[("JobId", &j1)]).await;
    let g = group(&h, &w).await;
    assert_eq!(g["Status"], "InProgress");
    let in_progress = h
        .smc("DescribeWorkgroups", &[("Status", "InProgress")])
        .await;
    assert_eq!(in_progress["TotalCount"], 1);
    assert_eq!(
        in_progress["Workgroups"]["Workgroup"][0]["WorkgroupId"],
        w.as_str()
    );

    // The agent fails the run: the job is InError and the workgroup warns about it.
    let run = agents[0]
        .heartbeat()
        .await
        .task
        .expect("a run for the agent")
        .run_id;
    agents[0]
        .post(
            &format!("/runs/{run}/finish"),
            &RunFinish::Failed {
                code: "DiskRead.Failed".into(),
                message: "cannot read /dev/vda: I/O error".into(),
            },
        )
        .await;
    let g = group(&h, &w).await;
    assert_eq!(g["Status"], "InProgress");
    assert_eq!(
        warnings(&g),
        [
            ("InError".to_owned(), vec![s1.clone()]),
            ("UnRelated".to_owned(), vec![s2.clone()])
        ]
    );

    // Started again and stopped: still in progress, no longer in error.
    h.smc("StartReplicationJob", &[("JobId", &j1)]).await;
    h.smc("StopReplicationJob", &[("JobId", &j1)]).await;
    let j2 = create_job(&h, &s2, &[]).await;
    let g = group(&h, &w).await;
    assert_eq!(g["Status"], "InProgress");
    assert!(warnings(&g).is_empty(), "{g}");

    // Both jobs finish. Building an image needs real disk data (the replication tests cover that), so the
    // image builder's last step is taken directly here.
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    h.server
        .state
        .db
        .job_complete(&j1, "m-fe000000000000000001", "Finished", at)
        .await
        .expect("finish j1");
    assert_eq!(
        group(&h, &w).await["Status"],
        "InProgress",
        "one of two finished"
    );
    h.server
        .state
        .db
        .job_complete(&j2, "m-fe000000000000000002", "Finished", at)
        .await
        .expect("finish j2");
    let g = group(&h, &w).await;
    assert_eq!(g["Status"], "Completed");
    let done = h
        .smc("DescribeWorkgroups", &[("Status", "Completed")])
        .await;
    assert_eq!(done["TotalCount"], 1);

    // Members leave; a source removed from one workgroup can join another.
    h.smc(
        "DisassociateSourceServers",
        &[("WorkgroupId", &w), ("SourceId.1", &s2)],
    )
    .await;
    assert_eq!(
        strs(&group(&h, &w).await, "SourceIds", "SourceId"),
        [s1.as_str()]
    );
    h.smc(
        "AssociateSourceServers",
        &[("WorkgroupId", &other), ("SourceId.1", &s2)],
    )
    .await;
    assert_eq!(
        h.smc_err(
            "DisassociateSourceServers",
            &[("WorkgroupId", "w-fenosuch"), ("SourceId.1", &s1)]
        )
        .await,
        (404, "InvalidWorkgroupId.NotFound".to_owned())
    );
    h.smc("DeleteWorkgroup", &[("WorkgroupId", &w)]).await;
    let s = h.smc("DescribeSourceServers", &[("SourceId.1", &s1)]).await;
    assert!(
        s["SourceServers"]["SourceServer"][0]
            .get("WorkgroupId")
            .is_none(),
        "{s}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workgroup_holds_at_most_50_sources() {
    let h = Harness::start().await;
    let agents = sources(&h, 51).await;
    let w = h.smc("CreateWorkgroup", &[("Name", "big-wave")]).await["WorkgroupId"]
        .as_str()
        .expect("id")
        .to_owned();
    let keys: Vec<String> = (1..=51).map(|i| format!("SourceId.{i}")).collect();
    let mut all: Vec<(&str, &str)> = vec![("WorkgroupId", &w)];
    all.extend(
        keys.iter()
            .zip(&agents)
            .map(|(k, a)| (k.as_str(), a.source_id.as_str())),
    );
    assert_eq!(
        h.smc_code("AssociateSourceServers", &all).await,
        "InvalidParameter"
    );
    // The workgroup ID and the first 50 sources.
    h.smc("AssociateSourceServers", &all[..51]).await;
    let last = [
        ("WorkgroupId", w.as_str()),
        ("SourceId.1", agents[50].source_id.as_str()),
    ];
    assert_eq!(
        h.smc_code("AssociateSourceServers", &last).await,
        "QuotaExceeded.WorkgroupSourceServers"
    );
    assert_eq!(
        strs(&group(&h, &w).await, "SourceIds", "SourceId").len(),
        50
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_source_drops_its_tags_and_membership() {
    let h = Harness::start().await;
    let agents = sources(&h, 2).await;
    let (gone, kept) = (agents[0].source_id.as_str(), agents[1].source_id.as_str());
    let w = h.smc("CreateWorkgroup", &[("Name", "wave-del")]).await["WorkgroupId"]
        .as_str()
        .expect("id")
        .to_owned();
    h.smc(
        "AssociateSourceServers",
        &[
            ("WorkgroupId", &w),
            ("SourceId.1", gone),
            ("SourceId.2", kept),
        ],
    )
    .await;
    for id in [gone, kept] {
        h.smc(
            "TagResources",
            &[
                ("ResourceType", "sourceserver"),
                ("ResourceId.1", id),
                ("Tag.1.Key", "env"),
                ("Tag.1.Value", "prod"),
            ],
        )
        .await;
    }
    h.smc("DeleteSourceServer", &[("SourceId", gone)]).await;

    assert_eq!(strs(&group(&h, &w).await, "SourceIds", "SourceId"), [kept]);
    let tagged = h
        .smc(
            "ListTagResources",
            &[
                ("ResourceType", "sourceserver"),
                ("Tag.1.Key", "env"),
                ("Tag.1.Value", "prod"),
            ],
        )
        .await;
    let ids: Vec<&str> = items(&tagged, "TagResources", "TagResource")
        .iter()
        .filter_map(|t| t["ResourceId"].as_str())
        .collect();
    assert_eq!(ids, [kept], "{tagged}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_are_added_listed_paged_filtered_and_removed() {
    let h = Harness::start().await;
    let agents = sources(&h, 3).await;
    let ids: Vec<String> = agents.iter().map(|a| a.source_id.clone()).collect();

    // Errors common to the three actions.
    for action in ["TagResources", "UntagResources", "ListTagResources"] {
        let with_tag = [
            ("ResourceId.1", ids[0].as_str()),
            ("Tag.1.Key", "k"),
            ("TagKey.1", "k"),
        ];
        assert_eq!(
            h.smc_code(action, &with_tag).await,
            "MissingParameter.ResourceType",
            "{action}"
        );
        let mut bad_type = with_tag.to_vec();
        bad_type.push(("ResourceType", "instance"));
        assert_eq!(
            h.smc_code(action, &bad_type).await,
            "InvalidResourceType.NotFound",
            "{action}"
        );
        let mut dup = with_tag.to_vec();
        dup.extend([
            ("ResourceType", "sourceserver"),
            ("ResourceId.2", ids[0].as_str()),
        ]);
        assert_eq!(
            h.smc_code(action, &dup).await,
            "Duplicate.ResourceId",
            "{action}"
        );
        let unknown = [
            ("ResourceType", "sourceserver"),
            ("ResourceId.1", "s-fenosuch"),
            ("Tag.1.Key", "k"),
            ("TagKey.1", "k"),
        ];
        assert_eq!(
            h.smc_code(action, &unknown).await,
            "InvalidResourceId.NotFound",
            "{action}"
        );
        let many: Vec<(String, String)> = (1..=51)
            .map(|i| (format!("ResourceId.{i}"), format!("s-fe{i:018}")))
            .collect();
        let mut params: Vec<(&str, &str)> =
            many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        params.extend([
            ("ResourceType", "sourceserver"),
            ("Tag.1.Key", "k"),
            ("TagKey.1", "k"),
        ]);
        assert_eq!(
            h.smc_code(action, &params).await,
            "NumberExceed.ResourceIds",
            "{action}"
        );
    }
    assert_eq!(
        h.smc_code(
            "TagResources",
            &[("ResourceType", "sourceserver"), ("Tag.1.Key", "k")]
        )
        .await,
        "MissingParameter"
    );
    assert_eq!(
        h.smc_code(
            "TagResources",
            &[("ResourceType", "sourceserver"), ("ResourceId.1", &ids[0])]
        )
        .await,
        "MissingParameter"
    );
    assert_eq!(
        h.smc_code(
            "TagResources",
            &[
                ("ResourceType", "sourceserver"),
                ("ResourceId.1", &ids[0]),
                ("Tag.1.Key", "aliyun.x")
            ]
        )
        .await,
        "InvalidTagKey.Malformed"
    );
    let long_value = "v".repeat(129);
    assert_eq!(
        h.smc_code(
            "TagResources",
            &[
                ("ResourceType", "sourceserver"),
                ("ResourceId.1", &ids[0]),
                ("Tag.1.Key", "k"),
                ("Tag.1.Value", &long_value)
            ]
        )
        .await,
        "InvalidTagValue.Malformed"
    );

    // Twenty tags on each of the three sources; the type is case-insensitive.
    let tag_params: Vec<(String, String)> = (0..20)
        .flat_map(|i| {
            [
                (format!("Tag.{}.Key", i + 1), format!("k{i:02}")),
                (format!("Tag.{}.Value", i + 1), format!("v{i}")),
            ]
        })
        .collect();
    let mut params: Vec<(&str, &str)> = vec![
        ("ResourceType", "SourceServer"),
        ("ResourceId.1", &ids[0]),
        ("ResourceId.2", &ids[1]),
        ("ResourceId.3", &ids[2]),
    ];
    params.extend(tag_params.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    h.smc("TagResources", &params).await;
    // A 21st tag is refused, and nothing of the refused call is written.
    assert_eq!(
        h.smc_code(
            "TagResources",
            &[
                ("ResourceType", "sourceserver"),
                ("ResourceId.1", &ids[0]),
                ("Tag.1.Key", "one-more")
            ]
        )
        .await,
        "NumberExceed.Tags"
    );
    // Replacing a value is not a new tag.
    h.smc(
        "TagResources",
        &[
            ("ResourceType", "sourceserver"),
            ("ResourceId.1", &ids[1]),
            ("Tag.1.Key", "k00"),
            ("Tag.1.Value", "changed"),
        ],
    )
    .await;

    // Sixty rows: a page of 50, then 10 and an empty NextToken.
    let first = h
        .smc("ListTagResources", &[("ResourceType", "sourceserver")])
        .await;
    let rows = items(&first, "TagResources", "TagResource");
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[0]["ResourceType"], "sourceserver");
    let token = first["NextToken"].as_str().expect("NextToken").to_owned();
    assert!(!token.is_empty());
    let second = h
        .smc(
            "ListTagResources",
            &[("ResourceType", "sourceserver"), ("NextToken", &token)],
        )
        .await;
    let rest = items(&second, "TagResources", "TagResource");
    assert_eq!(rest.len(), 10);
    assert_eq!(second["NextToken"], "");
    let mut seen: Vec<(String, String)> = rows
        .iter()
        .chain(rest)
        .map(|r| (r["ResourceId"].to_string(), r["TagKey"].to_string()))
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 60, "a row was listed twice or skipped");
    assert_eq!(
        h.smc_code(
            "ListTagResources",
            &[("ResourceType", "sourceserver"), ("NextToken", "garbage")]
        )
        .await,
        "InvalidParameter"
    );
    assert_eq!(
        h.smc_code(
            "ListTagResources",
            &[("ResourceType", "sourceserver"), ("Tag.1.Value", "v1")]
        )
        .await,
        "InvalidParameter.TagValue"
    );
    // Exact, ANDed filters.
    let changed = h
        .smc(
            "ListTagResources",
            &[
                ("ResourceType", "sourceserver"),
                ("Tag.1.Key", "k00"),
                ("Tag.1.Value", "changed"),
                ("Tag.2.Key", "k01"),
            ],
        )
        .await;
    let rows = items(&changed, "TagResources", "TagResource");
    assert!(!rows.is_empty());
    assert!(
        rows.iter().all(|r| r["ResourceId"] == ids[1].as_str()),
        "{changed}"
    );
    let one = h
        .smc(
            "ListTagResources",
            &[("ResourceType", "sourceserver"), ("ResourceId.1", &ids[2])],
        )
        .await;
    assert_eq!(items(&one, "TagResources", "TagResource").len(), 20);

    // Describe* show and filter by tags.
    let tagged = h
        .smc(
            "DescribeSourceServers",
            &[("Tag.1.Key", "k00"), ("Tag.1.Value", "v0")],
        )
        .await;
    assert_eq!(tagged["TotalCount"], 2, "{tagged}");
    let s = &tagged["SourceServers"]["SourceServer"][0];
    assert_eq!(items(s, "Tags", "Tag").len(), 20, "{s}");
    let narrowed = h
        .smc(
            "DescribeSourceServers",
            &[
                ("Tag.1.Key", "k00"),
                ("Tag.1.Value", "v0"),
                ("SourceId.1", &ids[2]),
            ],
        )
        .await;
    assert_eq!(narrowed["TotalCount"], 1);
    let nothing = h
        .smc(
            "DescribeSourceServers",
            &[("Tag.1.Key", "k00"), ("Tag.1.Value", "nope")],
        )
        .await;
    assert_eq!(nothing["TotalCount"], 0);

    // CreateReplicationJob stores its tags, after checking them: a bad tag creates no job.
    assert_eq!(
        h.smc_code(
            "CreateReplicationJob",
            &[
                ("SourceId", &ids[0]),
                ("RegionId", "local"),
                ("Tag.1.Key", "acs:x")
            ]
        )
        .await,
        "InvalidTagKey.Malformed"
    );
    assert_eq!(h.smc("DescribeReplicationJobs", &[]).await["TotalCount"], 0);
    let j0 = create_job(&h, &ids[0], &[("Tag.1.Key", "wave"), ("Tag.1.Value", "1")]).await;
    let j1 = create_job(&h, &ids[1], &[("Tag.1.Key", "wave"), ("Tag.1.Value", "2")]).await;
    let found = h
        .smc(
            "DescribeReplicationJobs",
            &[("Tag.1.Key", "wave"), ("Tag.1.Value", "2")],
        )
        .await;
    assert_eq!(found["TotalCount"], 1);
    let job = &found["ReplicationJobs"]["ReplicationJob"][0];
    assert_eq!(job["JobId"], j1.as_str());
    assert_eq!(job["Tags"]["Tag"][0]["Key"], "wave");
    assert_eq!(
        h.smc("DescribeReplicationJobs", &[("Tag.1.Key", "wave")])
            .await["TotalCount"],
        2
    );
    let jobs = h
        .smc(
            "ListTagResources",
            &[("ResourceType", "replicationjob"), ("ResourceId.1", &j0)],
        )
        .await;
    assert_eq!(jobs["TagResources"]["TagResource"][0]["TagValue"], "1");

    // Untag by key, then everything.
    assert_eq!(
        h.smc_code(
            "UntagResources",
            &[
                ("ResourceType", "sourceserver"),
                ("ResourceId.1", &ids[0]),
                ("All", "true"),
                ("TagKey.1", "k00")
            ]
        )
        .await,
        "InvalidParameter"
    );
    h.smc(
        "UntagResources",
        &[
            ("ResourceType", "sourceserver"),
            ("ResourceId.1", &ids[0]),
            ("TagKey.1", "k00"),
            ("TagKey.2", "k01"),
        ],
    )
    .await;
    let left = h
        .smc(
            "ListTagResources",
            &[("ResourceType", "sourceserver"), ("ResourceId.1", &ids[0])],
        )
        .await;
    assert_eq!(items(&left, "TagResources", "TagResource").len(), 18);
    h.smc(
        "UntagResources",
        &[
            ("ResourceType", "sourceserver"),
            ("ResourceId.1", &ids[0]),
            ("All", "true"),
        ],
    )
    .await;
    let left = h
        .smc(
            "ListTagResources",
            &[("ResourceType", "sourceserver"), ("ResourceId.1", &ids[0])],
        )
        .await;
    assert_eq!(items(&left, "TagResources", "TagResource").len(), 0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_workgroups_and_tags() {
    let h = Harness::start().await;
    let agents = sources(&h, 2).await;
    let (s1, s2) = (agents[0].source_id.clone(), agents[1].source_id.clone());

    let out = h
        .ok(&[
            "workgroup",
            "create",
            "--name",
            "wave-1",
            "--tag",
            "env=prod",
        ])
        .await;
    let w = printed_id(&out, "w-");
    h.ok(&["workgroup", "add", &w, &s1, &s2]).await;
    let table = h.ok(&["workgroup", "list"]).await;
    let row = table
        .lines()
        .find(|l| l.starts_with(&w))
        .unwrap_or_else(|| panic!("{w} not listed:\n{table}"));
    assert!(
        row.contains("wave-1")
            && row.contains("NotStarted")
            && row.contains("UnRelated: 2")
            && row.contains("env=prod"),
        "{row}"
    );
    let shown = h.ok(&["workgroup", "show", &w]).await;
    assert!(shown.contains("Warning UnRelated"), "{shown}");
    assert!(shown.contains(&s1) && shown.contains(&s2), "{shown}");

    h.ok(&["tag", "add", "--type", "source", "--tag", "role=web", &s1])
        .await;
    let tags = h.ok(&["tag", "list", "--type", "source"]).await;
    assert!(
        tags.lines()
            .any(|l| l.starts_with(&s1) && l.contains("role") && l.contains("web")),
        "{tags}"
    );
    let json: Value = serde_json::from_str(
        &h.ok(&[
            "tag", "list", "--type", "source", "--tag", "role", "--output", "json",
        ])
        .await,
    )
    .expect("JSON");
    assert_eq!(
        json["TagResources"]["TagResource"][0]["ResourceId"],
        s1.as_str()
    );
    h.ok(&["tag", "remove", "--type", "source", "--all", &s1])
        .await;
    assert!(
        h.ok(&["tag", "list", "--type", "source"])
            .await
            .starts_with("No tags")
    );

    h.ok(&["workgroup", "remove", &w, &s2]).await;
    h.ok(&["workgroup", "rename", &w, "--name", "wave-one"])
        .await;
    let json: Value =
        serde_json::from_str(&h.ok(&["workgroup", "show", &w, "--output", "json"]).await)
            .expect("JSON");
    let g = &json["Workgroups"]["Workgroup"][0];
    assert_eq!(g["Name"], "wave-one");
    assert_eq!(strs(g, "SourceIds", "SourceId"), [s1.as_str()]);
    h.ok(&["workgroup", "delete", &w]).await;
    assert!(
        h.ok(&["workgroup", "list"])
            .await
            .starts_with("No workgroups")
    );
    h.stop().await;
}
