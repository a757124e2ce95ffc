"""RAM matrix (reference §3.2, §1.9): RAM users, access keys and policies made through aliyunsdkram, then SMC
and ECS calls by those users through both SDK generations, each expected to be allowed or refused with
403 Forbidden.RAM; explicit Deny wins over Allow; Detach takes a grant away; resource ARNs scope a grant;
STS AssumeRole hands out temporary credentials limited to the role's policies.

One server per test (RAM state is account-wide). STS has no package in requirements.txt: AssumeRole goes
through the v1 core's CommonRequest (product Sts, 2015-04-01), which is how v1 users call any API.
"""

from __future__ import annotations

import json

import pytest

from ferry_sdk import V1, V3, ApiFailure, V3Sig1, new_agent, unique

SMC_READ = {"Version": "1", "Statement": [
    {"Effect": "Allow", "Action": ["smc:Describe*", "smc:List*"], "Resource": "*"}]}
DENY_DESCRIBE_SOURCES = {"Version": "1", "Statement": [
    {"Effect": "Deny", "Action": "smc:DescribeSourceServers", "Resource": "*"}]}
ECS_IMAGES = {"Version": "1", "Statement": [
    {"Effect": "Allow", "Action": "ecs:DescribeImages", "Resource": "*"}]}


class Ram:
    """RAM administration as the root account, through aliyunsdkram (v1)."""

    def __init__(self, server):
        self.server = server
        self.root = V1(server, *server.root_key)
        self.account = server.creds["account_id"]

    def user_with_key(self) -> tuple[str, str, str]:
        name = unique("user-")
        got = self.root.call("ram", "CreateUser", {"UserName": name, "DisplayName": "sdk-suite-user"})
        u = got["User"]
        assert u["UserName"] == name and isinstance(u["UserId"], str) and isinstance(u["CreateDate"], str)
        key = self.root.call("ram", "CreateAccessKey", {"UserName": name})["AccessKey"]
        assert key["Status"] == "Active" and key["AccessKeySecret"] and key["AccessKeyId"] != self.server.root_key[0]
        return name, key["AccessKeyId"], key["AccessKeySecret"]

    def policy(self, document: dict) -> str:
        name = unique("policy-")
        got = self.root.call("ram", "CreatePolicy", {"PolicyName": name, "PolicyDocument": json.dumps(document),
                                                     "Description": "SDK suite"})["Policy"]
        assert (got["PolicyName"], got["PolicyType"], got["DefaultVersion"]) == (name, "Custom", "v1")
        return name

    def attach(self, policy: str, user: str):
        self.root.call("ram", "AttachPolicyToUser", {"PolicyType": "Custom", "PolicyName": policy, "UserName": user})

    def detach(self, policy: str, user: str):
        self.root.call("ram", "DetachPolicyFromUser",
                       {"PolicyType": "Custom", "PolicyName": policy, "UserName": user})


def allowed(api, product: str, action: str, params: dict | None = None) -> bool:
    try:
        api.call(product, action, params or {})
        return True
    except ApiFailure as e:
        if e.status == 403:
            assert e.code == "Forbidden.RAM", e
            return False
        raise


@pytest.fixture
def ram(fresh_server):
    return Ram(fresh_server())


@pytest.mark.parametrize("cls", [V1, V3, V3Sig1], ids=["v1", "v3", "v3-sig1"])
def test_policy_matrix(ram, cls):
    user, ak, secret = ram.user_with_key()
    api = cls(ram.server, ak, secret)
    describe = ("smc", "DescribeSourceServers")
    tokens = ("smc", "ListAccessTokens")
    create = ("smc", "CreateAccessToken", {"Count": "1"})
    images = ("ecs", "DescribeImages", {"RegionId": "local"})

    # Nothing is allowed by default.
    assert [allowed(api, *c) for c in (describe, tokens, create, images)] == [False] * 4
    read = ram.policy(SMC_READ)
    ram.attach(read, user)
    assert [allowed(api, *c) for c in (describe, tokens, create, images)] == [True, True, False, False]
    # An explicit Deny wins over the Allow.
    deny = ram.policy(DENY_DESCRIBE_SOURCES)
    ram.attach(deny, user)
    assert [allowed(api, *c) for c in (describe, tokens)] == [False, True]
    ram.detach(deny, user)
    assert allowed(api, *describe)
    # ECS grants are separate.
    ram.attach(ram.policy(ECS_IMAGES), user)
    assert allowed(api, *images)
    assert not allowed(api, "ecs", "ExportImage", {"RegionId": "local", "ImageId": "m-x", "OSSBucket": "exports"})
    ram.detach(read, user)
    assert [allowed(api, *c) for c in (describe, tokens, images)] == [False, False, True]


def test_denial_envelope_names_the_action(ram):
    user, ak, secret = ram.user_with_key()
    with pytest.raises(ApiFailure) as e:
        V3(ram.server, ak, secret).call("smc", "CreateAccessToken", {})
    assert (e.value.status, e.value.code) == (403, "Forbidden.RAM")
    assert "smc:CreateAccessToken" in e.value.message
    detail = e.value.raw.data.get("AccessDeniedDetail")
    if detail is not None:  # optional (§1.9); when present it must have the documented shape
        assert detail["AuthAction"] == "smc:CreateAccessToken" and detail["NoPermissionType"] == "ImplicitDeny"


