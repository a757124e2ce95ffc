"""ActionTrail 2020-07-06 LookupEvents through aliyunsdkactiontrail (reference §3.3): the calls just made are
in the audit log, with the documented event fields, failures included, and no secret anywhere in them.
(There is no v3 ActionTrail package in requirements.txt; the v1 SDK is the one the issue names.)
"""

from __future__ import annotations

import json
import re

from ferry_sdk import V1, V3, ApiFailure, unique, wait_for

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def lookup(api: V1, attributes: list[dict], **extra) -> dict:
    return api.call("actiontrail", "LookupEvents", {"LookupAttribute": attributes, **extra})


def test_lookup_events_records_calls_without_secrets(fresh_server):
    server = fresh_server()
    v1 = V1(server, *server.root_key)
    made = V3(server, *server.root_key).call("smc", "CreateAccessToken", {"Name": unique("audited"), "Count": "2"})
    try:
        v1.call("smc", "StartReplicationJob", {})
    except ApiFailure as e:
        failed_request = e.request_id
    else:
        raise AssertionError("StartReplicationJob without JobId must fail")

    def events_named(name: str):
        got = lookup(v1, [{"Key": "EventName", "Value": name}])
        assert isinstance(got["Events"], list), "Events is a JSON array (§3.3)"
        return got["Events"] or None

    created = wait_for("the CreateAccessToken event", lambda: events_named("CreateAccessToken"), timeout=30)
    got = lookup(v1, [{"Key": "EventName", "Value": "CreateAccessToken"}])
    for k in ("RequestId", "StartTime", "EndTime"):
        assert isinstance(got[k], str), k
    e = next(x for x in created if x["requestId"] == made["RequestId"])
    assert GUID.match(e["eventId"])
    assert (e["eventName"], e["eventType"], e["eventRW"], e["serviceName"].lower()) == (
        "CreateAccessToken", "ApiCall", "Write", "smc")
    assert e["apiVersion"] == "2019-06-01" and e["eventVersion"] == "1"
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", e["eventTime"])
    assert e["userIdentity"]["accessKeyId"] == server.root_key[0]
    assert e["sourceIpAddress"] == "127.0.0.1"

    failed = wait_for("the failed call's event", lambda: [
        x for x in (events_named("StartReplicationJob") or []) if x["requestId"] == failed_request], timeout=30)
    assert failed[0]["errorCode"] == "MissingParameter"

    # Secrets never reach the audit log: not the activation code returned, not any access key secret.
    everything = json.dumps(lookup(v1, [], MaxResults="50"))
    assert made["AccessTokenCode"] not in everything
    assert server.root_key[1] not in everything

    # Filters: by access key, read/write, and the 1-2 attribute limit.
    mine = lookup(v1, [{"Key": "EventAccessKeyId", "Value": server.root_key[0]},
                       {"Key": "EventRW", "Value": "Write"}])["Events"]
    assert mine and all(x["eventRW"] == "Write" for x in mine)
    try:
        lookup(v1, [{"Key": "EventName", "Value": "A"}, {"Key": "EventRW", "Value": "Read"},
                    {"Key": "User", "Value": "x"}])
    except ApiFailure as err:
        assert (err.status, err.code) == (400, "InvalidParameter"), err
    else:
        raise AssertionError("three LookupAttributes must be refused (1-2 allowed)")
