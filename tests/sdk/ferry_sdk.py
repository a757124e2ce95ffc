"""Harness for the SDK scenario suite: real `ferry server` and `ferry-agent` processes, and the official
Alibaba Cloud Python SDKs of both generations pointed at them.

* `Server` starts `target/debug/ferry server` in its own temp data dir on a free loopback port and reads
  `root-credentials.json` (endpoint, root AccessKey, CA certificate path and fingerprint).
* `Agent` activates `target/debug/ferry-agent` with an activation code made through the SDK, on a small
  sparse raw disk image, and runs its daemon.
* `V1`, `V3` and `V3Sig1` call any action the same way through the SDK's own request classes:
  `aliyunsdk<product>.request.<ver>.<Action>Request` + `AcsClient.do_action_with_exception` (v1),
  `alibabacloud_<product>.client.Client.<action>_with_options` with `models.<Action>Request` (v3, ACS3
  signature), and the same v3 client with `signature_algorithm='v2'` (HMAC-SHA1 query signature).
  Parameters are given once, in wire names (`{"SourceId": ["s-1"], "Tag": [{"Key": "k", "Value": "v"}]}`);
  each adapter feeds them to the SDK's own setters / models, so the SDK does its own flattening.
  SDK errors are re-raised as `ApiFailure(status, code, message, request_id, raw)`, with `raw` the SDK's own
  exception for tests that check exactly what the SDK raises.

TLS is verified for real: both generations are given Ferry's CA certificate (`AcsClient(verify=ca)`,
`Config(ca=ca)`); nothing here disables certificate checks.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("FERRY_BIN_DIR", REPO / "target" / "debug"))
REGION = "local"

# API versions per product (reference §1.1).
VERSIONS = {
    "smc": "2019-06-01",
    "ecs": "2014-05-26",
    "ram": "2015-05-01",
    "actiontrail": "2020-07-06",
    "sts": "2015-04-01",
}


def binary(name: str) -> Path:
    path = BIN_DIR / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `cargo build -p ferry -p ferry-agent` first")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2):
    """Polls `check` until it returns something truthy or the deadline passes (then fails, naming `what`)."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except ApiFailure as e:  # a transient API error while polling is reported if the wait fails
            last_error = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


# ---------------------------------------------------------------------------------------------------------
# Processes


class Server:
    """A `ferry server` process with its own data directory, listening on a free loopback port."""

    def __init__(self, data_dir: Path, extra_args: list[str] | None = None):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None
        self.creds: dict = {}

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}"

    @property
    def ca(self) -> str:
        return self.creds["ca_cert"]

    @property
    def ca_fingerprint(self) -> str:
        return self.creds["ca_fingerprint"]

    @property
    def root_key(self) -> tuple[str, str]:
        return self.creds["access_key_id"], self.creds["access_key_secret"]

    def start(self) -> "Server":
        log = open(self.data_dir / "server.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(binary("ferry")), "server",
                "--data-dir", str(self.data_dir),
                "--listen", self.host,
                "--heartbeat-interval", "1",
                *self.extra_args,
            ],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
        log.close()
        creds_file = self.data_dir / "root-credentials.json"

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"ferry server exited with {self.proc.returncode}:\n{self.log_tail()}")
            if not creds_file.exists():
                return False
            self.creds = json.loads(creds_file.read_text())
            # The credentials file is written before the listener is up: wait for a real answer.
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for("ferry server to answer", ready, timeout=90)
        assert self.creds.get("version") == 1, f"unknown root-credentials.json format: {self.creds}"
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 60) -> str:
        try:
            lines = (self.data_dir / "server.log").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])


def make_disk(path: Path, size_mib: int = 32, seed: int = 1) -> Path:
    """A sparse raw disk image: random 1 MiB blocks and text at scattered offsets, holes elsewhere."""
    import random

    rng = random.Random(seed)
    mib = 1 << 20
    with open(path, "wb") as f:
        f.truncate(size_mib * mib)
        for block in (0, 3, 4, 11, size_mib - 1):
            f.seek(block * mib)
            f.write(rng.randbytes(mib))
        f.seek(7 * mib + 4096)
        f.write(("Ferry SDK scenario disk, seed %d\n" % seed).encode() * 2000)
        f.seek(20 * mib + 123)
        f.write("unaligned text: ünïcode ✓\n".encode() * 500)
    return path


