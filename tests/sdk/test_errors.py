"""Gateway errors as the SDKs see them (reference §1.4-§1.6, §1.9): bad signatures, stale timestamps, reused
nonces, unknown keys, missing and invalid parameters, invalid state transitions, XML, and bad input that must
never crash the server or change its state.

Where a scenario needs a request an SDK would never send (a stale timestamp, a reused nonce), the SDK's own
clock / nonce function is monkeypatched, so the request is still built and signed by the SDK itself.
"""

from __future__ import annotations

import random
import string
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

import pytest
import requests

from ferry_sdk import GENERATIONS, V1, V3, ApiFailure, V3Sig1, job

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def utc(delta: timedelta) -> str:
    return (datetime.now(timezone.utc) + delta).strftime("%Y-%m-%dT%H:%M:%SZ")


def patch_clock(monkeypatch, gen: str, value):
    """Makes the SDK of `gen` sign with timestamp `value()`."""
    if gen == "v1":
        from aliyunsdkcore.utils import parameter_helper

        monkeypatch.setattr(parameter_helper, "get_iso_8061_date", value)
    else:
        from alibabacloud_tea_openapi.utils import Utils

        monkeypatch.setattr(Utils, "get_timestamp", staticmethod(value))


def patch_nonce(monkeypatch, gen: str, value: str):
    if gen == "v1":
        from aliyunsdkcore.utils import parameter_helper

        monkeypatch.setattr(parameter_helper, "get_uuid", lambda: value)
    else:
        from alibabacloud_tea_openapi.utils import Utils

        monkeypatch.setattr(Utils, "get_nonce", staticmethod(lambda: value))


def source_state(api, source_id: str) -> str:
    return api.call("smc", "DescribeSourceServers", {"SourceId": [source_id]})["SourceServers"]["SourceServer"][0][
        "State"]


def call_fails(api, action="DescribeSourceServers", params=None, product="smc") -> ApiFailure:
    with pytest.raises(ApiFailure) as e:
        api.call(product, action, params or {})
    return e.value


# ---------------------------------------------------------------------------------------------------------
# Signatures and credentials


def test_wrong_secret(gen, server):
    ak, _ = server.root_key
    e = call_fails(GENERATIONS[gen](server, ak, "not-the-secret"))
    assert e.status == 400
    if gen == "v1":
        # The v1 core compares the server's string to sign (after the first ':' of Message) with its own and,
        # when they are equal, renames the error: this only works if Ferry's message has that shape (§1.4).
        assert e.code == "InvalidAccessKeySecret", e
        assert e.raw.get_error_msg().startswith("The AccessKeySecret is incorrect")
    else:
        assert e.code == "SignatureDoesNotMatch", e
        assert ":" in e.message
        server_sts = e.message.split(":", 1)[1]
        expected_prefix = "ACS3-HMAC-SHA256\n" if gen == "v3" else "POST&%2F&"
        assert server_sts.startswith(expected_prefix), e.message


def test_unknown_access_key(gen, server):
    e = call_fails(GENERATIONS[gen](server, "LTAIdoesnotexist000000", "whatever"))
    assert (e.status, e.code) == (404, "InvalidAccessKeyId.NotFound"), e


@pytest.mark.parametrize("skew", [timedelta(minutes=-20), timedelta(minutes=20)], ids=["past", "future"])
def test_stale_timestamp(gen, server, monkeypatch, skew):
    api = GENERATIONS[gen](server, *server.root_key)
    patch_clock(monkeypatch, gen, lambda: utc(skew))
    e = call_fails(api)
    assert (e.status, e.code) == (400, "InvalidTimeStamp.Expired"), e


def test_timestamp_within_skew_is_accepted(gen, server, monkeypatch):
    api = GENERATIONS[gen](server, *server.root_key)
    patch_clock(monkeypatch, gen, lambda: utc(timedelta(minutes=-10)))
    assert "SourceServers" in api.call("smc", "DescribeSourceServers", {})


def test_malformed_timestamp(gen, server, monkeypatch):
    api = GENERATIONS[gen](server, *server.root_key)
    patch_clock(monkeypatch, gen, lambda: "2024-01-01 00:00:00")
    e = call_fails(api)
    assert (e.status, e.code) == (400, "InvalidTimeStamp.Format"), e


