"""ECS 2014-05-26 actions a migration touches (reference §3.1), through aliyunsdkecs (v1) and
alibabacloud_ecs20140526 (v3, both signatures): regions, images, export tasks, and the image / snapshot /
instance lifecycle (CreateImage, DeleteImage, DescribeSnapshots, DeleteSnapshot, RunInstances,
DescribeInstances, StartInstance, StopInstance, DeleteInstance) plus the cross-zone migration job that needs
an instance.
"""

from __future__ import annotations

import json

import pytest

from ferry_sdk import ApiFailure, V3, job, unique, wait_for


def is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def fails(api, action, params) -> ApiFailure:
    with pytest.raises(ApiFailure) as e:
        api.call("ecs", action, params)
    return e.value


def test_describe_regions(api):
    got = api.call("ecs", "DescribeRegions", {})
    regions = got["Regions"]["Region"]
    assert [r["RegionId"] for r in regions] == ["local"]
    r = regions[0]
    assert r["Status"] == "available" and isinstance(r["LocalName"], str) and isinstance(r["RegionEndpoint"], str)


def test_describe_images(api, migrated):
    image_id, job_id, _ = migrated
    got = api.call("ecs", "DescribeImages", {"RegionId": "local", "ImageId": image_id})
    for k in ("TotalCount", "PageNumber", "PageSize"):
        assert is_int(got[k]), k
    assert got["RegionId"] == "local"
    img = got["Images"]["Image"][0]
    assert (img["ImageId"], img["Status"], img["ImageOwnerAlias"]) == (image_id, "Available", "self")
    for k in ("ImageName", "OSType", "Architecture", "CreationTime", "Progress"):
        assert isinstance(img[k], str), k
    assert is_int(img["Size"])
    m = img["DiskDeviceMappings"]["DiskDeviceMapping"][0]
    assert isinstance(m["Size"], str) and m["Type"] == "system"
    assert img["Tags"]["Tag"] == [] or isinstance(img["Tags"]["Tag"], list)
    # The job names the image it produced.
    assert job(api, job_id)["ImageId"] == image_id
    # Filters and paging.
    every = api.call("ecs", "DescribeImages", {"RegionId": "local", "Status": "ALL", "PageSize": 100})
    assert image_id in [i["ImageId"] for i in every["Images"]["Image"]]
    none = api.call("ecs", "DescribeImages", {"RegionId": "local", "ImageName": unique("no-such-image-")})
    assert none["Images"]["Image"] == [] and none["TotalCount"] == 0
    e = fails(api, "DescribeImages", {"RegionId": "mars-1"})
    assert (e.status, e.code) == (404, "InvalidRegionId.NotFound"), e
    e = fails(api, "DescribeImages", {"RegionId": "local", "PageSize": 101})
    assert (e.status, e.code) == (400, "InvalidParameter"), e


def test_region_is_mandatory(server):
    # The v1 core adds the client's RegionId to every call, so only v3 can leave it out.
    e = fails(V3(server, *server.root_key), "DescribeImages", {})
    assert (e.status, e.code) == (400, "MissingParameter"), e


def test_export_image_errors(api, migrated):
    image_id = migrated[0]
    e = fails(api, "ExportImage", {"RegionId": "local", "ImageId": image_id, "OSSBucket": "Bad_Bucket"})
    assert (e.status, e.code) == (400, "InvalidOSSBucket.Malformed"), e
    e = fails(api, "ExportImage", {"RegionId": "local", "ImageId": image_id, "OSSBucket": "exports",
                                   "OSSPrefix": "../escape/"})
    assert (e.status, e.code) == (400, "InvalidParameter"), e
    e = fails(api, "ExportImage", {"RegionId": "local", "ImageId": "m-doesnotexist000000", "OSSBucket": "exports"})
    assert (e.status, e.code) == (404, "InvalidImageId.NotFound"), e
    e = fails(api, "ExportImage", {"RegionId": "local", "ImageId": image_id, "OSSBucket": "exports",
                                   "ImageFormat": "iso"})
    assert (e.status, e.code) == (400, "InvalidParameter"), e


def test_export_qcow2_and_describe_tasks(api, migrated):
    image_id = migrated[0]
    task_id = api.call("ecs", "ExportImage", {"RegionId": "local", "ImageId": image_id, "OSSBucket": "exports",
                                              "OSSPrefix": unique("q") + "/", "ImageFormat": "qcow2"})["TaskId"]
    wait_for("the qcow2 export", lambda: api.call("ecs", "DescribeTaskAttribute",
                                                  {"RegionId": "local", "TaskId": task_id})["TaskStatus"] == "Finished",
             timeout=180, interval=0.5)
    tasks = api.call("ecs", "DescribeTasks", {"RegionId": "local", "TaskIds": task_id})
    for k in ("TotalCount", "PageNumber", "PageSize"):
        assert is_int(tasks[k]), k
    t = tasks["TaskSet"]["Task"][0]
    assert (t["TaskId"], t["TaskAction"], t["TaskStatus"]) == (task_id, "ExportImage", "Finished")
    finished = api.call("ecs", "DescribeTasks", {"RegionId": "local", "TaskStatus": "Finished", "PageSize": 100})
    assert task_id in [x["TaskId"] for x in finished["TaskSet"]["Task"]]
    e = fails(api, "DescribeTaskAttribute", {"RegionId": "local", "TaskId": "t-doesnotexist000000"})
    assert (e.status, e.code) == (404, "InvalidTaskId.NotFound"), e


