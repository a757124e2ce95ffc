"""Every SMC 2019-06-01 action (reference §2, all 24) through each SDK generation, asserting the response
shapes and JSON types the SDKs and their strictly typed Go/Java siblings rely on (§1.8): ints as numbers,
booleans as booleans, string-declared fields as strings, lists wrapped as `{"Singular": [...]}`.

Each test runs three times (`gen`: v1, v3, v3-sig1) against the session server and makes its own state
(own activation codes, agents, jobs, workgroups), so the tests do not depend on each other's order.
"""

from __future__ import annotations

import json
import re

import pytest

from ferry_sdk import ApiFailure, job, source, unique, wait_for, wait_job, wait_source

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
REQUEST_ID = re.compile(r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$")


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def wrapped(obj: dict, outer: str, inner: str) -> list:
    """`obj[outer][inner]`, asserting the SDK list wrapping."""
    assert isinstance(obj.get(outer), dict), f"{outer} must be an object wrapping {inner}: {obj.get(outer)!r}"
    items = obj[outer].get(inner)
    assert isinstance(items, list), f"{outer}.{inner} must be an array: {obj[outer]!r}"
    return items


def check_paging(resp: dict):
    for k in ("TotalCount", "PageNumber", "PageSize"):
        assert is_int(resp[k]), f"{k} must be a JSON number: {resp[k]!r}"


def check_request_id(resp: dict):
    assert REQUEST_ID.match(resp["RequestId"]), resp["RequestId"]


def expect(code: str, fn, *args, status: int | None = None):
    with pytest.raises(ApiFailure) as e:
        fn(*args)
    assert e.value.code == code, f"expected {code}, got {e.value}"
    if status is not None:
        assert e.value.status == status, f"expected HTTP {status}, got {e.value}"
    return e.value


# ---------------------------------------------------------------------------------------------------------
# Activation codes: CreateAccessToken, ListAccessTokens, DisableAccessToken, DeleteAccessToken


def test_access_token_lifecycle(api):
    name = unique("codes")
    made = api.call("smc", "CreateAccessToken",
                    {"Name": name, "Description": "made by the SDK suite", "Count": "5", "TimeToLiveInDays": "7"})
    check_request_id(made)
    assert made["AccessTokenId"].startswith("at-")
    assert isinstance(made["AccessTokenCode"], str) and len(made["AccessTokenCode"]) >= 16

    listed = api.call("smc", "ListAccessTokens", {"AccessTokenId": [made["AccessTokenId"]]})
    check_request_id(listed)
    check_paging(listed)
    items = wrapped(listed, "AccessTokens", "AccessToken")
    assert len(items) == 1 and listed["TotalCount"] == 1
    t = items[0]
    assert t["AccessTokenId"] == made["AccessTokenId"]
    assert t["Name"] == name and t["Description"] == "made by the SDK suite"
    # Declared as strings in the SDKs (§2.3): strict clients fail on numbers here.
    assert t["Count"] == "5" and t["RegisteredCount"] == "0" and t["TimeToLiveInDays"] == "7"
    assert t["Status"] == "unactivated"
    assert TIME.match(t["CreationTime"])
    assert "AccessTokenCode" not in t, "the code is shown only once, at creation"

    by_name = wrapped(api.call("smc", "ListAccessTokens", {"Name": name}), "AccessTokens", "AccessToken")
    assert [x["AccessTokenId"] for x in by_name] == [made["AccessTokenId"]]

    api.call("smc", "DisableAccessToken", {"AccessTokenId": made["AccessTokenId"]})
    t = wrapped(api.call("smc", "ListAccessTokens", {"AccessTokenId": [made["AccessTokenId"]]}),
                "AccessTokens", "AccessToken")[0]
    assert t["Status"] == "expired"

    api.call("smc", "DeleteAccessToken", {"AccessTokenId": made["AccessTokenId"]})
    gone = api.call("smc", "ListAccessTokens", {"AccessTokenId": [made["AccessTokenId"]]})
    assert wrapped(gone, "AccessTokens", "AccessToken") == []


def test_access_token_defaults_and_bad_values(api):
    made = api.call("smc", "CreateAccessToken", {})
    t = wrapped(api.call("smc", "ListAccessTokens", {"AccessTokenId": [made["AccessTokenId"]]}),
                "AccessTokens", "AccessToken")[0]
    assert t["Count"] == "100" and t["TimeToLiveInDays"] == "30"
    expect("InvalidParameter", api.call, "smc", "CreateAccessToken", {"Count": "0"}, status=400)
    expect("InvalidParameter", api.call, "smc", "CreateAccessToken", {"TimeToLiveInDays": "91"}, status=400)
    expect("MissingParameter", api.call, "smc", "DisableAccessToken", {}, status=400)


# ---------------------------------------------------------------------------------------------------------
# Source servers: DescribeSourceServers, ModifySourceServerAttribute, DeleteSourceServer


def test_describe_source_servers(api, agent):
    a = agent(seed=11, via=api)
    resp = api.call("smc", "DescribeSourceServers", {"SourceId": [a.source_id], "PageSize": 5, "PageNumber": 1})
    check_request_id(resp)
    check_paging(resp)
    assert resp["PageSize"] == 5 and resp["PageNumber"] == 1 and resp["TotalCount"] == 1
    s = wrapped(resp, "SourceServers", "SourceServer")[0]
    assert s["SourceId"] == a.source_id and s["SourceId"].startswith("s-")
    assert s["State"] == "Available"
    for k in ("Name", "Description", "AgentVersion", "Platform", "Architecture", "ReplicationDriver"):
        assert isinstance(s[k], str), f"{k}: {s[k]!r}"
    assert TIME.match(s["CreationTime"])
    assert is_int(s["HeartbeatRate"]) and is_int(s["SystemDiskSize"])
    info = json.loads(s["SystemInfo"])  # JSON text, not an object (§2.4)
    assert isinstance(info, dict) and all(isinstance(v, str) for v in info.values()), info
    wrapped(s, "SystemDiskParts", "SystemDiskPart")
    wrapped(s, "DataDisks", "DataDisk")
    wrapped(s, "Tags", "Tag")

    # Filters: by State and by Name; paging past the end is an empty page, not an error.
    by_state = wrapped(api.call("smc", "DescribeSourceServers", {"State": "Available", "PageSize": 50}),
                       "SourceServers", "SourceServer")
    assert a.source_id in [x["SourceId"] for x in by_state]
    by_name = wrapped(api.call("smc", "DescribeSourceServers", {"Name": s["Name"]}), "SourceServers", "SourceServer")
    assert a.source_id in [x["SourceId"] for x in by_name]
    far = api.call("smc", "DescribeSourceServers", {"SourceId": [a.source_id], "PageNumber": 99})
    assert wrapped(far, "SourceServers", "SourceServer") == [] and far["TotalCount"] == 1
    expect("InvalidParameter", api.call, "smc", "DescribeSourceServers", {"PageSize": 51}, status=400)


def test_modify_source_server_attribute(api, agent):
    a, b = agent(seed=12, via=api), agent(seed=13, via=api)
    name = unique("web")
    api.call("smc", "ModifySourceServerAttribute",
             {"SourceId": a.source_id, "Name": name, "Description": "renamed by the SDK suite"})
    s = source(api, a.source_id)
    assert s["Name"] == name and s["Description"] == "renamed by the SDK suite"
    expect("SourceServerName.Duplicate", api.call, "smc", "ModifySourceServerAttribute",
           {"SourceId": b.source_id, "Name": name}, status=400)
    expect("InvalidParameter", api.call, "smc", "ModifySourceServerAttribute",
           {"SourceId": a.source_id, "Name": "http://x"}, status=400)
    expect("MissingParameter", api.call, "smc", "ModifySourceServerAttribute", {"Name": "abc"}, status=400)


def test_delete_source_server(api, agent):
    a = agent(seed=14, via=api)
    made = api.call("smc", "CreateReplicationJob", {"SourceId": a.source_id, "RegionId": "local"})
    # A source with a job is only deleted with Force (§2.4).
    with pytest.raises(ApiFailure) as e:
        api.call("smc", "DeleteSourceServer", {"SourceId": a.source_id})
    assert e.value.code in ("SourceServer.WithRunningReplicationJob", "ReplicationJob.Related"), e.value
    assert source(api, a.source_id) is not None
    api.call("smc", "DeleteSourceServer", {"SourceId": a.source_id, "Force": True})
    wait_for("the source to be gone", lambda: source(api, a.source_id) is None, timeout=30)
    wait_for("its job to be gone", lambda: job(api, made["JobId"]) is None, timeout=30)


# ---------------------------------------------------------------------------------------------------------
# Replication jobs: Create, Describe, ModifyAttribute, Start, Stop, Delete, CutOver, CreateCrossZoneMigration


def check_job_types(j: dict):
    for k in ("JobId", "Name", "SourceId", "RegionId", "Status", "TargetType", "ReplicationParameters"):
        assert isinstance(j[k], str), f"{k}: {j[k]!r}"
    for k in ("JobType", "NetMode"):
        assert is_int(j[k]), f"{k} must be a JSON number: {j[k]!r}"
    assert isinstance(j["RunOnce"], bool), j["RunOnce"]
    # The schedule belongs to incremental jobs only; absent fields are omitted, never null.
    for k in ("Frequency", "MaxNumberOfImageToKeep"):
        if j["RunOnce"]:
            assert k not in j, f"{k} on a one-shot job: {j[k]!r}"
        else:
            assert is_int(j[k]), f"{k} must be a JSON number: {j[k]!r}"
    assert isinstance(j["Progress"], (int, float)) and not isinstance(j["Progress"], bool)
    assert TIME.match(j["CreationTime"])
    wrapped(j, "ReplicationJobRuns", "ReplicationJobRun")
    wrapped(j, "Tags", "Tag")
    wrapped(j, "SystemDiskParts", "SystemDiskPart")
    wrapped(j, "DataDisks", "DataDisk")


def test_replication_job_create_describe_modify_delete(api, agent):
    a = agent(seed=21, via=api)
    name = unique("job")
    params = {
        "SourceId": a.source_id, "RegionId": "local", "Name": name, "Description": "SDK suite job",
        "TargetType": "Image", "ImageName": unique("img"), "RunOnce": False, "Frequency": 12,
        "MaxNumberOfImageToKeep": 3, "ReplicationParameters": '{"bandwidth_limit":0,"compress_level":1,"checksum":true}',
        "Tag": [{"Key": "env", "Value": "test"}],
    }
    made = api.call("smc", "CreateReplicationJob", params)
    check_request_id(made)
    assert made["JobId"].startswith("j-")
    j = job(api, made["JobId"])
    check_job_types(j)
    assert (j["Name"], j["Description"], j["SourceId"], j["Status"]) == (name, "SDK suite job", a.source_id, "Ready")
    assert (j["RunOnce"], j["Frequency"], j["MaxNumberOfImageToKeep"], j["JobType"]) == (False, 12, 3, 0)
    assert j["ReplicationParameters"] == params["ReplicationParameters"]
    assert "BusinessStatus" not in j, "BusinessStatus is emitted only while Running (§2.6)"
    assert {"Key": "env", "Value": "test"} in wrapped(j, "Tags", "Tag")
    assert source(api, a.source_id)["State"] == "InUse"

    listed = api.call("smc", "DescribeReplicationJobs", {"SourceId": [a.source_id], "Status": "Ready"})
    check_paging(listed)
    assert [x["JobId"] for x in wrapped(listed, "ReplicationJobs", "ReplicationJob")] == [made["JobId"]]
    by_name = api.call("smc", "DescribeReplicationJobs", {"Name": name})
    assert [x["JobId"] for x in wrapped(by_name, "ReplicationJobs", "ReplicationJob")] == [made["JobId"]]

    # One open job per source; names are unique.
    expect("SourceServerState.Invalid", api.call, "smc", "CreateReplicationJob",
           {"SourceId": a.source_id, "RegionId": "local"}, status=400)

    new_name = unique("renamed")
    api.call("smc", "ModifyReplicationJobAttribute",
             {"JobId": made["JobId"], "Name": new_name, "Description": "changed", "Frequency": 24,
              "MaxNumberOfImageToKeep": 2})
    j = job(api, made["JobId"])
    assert (j["Name"], j["Description"], j["Frequency"], j["MaxNumberOfImageToKeep"]) == (new_name, "changed", 24, 2)
    expect("InvalidParameter", api.call, "smc", "ModifyReplicationJobAttribute",
           {"JobId": made["JobId"], "Frequency": 169}, status=400)

    # Transitions a Ready job does not allow (§2.6).
    expect("ReplicationJob.InvalidStatus", api.call, "smc", "StopReplicationJob", {"JobId": made["JobId"]}, status=400)
    expect("ReplicationJob.InvalidStatus", api.call, "smc", "CutOverReplicationJob",
           {"JobId": made["JobId"]}, status=400)

    api.call("smc", "DeleteReplicationJob", {"JobId": made["JobId"]})
    wait_for("the job to be gone", lambda: job(api, made["JobId"]) is None, timeout=30)
    wait_source(api, a.source_id, "Available")


def test_start_stop_start_finish(api, agent):
    a = agent(seed=22, size_mib=64, via=api)
    # 256 KB/s keeps the job in Syncing long enough to stop it (the disk holds about 5 MiB of data) and lets
    # the resumed run finish in about 20 s.
    made = api.call("smc", "CreateReplicationJob",
                    {"SourceId": a.source_id, "RegionId": "local", "ReplicationParameters": '{"bandwidth_limit":256}'})
    jid = made["JobId"]
    api.call("smc", "StartReplicationJob", {"JobId": jid})
    expect("ReplicationJob.InvalidStatus", api.call, "smc", "StartReplicationJob", {"JobId": jid}, status=400)
    j = wait_for("the job to sync", lambda: (x := job(api, jid)) and x.get("BusinessStatus") == "Syncing" and x,
                 timeout=60)
    assert j["Status"] == "Running" and isinstance(j["BusinessStatus"], str)
    expect("ReplicationJob.InvalidStatus", api.call, "smc", "DeleteReplicationJob", {"JobId": jid}, status=400)
    api.call("smc", "StopReplicationJob", {"JobId": jid})
    wait_job(api, jid, ("Stopped",), timeout=60)
    # Once a job has run, only its name, description and validity may change (smc-api.md §2.5).
    expect("ReplicationJob.InvalidStatus", api.call, "smc", "ModifyReplicationJobAttribute",
           {"JobId": jid, "ReplicationParameters": '{"bandwidth_limit":0}'}, status=400)
    api.call("smc", "ModifyReplicationJobAttribute", {"JobId": jid, "Description": "stopped once"})
    api.call("smc", "StartReplicationJob", {"JobId": jid})
    j = wait_job(api, jid, ("Finished",), timeout=240)
    check_job_types(j)
    assert j["ImageId"].startswith("m-") and TIME.match(j["EndTime"])
    runs = wrapped(j, "ReplicationJobRuns", "ReplicationJobRun")
    assert runs and runs[-1]["ImageId"] == j["ImageId"] and runs[-1]["Type"] in ("Manual", "Schedule")
    wait_source(api, a.source_id, "Available")
    expect("ReplicationJob.InvalidStatus", api.call, "smc", "StartReplicationJob", {"JobId": jid}, status=400)
    expect("ReplicationJob.InvalidStatus", api.call, "smc", "StopReplicationJob", {"JobId": jid}, status=400)


def test_incremental_job_cut_over(api, agent):
    a = agent(seed=23, via=api)
    jid = api.call("smc", "CreateReplicationJob",
                   {"SourceId": a.source_id, "RegionId": "local", "RunOnce": False, "Frequency": 24,
                    "MaxNumberOfImageToKeep": 2})["JobId"]
    api.call("smc", "StartReplicationJob", {"JobId": jid})
    j = wait_job(api, jid, ("Waiting",), timeout=240)
    assert len(wrapped(j, "ReplicationJobRuns", "ReplicationJobRun")) == 1
    api.call("smc", "CutOverReplicationJob", {"JobId": jid, "SyncData": False})
    j = wait_job(api, jid, ("Finished",), timeout=120)
    expect("ReplicationJob.InvalidStatus", api.call, "smc", "CutOverReplicationJob", {"JobId": jid}, status=400)
    wait_source(api, a.source_id, "Available")
    # A one-shot job cannot be cut over at all.
    once = api.call("smc", "CreateReplicationJob", {"SourceId": a.source_id, "RegionId": "local"})["JobId"]
    expect("ReplicationJob.InvalidStatus", api.call, "smc", "CutOverReplicationJob", {"JobId": once}, status=400)


def test_create_cross_zone_migration_job_validates(api):
    # The happy path needs an instance: test_migration.py covers it. Here: the documented parameter errors.
    expect("MissingParameter", api.call, "smc", "CreateCrossZoneMigrationJob", {"InstanceId": "i-none"}, status=400)
    with pytest.raises(ApiFailure) as e:
        api.call("smc", "CreateCrossZoneMigrationJob",
                 {"RegionId": "local", "InstanceId": "i-doesnotexist0000", "TargetZoneId": "local-b"})
    assert e.value.status in (400, 404) and "InstanceId" in e.value.code, e.value


def test_unknown_ids_give_not_found_errors(api):
    for action, params in [
        ("StartReplicationJob", {"JobId": "j-doesnotexist0000000"}),
        ("DeleteReplicationJob", {"JobId": "j-doesnotexist0000000"}),
        ("ModifySourceServerAttribute", {"SourceId": "s-doesnotexist0000000", "Name": "abc"}),
        ("DisableAccessToken", {"AccessTokenId": "at-doesnotexist00000"}),
    ]:
        with pytest.raises(ApiFailure) as e:
            api.call("smc", action, params)
        assert e.value.status in (400, 404) and e.value.code != "InternalError", (action, e.value)


# ---------------------------------------------------------------------------------------------------------
# Workgroups: Create, Describe, ModifyAttribute, Delete, AssociateSourceServers, DisassociateSourceServers


def test_workgroup_lifecycle(api, agent):
    a = agent(seed=31, via=api)
    name = unique("wave")
    made = api.call("smc", "CreateWorkgroup",
                    {"Name": name, "Description": "first wave", "Tag": [{"Key": "team", "Value": "web"}]})
    check_request_id(made)
    wid = made["WorkgroupId"]
    assert wid.startswith("w-")

    resp = api.call("smc", "DescribeWorkgroups", {"WorkgroupId": [wid]})
    check_paging(resp)
    w = wrapped(resp, "Workgroups", "Workgroup")[0]
    assert (w["WorkgroupId"], w["Name"], w["Description"], w["Status"]) == (wid, name, "first wave", "NotStarted")
    assert {"Key": "team", "Value": "web"} in wrapped(w, "Tags", "Tag")
    wrapped(w, "Warnings", "Warning")

    api.call("smc", "ModifyWorkgroupAttribute", {"WorkgroupId": wid, "Name": name + "b", "Description": "moved"})
    w = wrapped(api.call("smc", "DescribeWorkgroups", {"Name": name + "b"}), "Workgroups", "Workgroup")[0]
    assert (w["WorkgroupId"], w["Description"]) == (wid, "moved")

    api.call("smc", "AssociateSourceServers", {"WorkgroupId": wid, "SourceId": [a.source_id]})
    assert source(api, a.source_id).get("WorkgroupId") == wid
    members = wrapped(api.call("smc", "DescribeSourceServers", {"WorkgroupId": wid}), "SourceServers", "SourceServer")
    assert [m["SourceId"] for m in members] == [a.source_id]
    # A member without a job is flagged UnRelated (§2.7).
    w = wrapped(api.call("smc", "DescribeWorkgroups", {"WorkgroupId": [wid]}), "Workgroups", "Workgroup")[0]
    warnings = wrapped(w, "Warnings", "Warning")
    for warning in warnings:
        assert warning["WarningType"] in ("InError", "UnRelated", "NotPassed"), warning
        wrapped(warning, "SourceIds", "SourceId")
    unrelated = [x for x in warnings if x["WarningType"] == "UnRelated"]
    assert unrelated and a.source_id in unrelated[0]["SourceIds"]["SourceId"], warnings

    api.call("smc", "DisassociateSourceServers", {"WorkgroupId": wid, "SourceId": [a.source_id]})
    assert not source(api, a.source_id).get("WorkgroupId")
    api.call("smc", "DeleteWorkgroup", {"WorkgroupId": wid})
    gone = api.call("smc", "DescribeWorkgroups", {"WorkgroupId": [wid]})
    assert wrapped(gone, "Workgroups", "Workgroup") == []
    expect("MissingParameter", api.call, "smc", "AssociateSourceServers", {"WorkgroupId": wid}, status=400)


# ---------------------------------------------------------------------------------------------------------
# Tags: TagResources, UntagResources, ListTagResources


def test_tags(api, agent):
    a = agent(seed=41, via=api)
    key = unique("k")
    api.call("smc", "TagResources", {"ResourceType": "sourceserver", "ResourceId": [a.source_id],
                                     "Tag": [{"Key": key, "Value": "v1"}, {"Key": key + "x", "Value": "v2"}]})
    listed = api.call("smc", "ListTagResources", {"ResourceType": "sourceserver", "ResourceId": [a.source_id]})
    check_request_id(listed)
    items = wrapped(listed, "TagResources", "TagResource")
    pairs = {(t["ResourceId"], t["ResourceType"], t["TagKey"], t["TagValue"]) for t in items}
    assert (a.source_id, "sourceserver", key, "v1") in pairs and (a.source_id, "sourceserver", key + "x", "v2") in pairs
    assert isinstance(listed.get("NextToken", ""), str)
    # Tags show on the resource and filter its list.
    assert {"Key": key, "Value": "v1"} in wrapped(source(api, a.source_id), "Tags", "Tag")
    found = wrapped(api.call("smc", "DescribeSourceServers", {"Tag": [{"Key": key, "Value": "v1"}]}),
                    "SourceServers", "SourceServer")
    assert [s["SourceId"] for s in found] == [a.source_id]
    by_tag = wrapped(api.call("smc", "ListTagResources", {"ResourceType": "sourceserver", "Tag": [{"Key": key}]}),
                     "TagResources", "TagResource")
    assert {t["ResourceId"] for t in by_tag} == {a.source_id}

    api.call("smc", "UntagResources", {"ResourceType": "sourceserver", "ResourceId": [a.source_id], "TagKey": [key]})
    left = wrapped(api.call("smc", "ListTagResources", {"ResourceType": "sourceserver", "ResourceId": [a.source_id]}),
                   "TagResources", "TagResource")
    assert {t["TagKey"] for t in left} == {key + "x"}
    api.call("smc", "UntagResources", {"ResourceType": "sourceserver", "ResourceId": [a.source_id], "All": True})
    left = wrapped(api.call("smc", "ListTagResources", {"ResourceType": "sourceserver", "ResourceId": [a.source_id]}),
                   "TagResources", "TagResource")
    assert left == []

    expect("InvalidResourceType.NotFound", api.call, "smc", "TagResources",
           {"ResourceType": "bucket", "ResourceId": [a.source_id], "Tag": [{"Key": "a", "Value": "b"}]}, status=400)
    expect("InvalidResourceId.NotFound", api.call, "smc", "TagResources",
           {"ResourceType": "sourceserver", "ResourceId": ["s-doesnotexist0000000"],
            "Tag": [{"Key": "a", "Value": "b"}]}, status=400)
    expect("NumberExceed.Tags", api.call, "smc", "TagResources",
           {"ResourceType": "sourceserver", "ResourceId": [a.source_id],
            "Tag": [{"Key": f"k{i}", "Value": "v"} for i in range(21)]}, status=400)