def test_reused_nonce(gen, server, monkeypatch):
    api = GENERATIONS[gen](server, *server.root_key)
    nonce = "".join(random.choices("0123456789abcdef", k=32))
    patch_nonce(monkeypatch, gen, nonce)
    api.call("smc", "ListAccessTokens", {})
    e = call_fails(api, "ListAccessTokens")
    assert (e.status, e.code) == (400, "SignatureNonceUsed"), e
    # Nonces are remembered per access key, whatever the signature scheme: the other generation is refused too.
    other = "v3" if gen == "v1" else "v1"
    patch_nonce(monkeypatch, other, nonce)
    e = call_fails(GENERATIONS[other](server, *server.root_key), "ListAccessTokens")
    assert e.code == "SignatureNonceUsed", e


TLS_PROBE = r"""
import sys
sys.path.insert(0, sys.argv[1])
from ferry_sdk import V1, V3, ApiFailure, Server

server = Server.__new__(Server)
server.port = int(sys.argv[2])
server.creds = {"ca_cert": sys.argv[3] if sys.argv[3] != "-" else None}
ak, secret = sys.argv[4], sys.argv[5]
api = (V1 if sys.argv[6] == "v1" else V3)(server, ak, secret)
try:
    api.call("smc", "DescribeSourceServers", {})
    print("CONNECTED")
except ApiFailure as e:
    print("API ERROR", e)
except Exception as e:
    print("CLIENT ERROR", type(e).__name__, e)
"""


@pytest.mark.parametrize("gen", ["v1", "v3"])
def test_tls_is_really_verified(server, gen):
    """The clients trust Ferry only because they are given its CA: without it the handshake must fail.
    Each probe runs in a fresh interpreter: the v3 core pools connections per host across clients."""
    import subprocess
    import sys
    from pathlib import Path

    def probe(ca: str) -> str:
        out = subprocess.run(
            [sys.executable, "-c", TLS_PROBE, str(Path(__file__).parent), str(server.port), ca,
             *server.root_key, gen],
            capture_output=True, text=True, timeout=120,
        )
        return out.stdout + out.stderr

    with_ca = probe(server.ca)
    assert "CONNECTED" in with_ca, with_ca
    # No CA given: the SDK falls back to the system trust store, which does not know Ferry's CA.
    without = probe("-")
    assert "CONNECTED" not in without and "CLIENT ERROR" in without, without
    assert "CERTIFICATE_VERIFY_FAILED" in without or "certificate" in without.lower(), without


# ---------------------------------------------------------------------------------------------------------
# Parameters and state transitions


def test_missing_parameter(api):
    e = call_fails(api, "StartReplicationJob")
    assert (e.status, e.code) == (400, "MissingParameter"), e
    assert '"JobId"' in e.message


def test_invalid_parameters(api):
    for params in ({"PageSize": 0}, {"PageSize": 51}, {"PageNumber": -1}):
        e = call_fails(api, "DescribeSourceServers", params)
        assert (e.status, e.code) == (400, "InvalidParameter"), (params, e)
    e = call_fails(api, "CreateAccessToken", {"Count": "many"})
    assert (e.status, e.code) == (400, "InvalidParameter"), e
    e = call_fails(api, "CreateReplicationJob", {"SourceId": "s-doesnotexist0000000", "RegionId": "local"})
    assert (e.status, e.code) == (404, "InvalidSourceId.NotFound"), e


def test_invalid_replication_parameters(api, agent):
    a = agent(seed=52, via=api)
    for bad in ("{not json", '{"compress_level":99}', "x" * 2049):
        e = call_fails(api, "CreateReplicationJob",
                       {"SourceId": a.source_id, "RegionId": "local", "ReplicationParameters": bad})
        assert (e.status, e.code) == (400, "InvalidParameter"), (bad[:20], e)
    e = call_fails(api, "CreateReplicationJob", {"SourceId": a.source_id, "RegionId": "local", "RunOnce": "maybe"})
    assert (e.status, e.code) == (400, "InvalidParameter"), e
    assert source_state(api, a.source_id) == "Available", "refused creates leave no job"