class Agent:
    """A `ferry-agent activate ... --run` process for one raw disk image."""

    def __init__(self, server: Server, state_dir: Path, disk: Path, code: str):
        self.server = server
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.disk = disk
        log = open(self.state_dir / "agent.log", "ab")
        self.proc = subprocess.Popen(
            [
                str(binary("ferry-agent")), "activate",
                "--server", server.endpoint,
                "--code", code,
                "--ca-fingerprint", server.ca_fingerprint,
                "--state-dir", str(self.state_dir),
                "--disk-image", str(disk),
                "--run",
            ],
            stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info")},
        )
        log.close()
        self.source_id = wait_for("the agent to register", self._registered, timeout=60)

    def _registered(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"ferry-agent exited with {self.proc.returncode}:\n{self.log_tail()}")
        state = self.state_dir / "agent.json"
        if not state.exists():
            return None
        return json.loads(state.read_text())["credentials"]["source_id"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n: int = 40) -> str:
        try:
            lines = (self.state_dir / "agent.log").read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        return "\n".join(lines[-n:])


# ---------------------------------------------------------------------------------------------------------
# SDK adapters


class ApiFailure(Exception):
    """An error answer, as the SDK reported it."""

    def __init__(self, status: int | None, code: str, message: str, request_id: str | None, raw: Exception):
        super().__init__(f"{status} {code}: {message} (RequestId {request_id})")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.raw = raw


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class V1:
    """The v1 SDK: `aliyun-python-sdk-core` `AcsClient` + `aliyunsdk<product>` request classes."""

    name = "v1"

    def __init__(self, server: Server, ak: str, secret: str, region: str = REGION, token: str | None = None):
        from aliyunsdkcore.auth.credentials import StsTokenCredential
        from aliyunsdkcore.client import AcsClient

        self.server = server
        options = dict(auto_retry=False, timeout=60, connect_timeout=10, verify=server.ca)
        if token is None:
            self.client = AcsClient(ak, secret, region, **options)
        else:
            self.client = AcsClient(region_id=region, credential=StsTokenCredential(ak, secret, token), **options)

    def request(self, product: str, action: str, params: dict | None = None):
        version = "v" + VERSIONS[product].replace("-", "")
        module = importlib.import_module(f"aliyunsdk{product}.request.{version}.{action}Request")
        req = getattr(module, f"{action}Request")()
        req.set_endpoint(self.server.host)
        req.set_protocol_type("https")
        for key, value in (params or {}).items():
            plural = getattr(req, f"set_{key}s", None)
            single = getattr(req, f"set_{key}", None)
            if isinstance(value, list) and plural is not None:
                plural(value)
            elif single is not None:
                single(value)
            elif key == "RegionId":
                # Most v1 request classes have no RegionId setter: the core sends the client's region unless
                # the request carries one, which is how v1 users pick another region per call.
                req.add_query_param("RegionId", value)
            else:
                raise AttributeError(f"the v1 {action}Request has no setter for {key}")
        return req

    def send(self, req) -> dict:
        from aliyunsdkcore.acs_exception.exceptions import ServerException

        try:
            body = self.client.do_action_with_exception(req)
        except ServerException as e:
            raise ApiFailure(e.get_http_status(), e.get_error_code(), e.get_error_msg(), e.get_request_id(), e) from e
        return json.loads(body)

    def call(self, product: str, action: str, params: dict | None = None) -> dict:
        return self.send(self.request(product, action, params))