def test_snapshot_image_instance_lifecycle(api, migrated):
    """Snapshots of the migrated image -> CreateImage -> RunInstances -> Stop/Start -> DeleteInstance,
    a cross-zone migration job of an instance, then DeleteImage / DeleteSnapshot with their guards."""
    image_id = migrated[0]
    snaps = api.call("ecs", "DescribeSnapshots", {"RegionId": "local"})
    assert is_int(snaps["TotalCount"])
    snapshots = snaps["Snapshots"]["Snapshot"]
    assert snapshots, "a migrated image has at least one snapshot"
    s = snapshots[0]
    for k in ("SnapshotId", "Status", "SourceDiskType", "CreationTime"):
        assert isinstance(s[k], str), k
    assert s["Status"] == "accomplished"
    one = api.call("ecs", "DescribeSnapshots", {"RegionId": "local", "SnapshotIds": json.dumps([s["SnapshotId"]])})
    assert [x["SnapshotId"] for x in one["Snapshots"]["Snapshot"]] == [s["SnapshotId"]]

    copy_id = api.call("ecs", "CreateImage", {"RegionId": "local", "SnapshotId": s["SnapshotId"],
                                              "ImageName": unique("copy")})["ImageId"]
    assert copy_id.startswith("m-") and copy_id != image_id
    # DescribeImages lists Available images unless asked for other statuses.
    wait_for("the new image", lambda: [i["Status"] for i in api.call(
        "ecs", "DescribeImages", {"RegionId": "local", "ImageId": copy_id, "Status": "ALL"})["Images"]["Image"]]
        == ["Available"], timeout=120)
    # A snapshot an image is made of cannot be deleted.
    e = fails(api, "DeleteSnapshot", {"SnapshotId": s["SnapshotId"]})
    assert (e.status, e.code) == (403, "SnapshotCreatedImage"), e

    ids = api.call("ecs", "RunInstances", {"RegionId": "local", "ImageId": copy_id, "InstanceType": "ecs.t1.nano",
                                           "InstanceName": unique("vm"), "Amount": 1})["InstanceIdSets"]["InstanceIdSet"]
    assert len(ids) == 1 and ids[0].startswith("i-")
    iid = ids[0]

    def instance():
        got = api.call("ecs", "DescribeInstances", {"RegionId": "local", "InstanceIds": json.dumps([iid])})
        items = got["Instances"]["Instance"]
        return items[0] if items else None

    i = wait_for("the instance to run", lambda: (x := instance()) and x["Status"] == "Running" and x, timeout=120)
    assert (i["InstanceId"], i["ImageId"], i["RegionId"]) == (iid, copy_id, "local")
    assert is_int(i["Cpu"]) and is_int(i["Memory"])
    e = fails(api, "StartInstance", {"InstanceId": iid})
    assert (e.status, e.code) == (403, "IncorrectInstanceStatus"), e
    e = fails(api, "DeleteInstance", {"InstanceId": iid})
    assert (e.status, e.code) == (403, "IncorrectInstanceStatus"), e
    e = fails(api, "DeleteImage", {"RegionId": "local", "ImageId": copy_id})
    assert (e.status, e.code) == (403, "ImageUsingByInstance"), e

    # A cross-zone migration job of this instance (SMC, JobType 2).
    # A Ferry region has one zone: the request is validated against the instance, then refused clearly.
    with pytest.raises(ApiFailure) as e:
        api.call("smc", "CreateCrossZoneMigrationJob", {"RegionId": "local", "InstanceId": iid,
                                                         "TargetZoneId": "local-b"})
    assert (e.value.status, e.value.code) == (400, "UnsupportedOperation"), e.value
    assert "single zone" in e.value.message, e.value

    api.call("ecs", "StopInstance", {"InstanceId": iid})
    wait_for("the instance to stop", lambda: instance()["Status"] == "Stopped", timeout=120)
    api.call("ecs", "StartInstance", {"InstanceId": iid})
    wait_for("the instance to run again", lambda: instance()["Status"] == "Running", timeout=120)
    api.call("ecs", "DeleteInstance", {"InstanceId": iid, "Force": True})
    wait_for("the instance to be gone", lambda: instance() is None, timeout=120)
    e = fails(api, "StopInstance", {"InstanceId": iid})
    assert (e.status, e.code) == (404, "InvalidInstanceId.NotFound"), e

    api.call("ecs", "DeleteImage", {"RegionId": "local", "ImageId": copy_id})
    gone = api.call("ecs", "DescribeImages", {"RegionId": "local", "ImageId": copy_id, "Status": "ALL"})
    assert gone["Images"]["Image"] == []
    e = fails(api, "DeleteSnapshot", {"SnapshotId": "s-doesnotexist00000000"})
    assert (e.status, e.code) == (404, "InvalidSnapshotId.NotFound"), e