def test_invalid_state_transition(api, agent):
    a = agent(seed=51, via=api)
    jid = api.call("smc", "CreateReplicationJob", {"SourceId": a.source_id, "RegionId": "local"})["JobId"]
    e = call_fails(api, "StopReplicationJob", {"JobId": jid})
    assert (e.status, e.code) == (400, "ReplicationJob.InvalidStatus"), e
    # The documented message template names the current and the allowed statuses (§2.5).
    assert "Ready" in e.message and "can only be performed" in e.message, e.message
    assert job(api, jid)["Status"] == "Ready", "a refused transition must not change the job"


def test_unknown_action_and_version(server):
    from aliyunsdkcore.request import CommonRequest

    api = V1(server, *server.root_key)
    req = CommonRequest(domain=server.host, version="2019-06-01", action_name="LaunchRockets", product="smc")
    req.set_protocol_type("https")
    req.set_method("POST")
    with pytest.raises(ApiFailure) as e:
        api.send(req)
    assert (e.value.status, e.value.code) == (404, "InvalidAction.NotFound"), e.value
    req = CommonRequest(domain=server.host, version="1999-01-01", action_name="DescribeSourceServers", product="smc")
    req.set_protocol_type("https")
    req.set_method("POST")
    with pytest.raises(ApiFailure) as e:
        api.send(req)
    assert (e.value.status, e.value.code) == (400, "InvalidVersion"), e.value


def test_get_is_accepted_like_post(server):
    from aliyunsdksmc.request.v20190601.ListAccessTokensRequest import ListAccessTokensRequest

    api = V1(server, *server.root_key)
    req = ListAccessTokensRequest()
    req.set_endpoint(server.host)
    req.set_protocol_type("https")
    req.set_method("GET")
    assert "AccessTokens" in api.send(req)


# ---------------------------------------------------------------------------------------------------------
# XML


def raw_v1(api: V1, req):
    """Status, headers and body of a v1 request, without the core's JSON-forcing wrapper."""
    status, headers, body, exc = api.client._implementation_of_do_action(req)
    assert exc is None or status >= 400, exc
    return status, headers, body


def test_xml_format(server):
    from aliyunsdksmc.request.v20190601.DescribeSourceServersRequest import DescribeSourceServersRequest
    from aliyunsdksmc.request.v20190601.StartReplicationJobRequest import StartReplicationJobRequest

    api = V1(server, *server.root_key)
    req = DescribeSourceServersRequest()
    req.set_endpoint(server.host)
    req.set_protocol_type("https")
    req.set_accept_format("XML")
    status, headers, body = raw_v1(api, req)
    assert status == 200
    assert "xml" in headers["Content-Type"], headers
    root = ET.fromstring(body)
    assert root.tag == "DescribeSourceServersResponse"
    assert root.find("RequestId") is not None and root.find("TotalCount") is not None
    assert root.find("SourceServers") is not None

    req = StartReplicationJobRequest()
    req.set_endpoint(server.host)
    req.set_protocol_type("https")
    req.set_accept_format("XML")
    status, headers, body = raw_v1(api, req)
    assert status == 400
    assert headers["Content-Type"].replace(" ", "").lower() == "text/xml;charset=utf-8", headers
    root = ET.fromstring(body)
    assert root.tag == "Error" and root.findtext("Code") == "MissingParameter", body


# ---------------------------------------------------------------------------------------------------------
# Bad input: never a crash, never a 5xx, never a state change


def random_text(rng: random.Random, n: int) -> str:
    alphabet = string.printable + "äöü✓\u0000\u202e%+&=.;,"
    return "".join(rng.choice(alphabet) for _ in range(n))


