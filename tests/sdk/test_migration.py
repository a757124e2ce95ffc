"""A complete migration driven only through the official SDKs: activation code -> agent activates -> job ->
start -> Finished -> DescribeImages -> ExportImage -> DescribeTaskAttribute until Finished -> the exported raw
image equals the source disk byte for byte. Once per SDK generation, each on its own server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ferry_sdk import GENERATIONS, new_agent, same_file, unique, wait_for, wait_job, wait_source


@pytest.mark.parametrize("gen_name", ["v1", "v3", "v3-sig1"])
def test_complete_migration_through_the_sdk(gen_name, fresh_server, tmp_path):
    server = fresh_server()
    api = GENERATIONS[gen_name](server, *server.root_key)
    agent = new_agent(api, server, tmp_path, seed=101, size_mib=48)
    try:
        image_name = unique("migrated")
        jid = api.call("smc", "CreateReplicationJob",
                       {"SourceId": agent.source_id, "RegionId": "local", "Name": unique("mig"),
                        "ImageName": image_name})["JobId"]
        api.call("smc", "StartReplicationJob", {"JobId": jid})
        j = wait_job(api, jid, ("Finished",), timeout=300)
        image_id = j["ImageId"]
        assert image_id.startswith("m-")
        wait_source(api, agent.source_id, "Available")

        images = api.call("ecs", "DescribeImages", {"RegionId": "local", "ImageId": image_id})
        assert images["TotalCount"] == 1 and isinstance(images["TotalCount"], int)
        img = images["Images"]["Image"][0]
        assert (img["ImageId"], img["Status"]) == (image_id, "Available")
        assert img["ImageName"].startswith(image_name)
        assert isinstance(img["Size"], int) and img["Progress"] == "100%"
        mappings = img["DiskDeviceMappings"]["DiskDeviceMapping"]
        assert len(mappings) == 1 and isinstance(mappings[0]["Size"], str)

        task_id = api.call("ecs", "ExportImage",
                           {"RegionId": "local", "ImageId": image_id, "OSSBucket": "exports",
                            "OSSPrefix": "sdk/", "ImageFormat": "raw"})["TaskId"]

        def finished():
            t = api.call("ecs", "DescribeTaskAttribute", {"RegionId": "local", "TaskId": task_id})
            assert t["TaskStatus"] in ("Processing", "Finished"), t
            return t if t["TaskStatus"] == "Finished" else None

        t = wait_for(f"export task {task_id}", finished, timeout=180, interval=0.5)
        assert t["TaskAction"] == "ExportImage" and t["TaskProcess"] == "100%"
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", t["FinishedTime"])
        # Where the export lands is documented (<data-dir>/buckets/<bucket>/<prefix><image>_disk<N>.<fmt>);
        # Ferry also reports it in the task's Result.
        expected = server.data_dir / "buckets" / "exports" / "sdk" / f"{image_id}_disk0.raw"
        if gen_name == "v1":
            assert [Path(f) for f in json.loads(t["Result"])["Files"]] == [expected]
        else:
            # The v3 response models keep only the fields ECS documents: Ferry's extra Result is dropped.
            assert "Result" not in t
        assert same_file(expected, agent.disk), "the exported raw image differs from the source disk"

        tasks = api.call("ecs", "DescribeTasks", {"RegionId": "local", "TaskAction": "ExportImage"})
        assert task_id in [x["TaskId"] for x in tasks["TaskSet"]["Task"]]
    finally:
        agent.stop()