class V3:
    """The v3 SDK (`alibabacloud_<product>`, Tea/Darabonba), ACS3-HMAC-SHA256 signature."""

    name = "v3"
    signature_algorithm: str | None = None

    PACKAGES = {"smc": "alibabacloud_smc20190601", "ecs": "alibabacloud_ecs20140526"}

    def __init__(self, server: Server, ak: str, secret: str, region: str = REGION, token: str | None = None):
        self.server = server
        self.ak, self.secret, self.region, self.token = ak, secret, region, token
        self.clients: dict[str, Any] = {}

    def config(self):
        from alibabacloud_tea_openapi import models as open_api_models

        cfg = open_api_models.Config(
            access_key_id=self.ak,
            access_key_secret=self.secret,
            security_token=self.token,
            endpoint=self.server.host,
            protocol="https",
            region_id=self.region,
            ca=self.server.ca,
            read_timeout=60000,
            connect_timeout=10000,
        )
        if self.signature_algorithm:
            cfg.signature_algorithm = self.signature_algorithm
        return cfg

    def client(self, product: str):
        if product not in self.clients:
            package = self.PACKAGES.get(product)
            if package is None:
                raise NotImplementedError(f"no v3 SDK package for {product} in requirements.txt")
            module = importlib.import_module(f"{package}.client")
            self.clients[product] = module.Client(self.config())
        return self.clients[product]

    def call(self, product: str, action: str, params: dict | None = None) -> dict:
        from darabonba.exceptions import DaraException
        from darabonba.runtime import RuntimeOptions

        models = importlib.import_module(f"{self.PACKAGES[product]}.models")
        req = getattr(models, f"{action}Request")().from_map(params or {})
        method = getattr(self.client(product), f"{snake(action)}_with_options")
        try:
            resp = method(req, RuntimeOptions(autoretry=False))
        except DaraException as e:
            data = e.data if isinstance(e.data, dict) else {}
            status = getattr(e, "status_code", None) or data.get("statusCode")
            request_id = getattr(e, "request_id", None) or data.get("RequestId")
            # e.message is the SDK's summary ("code: 400, <Message> request id: ..."); keep the server's own.
            message = data.get("Message", e.message)
            raise ApiFailure(status, e.code, message, request_id, e) from e
        assert resp.status_code == 200, resp.status_code
        return resp.body.to_map()


class V3Sig1(V3):
    """The v3 SDK with `signature_algorithm='v2'`: parameters and HMAC-SHA1 signature in the query."""

    name = "v3-sig1"
    signature_algorithm = "v2"


GENERATIONS = {"v1": V1, "v3": V3, "v3-sig1": V3Sig1}


# ---------------------------------------------------------------------------------------------------------
# Scenario helpers (through whichever SDK `api` is)


def new_agent(api, server: Server, workdir: Path, seed: int = 1, size_mib: int = 32) -> Agent:
    """An activation code made through the SDK, an agent activated with it, its source Available."""
    made = api.call("smc", "CreateAccessToken", {"Name": f"agent-{seed}", "Count": "1"})
    d = Path(tempfile.mkdtemp(prefix=f"agent{seed}-", dir=workdir))
    disk = make_disk(d / "disk.img", size_mib, seed)
    agent = Agent(server, d / "state", disk, made["AccessTokenCode"])
    wait_source(api, agent.source_id, "Available")
    return agent


def source(api, source_id: str) -> dict | None:
    got = api.call("smc", "DescribeSourceServers", {"SourceId": [source_id]})
    items = got["SourceServers"]["SourceServer"]
    return items[0] if items else None


def wait_source(api, source_id: str, state: str, timeout: float = 60) -> dict:
    return wait_for(
        f"source {source_id} to be {state}",
        lambda: (s := source(api, source_id)) and s["State"] == state and s,
        timeout=timeout,
    )


def job(api, job_id: str) -> dict | None:
    got = api.call("smc", "DescribeReplicationJobs", {"JobId": [job_id]})
    items = got["ReplicationJobs"]["ReplicationJob"]
    return items[0] if items else None


def wait_job(api, job_id: str, statuses: tuple[str, ...], timeout: float = 180) -> dict:
    def check():
        j = job(api, job_id)
        if j is None:
            return None
        if j["Status"] in statuses:
            return j
        if j["Status"] == "InError" and "InError" not in statuses:
            raise AssertionError(f"job {job_id} failed: {j.get('ErrorCode')} {j.get('StatusInfo')}")
        return None

    return wait_for(f"job {job_id} to reach {statuses}", check, timeout=timeout, interval=0.5)


def same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def unique(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def rmtree(path: Path):
    shutil.rmtree(path, ignore_errors=True)