def test_garbage_requests_never_crash_or_change_state(server):
    from aliyunsdkcore.auth.composer.rpc_signature_composer import get_signed_url

    api = V3(server, *server.root_key)
    before_tokens = api.call("smc", "ListAccessTokens", {})["TotalCount"]
    before_sources = api.call("smc", "DescribeSourceServers", {})["TotalCount"]
    before_jobs = api.call("smc", "DescribeReplicationJobs", {})["TotalCount"]
    ak, secret = server.root_key
    rng = random.Random(20240101)
    session = requests.Session()
    cases = 0
    deadline = time.monotonic() + 60
    for i in range(400):
        if time.monotonic() > deadline:
            break
        kind = i % 4
        headers = {}
        if kind == 0:  # unsigned random query bytes
            url = f"{server.endpoint}/?" + random_text(rng, rng.randint(0, 300))
            body = None
        elif kind == 1:  # random form body with random headers
            url = f"{server.endpoint}/"
            body = random_text(rng, rng.randint(0, 2000)).encode("utf-8", "surrogatepass")
            # Header values get visible characters only: control characters make the HTTP layer refuse the
            # request before the API sees it (a bare 400 without an envelope), which is not what this probes.
            auth = "".join(c for c in random_text(rng, 60) if c.isprintable() and ord(c) < 256)
            headers = {"Content-Type": "application/x-www-form-urlencoded",
                       "Authorization": "ACS3-HMAC-SHA256 " + auth}
        else:  # correctly signed by the SDK's own signer, with random parameters: reaches the actions
            action = rng.choice(["CreateReplicationJob", "StartReplicationJob", "DescribeSourceServers",
                                 "ModifyReplicationJobAttribute", "CreateAccessToken", "DeleteAccessToken",
                                 "DescribeReplicationJobs", "ListAccessTokens", "Nope"])
            params = {"Action": action, "Version": "2019-06-01", "RegionId": rng.choice(["local", "x", ""])}
            for _ in range(rng.randint(0, 8)):
                name = rng.choice(["JobId", "SourceId", "SourceId.1", "SourceId.0", "PageSize", "PageNumber",
                                   "Count", "TimeToLiveInDays", "RunOnce", "Frequency", "Name", "Tag.1.Key",
                                   "ReplicationParameters", "AccessTokenId", "DataDisk.99999999999.Size"])
                params[name] = rng.choice(["", "-1", "0", "99999999999999999999", "True", "true", "x" * 300,
                                           random_text(rng, 12), "j-" + random_text(rng, 8), "{}", "[]"])
            if action == "CreateAccessToken":
                params["Count"] = "x"  # keep the state unchanged: never a valid create
            if action in ("CreateReplicationJob", "DeleteAccessToken"):
                params["SourceId"] = "s-" + random_text(rng, 6)
                params["AccessTokenId"] = "at-" + random_text(rng, 6)
            url_path, _ = get_signed_url(params, ak, secret, "JSON", "POST", {})
            url = server.endpoint + url_path
            body = None
        try:
            # Per request: requests lets REQUESTS_CA_BUNDLE override a session-level `verify`.
            r = session.post(url, data=body, headers=headers, timeout=30, verify=server.ca)
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader, ValueError):
            continue  # the client refused to send it: nothing reached the server
        cases += 1
        assert r.status_code < 500, f"case {i}: {r.status_code} {r.text[:300]} for {url[:300]}"
        if r.status_code >= 400:
            try:
                envelope = r.json()
            except ValueError:
                raise AssertionError(f"case {i}: {r.status_code} {r.headers.get('content-type')} body {r.text[:300]!r}"
                                     f" is not the JSON error envelope; request {url[:300]!r}")
            assert envelope["Code"] and envelope["RequestId"] and "Message" in envelope, envelope
        assert server.alive(), f"the server died on case {i}:\n{server.log_tail()}"
    assert cases >= 200, f"only {cases} garbage requests were sent"
    print(f"{cases} garbage requests answered without a 5xx")
    assert api.call("smc", "ListAccessTokens", {})["TotalCount"] == before_tokens
    assert api.call("smc", "DescribeSourceServers", {})["TotalCount"] == before_sources
    assert api.call("smc", "DescribeReplicationJobs", {})["TotalCount"] == before_jobs


def test_sdk_generations_agree_on_a_listing(server):
    """The same call through every generation returns the same items (the SDK is the only difference)."""
    token = V1(server, *server.root_key).call("smc", "CreateAccessToken", {"Name": "agree"})["AccessTokenId"]
    seen = []
    for cls in (V1, V3, V3Sig1):
        got = cls(server, *server.root_key).call("smc", "ListAccessTokens", {"AccessTokenId": [token]})
        item = got["AccessTokens"]["AccessToken"][0]
        seen.append({k: item[k] for k in ("AccessTokenId", "Name", "Count", "Status", "CreationTime")})
    assert seen[0] == seen[1] == seen[2], seen