def test_resource_scoped_grant(ram, tmp_path):
    root = V3(ram.server, *ram.server.root_key)
    mine = new_agent(root, ram.server, tmp_path, seed=61)
    try:
        jid = root.call("smc", "CreateReplicationJob", {"SourceId": mine.source_id, "RegionId": "local"})["JobId"]
    finally:
        mine.stop()
    user, ak, secret = ram.user_with_key()
    other = {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "smc:StopReplicationJob",
                                            "Resource": f"acs:smc:*:{ram.account}:replicationJob/j-someoneelse"}]}
    ram.attach(ram.policy(other), user)
    api = V1(ram.server, ak, secret)
    assert not allowed(api, "smc", "StopReplicationJob", {"JobId": jid})
    this = {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "smc:StopReplicationJob",
                                           "Resource": f"acs:smc:*:{ram.account}:replicationJob/{jid}"}]}
    ram.attach(ram.policy(this), user)
    # Now authorized: the job itself refuses (it is Ready), which proves the call got past RAM.
    with pytest.raises(ApiFailure) as e:
        api.call("smc", "StopReplicationJob", {"JobId": jid})
    assert e.value.code == "ReplicationJob.InvalidStatus", e.value


def test_ram_errors(ram):
    user, ak, secret = ram.user_with_key()
    with pytest.raises(ApiFailure) as e:
        ram.root.call("ram", "CreateUser", {"UserName": user})
    assert (e.value.status, e.value.code) == (409, "EntityAlreadyExists.User"), e.value
    with pytest.raises(ApiFailure) as e:
        ram.root.call("ram", "CreatePolicy", {"PolicyName": unique("bad-"), "PolicyDocument": "{not json"})
    assert (e.value.status, e.value.code) == (400, "MalformedPolicyDocument"), e.value
    with pytest.raises(ApiFailure) as e:
        ram.root.call("ram", "AttachPolicyToUser", {"PolicyType": "Custom", "PolicyName": "nope", "UserName": user})
    assert (e.value.status, e.value.code) == (404, "EntityNotExist.Policy"), e.value
    # A user without RAM permissions cannot administer RAM.
    with pytest.raises(ApiFailure) as e:
        V1(ram.server, ak, secret).call("ram", "CreateUser", {"UserName": unique("x-")})
    assert e.value.status == 403 and e.value.code in ("NoPermission", "Forbidden.RAM"), e.value


def test_disabled_key_is_refused(ram):
    user, ak, secret = ram.user_with_key()
    ram.attach(ram.policy(SMC_READ), user)
    api = V3(ram.server, ak, secret)
    assert allowed(api, "smc", "DescribeSourceServers")
    ram.root.call("ram", "UpdateAccessKey", {"UserName": user, "UserAccessKeyId": ak, "Status": "Inactive"})
    with pytest.raises(ApiFailure) as e:
        api.call("smc", "DescribeSourceServers", {})
    assert (e.value.status, e.value.code) == (400, "InvalidAccessKeyId.Inactive"), e.value


def assume_role(server, ak, secret, role_arn: str) -> dict:
    from aliyunsdkcore.request import CommonRequest

    req = CommonRequest(domain=server.host, version="2015-04-01", action_name="AssumeRole", product="Sts")
    req.set_protocol_type("https")
    req.set_method("POST")
    req.add_query_param("RoleArn", role_arn)
    req.add_query_param("RoleSessionName", "sdk-suite")
    req.add_query_param("DurationSeconds", "900")
    return V1(server, ak, secret).send(req)


