"""Fixtures of the SDK scenario suite (see ferry_sdk.py for the harness itself).

* `server`: one `ferry server` for the whole session, for scenarios that only add state of their own.
* `fresh_server`: a factory of servers private to one test, for scenarios whose assertions depend on the
  whole server's state (RAM matrix, audit log, migration).
* `gen` / `api`: every scenario that takes `api` runs once per SDK generation: `v1` (aliyun-python-sdk-core),
  `v3` (ACS3-HMAC-SHA256) and `v3-sig1` (v3 client with signature_algorithm='v2'), as the root account.
* `agent`: an activated, heart-beating agent private to the test (its own sparse 32 MiB disk image).
"""

from __future__ import annotations

import pytest

from ferry_sdk import GENERATIONS, V1, V3, Server, new_agent


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("ferry-sdk")


def _start(path, servers):
    s = Server(path).start()
    servers.append(s)
    return s


@pytest.fixture(scope="session")
def server(workdir):
    servers: list[Server] = []
    s = _start(workdir / "server", servers)
    yield s
    for s in servers:
        s.stop()


@pytest.fixture
def fresh_server(tmp_path):
    servers: list[Server] = []
    counter = iter(range(1000))
    yield lambda: _start(tmp_path / f"server{next(counter)}", servers)
    for s in servers:
        s.stop()


@pytest.fixture(params=list(GENERATIONS))
def gen(request):
    return request.param


@pytest.fixture
def api(gen, server):
    return GENERATIONS[gen](server, *server.root_key)


@pytest.fixture
def v1(server):
    return V1(server, *server.root_key)


@pytest.fixture
def v3(server):
    return V3(server, *server.root_key)


@pytest.fixture
def agent(server, tmp_path):
    agents = []

    def make(seed: int = 1, size_mib: int = 32, via=None):
        a = new_agent(via or V3(server, *server.root_key), server, tmp_path, seed, size_mib)
        agents.append(a)
        return a

    yield make
    for a in agents:
        a.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the tail of the session server's log: most failures are explained there."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        s = item.funcargs.get("server")
        if isinstance(s, Server):
            report.sections.append(("ferry server log (tail)", s.log_tail()))


@pytest.fixture(scope="session")
def migrated(server, workdir):
    """A finished one-shot migration on the session server: (image_id, job_id, source disk path)."""
    from ferry_sdk import wait_job

    api = V3(server, *server.root_key)
    a = new_agent(api, server, workdir, seed=900, size_mib=32)
    try:
        jid = api.call("smc", "CreateReplicationJob", {"SourceId": a.source_id, "RegionId": "local"})["JobId"]
        api.call("smc", "StartReplicationJob", {"JobId": jid})
        j = wait_job(api, jid, ("Finished",), timeout=300)
    finally:
        a.stop()
    return j["ImageId"], jid, a.disk