def test_sts_assume_role(ram):
    role = unique("role-")
    trust = {"Version": "1", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                            "Principal": {"RAM": [f"acs:ram::{ram.account}:root"]}}]}
    made = ram.root.call("ram", "CreateRole", {"RoleName": role, "AssumeRolePolicyDocument": json.dumps(trust)})
    arn = made["Role"]["Arn"]
    assert arn == f"acs:ram::{ram.account}:role/{role}"
    ram.root.call("ram", "AttachPolicyToRole",
                  {"PolicyType": "Custom", "PolicyName": ram.policy(SMC_READ), "RoleName": role})
    user, ak, secret = ram.user_with_key()
    # The user may assume roles only with a grant for it.
    with pytest.raises(ApiFailure) as e:
        assume_role(ram.server, ak, secret, arn)
    assert e.value.status == 403, e.value
    ram.attach(ram.policy({"Version": "1", "Statement": [
        {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": arn}]}), user)
    creds = assume_role(ram.server, ak, secret, arn)["Credentials"]
    for k in ("AccessKeyId", "AccessKeySecret", "SecurityToken", "Expiration"):
        assert isinstance(creds[k], str) and creds[k], k
    tmp = (creds["AccessKeyId"], creds["AccessKeySecret"])
    for api in (V1(ram.server, *tmp, token=creds["SecurityToken"]), V3(ram.server, *tmp, token=creds["SecurityToken"])):
        assert allowed(api, "smc", "DescribeSourceServers")
        assert not allowed(api, "smc", "CreateAccessToken", {"Count": "1"})
    with pytest.raises(ApiFailure) as e:
        V3(ram.server, *tmp, token=creds["SecurityToken"][:-4] + "AAAA").call("smc", "DescribeSourceServers", {})
    assert e.value.status == 400 and e.value.code.startswith("InvalidSecurityToken"), e.value


def denial_events(ram, ak: str) -> list[dict]:
    """The audit trail's Forbidden.RAM events for calls signed with `ak`."""
    got = ram.root.call("actiontrail", "LookupEvents", {
        "LookupAttribute": [{"Key": "EventAccessKeyId", "Value": ak}], "MaxResults": "50"})
    return [e for e in got["Events"] if e.get("errorCode") == "Forbidden.RAM"]


def test_system_policies_source_scope_conditions_and_audit(ram, tmp_path):
    """The issue's RAM matrix: a full-access user, a read-only user, a user denied one action, a user limited to
    one source server's ARN, SourceIp and MFAPresent conditions; every allowed call succeeds, every denied call
    gets Forbidden.RAM and leaves an audit event naming it."""
    root = V3(ram.server, *ram.server.root_key)
    mine, other = (new_agent(root, ram.server, tmp_path, seed=s) for s in (71, 72))
    try:
        def user_with(*policies: tuple[str, str]):
            name, ak, secret = ram.user_with_key()
            for kind, policy in policies:
                ram.root.call("ram", "AttachPolicyToUser", {"PolicyType": kind, "PolicyName": policy,
                                                             "UserName": name})
            return ak, V1(ram.server, ak, secret)

        rename = lambda sid: ("smc", "ModifySourceServerAttribute", {"SourceId": sid, "Description": unique("d")})
        describe_one = lambda sid: ("smc", "DescribeSourceServers", {"SourceId": [sid]})
        cases = []  # (access key, call, expected allowed)

        full_ak, full = user_with(("System", "AliyunSMCFullAccess"))
        cases += [(full_ak, full, ("smc", "CreateAccessToken", {"Count": "1"}), True),
                  (full_ak, full, rename(mine.source_id), True)]
        ro_ak, ro = user_with(("System", "AliyunSMCReadOnlyAccess"))
        cases += [(ro_ak, ro, ("smc", "DescribeSourceServers", {}), True),
                  (ro_ak, ro, ("smc", "ListAccessTokens", {}), True),
                  (ro_ak, ro, ("smc", "CreateAccessToken", {"Count": "1"}), False),
                  (ro_ak, ro, rename(mine.source_id), False)]
        deny_ak, deny_one = user_with(("System", "AliyunSMCFullAccess"), ("Custom", ram.policy(DENY_DESCRIBE_SOURCES)))
        cases += [(deny_ak, deny_one, ("smc", "DescribeSourceServers", {}), False),
                  (deny_ak, deny_one, ("smc", "ListAccessTokens", {}), True)]
        arn = f"acs:smc:*:{ram.account}:sourceServer/{mine.source_id}"
        scoped_ak, scoped = user_with(("Custom", ram.policy({"Version": "1", "Statement": [{
            "Effect": "Allow", "Action": ["smc:DescribeSourceServers", "smc:ModifySourceServerAttribute"],
            "Resource": arn}]})))
        cases += [(scoped_ak, scoped, rename(mine.source_id), True),
                  (scoped_ak, scoped, rename(other.source_id), False),
                  (scoped_ak, scoped, describe_one(mine.source_id), True),
                  (scoped_ak, scoped, describe_one(other.source_id), False),
                  (scoped_ak, scoped, ("smc", "DescribeSourceServers", {}), False)]

        def conditional(condition: dict) -> str:
            return ram.policy({"Version": "1", "Statement": [{
                "Effect": "Allow", "Action": "smc:Describe*", "Resource": "*", "Condition": condition}]})

        far_ak, far = user_with(("Custom", conditional({"IpAddress": {"acs:SourceIp": ["10.0.0.0/8"]}})))
        near_ak, near = user_with(("Custom", conditional({"IpAddress": {"acs:SourceIp": ["127.0.0.0/8"]}})))
        mfa_ak, mfa = user_with(("Custom", conditional({"Bool": {"acs:MFAPresent": "true"}})))
        cases += [(far_ak, far, ("smc", "DescribeSourceServers", {}), False),
                  (near_ak, near, ("smc", "DescribeSourceServers", {}), True),
                  # Access keys are never MFA-authenticated sessions.
                  (mfa_ak, mfa, ("smc", "DescribeSourceServers", {}), False)]

        outcomes = [(ak, call, allowed(api, *call)) for ak, api, call, _ in cases]
        assert [o[2] for o in outcomes] == [c[3] for c in cases], outcomes
        for ak, call, ok in outcomes:
            if not ok:
                names = [e["eventName"] for e in denial_events(ram, ak)]
                assert call[1] in names, (ak, call, names)
    finally:
        mine.stop()
        other.stop()
