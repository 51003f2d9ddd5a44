"""Hosts that share nothing but the services: the API in one network namespace, a worker in each of two
others, each "host" with its own hostname and SQUEEZE_HOME and no shared folder; PostgreSQL, Redis and an
S3 server (moto's) reached over a private test subnet on a bridge this test creates and removes. Jobs run
on both worker hosts; one host dies mid-job (every process in its namespace SIGKILLed) and its job
finishes on the other; the soak's checker finds nothing lost and nothing doubled."""

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.db.migrate import upgrade_to_head
from bench.soak import tally
from tests.conftest import S3_CREDENTIALS, S3Server, Stack, create_api_key, start_api_process, start_worker, upload
from tests.faults.conftest import FAST_LEASES, Cluster, PrivatePostgres, PrivateRedis, quick_job, slow_job, submit

HOSTS = ("api", "w1", "w2")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Subnet:
    """A bridge with the services' address, and one namespace per host plugged into it by a veth pair."""

    tag: str
    prefix: str  # e.g. "10.213.7", a /24

    @property
    def bridge(self) -> str:
        return f"sqzbr{self.tag}"

    @property
    def services_ip(self) -> str:
        return f"{self.prefix}.1"

    def ns(self, host: str) -> str:
        return f"sqz-{self.tag}-{host}"

    def ip_of(self, host: str) -> str:
        return f"{self.prefix}.{2 + HOSTS.index(host)}"

    def launcher(self, host: str) -> tuple[str, ...]:
        """Run a command on `host`: in its namespace, with its own hostname (a fresh UTS namespace)."""
        return ("ip", "netns", "exec", self.ns(host), "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                f"sqz-{host}")  # fmt: skip

    def create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.services_ip}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, host in enumerate(HOSTS):
            outside, inside = f"sqz{self.tag}o{i}", f"sqz{self.tag}i{i}"
            _ip("netns", "add", self.ns(host))
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", outside, "master", self.bridge, "up")
            _ip("link", "set", inside, "netns", self.ns(host))
            _ip("-n", self.ns(host), "addr", "add", f"{self.ip_of(host)}/24", "dev", inside)
            _ip("-n", self.ns(host), "link", "set", inside, "up")
            _ip("-n", self.ns(host), "link", "set", "lo", "up")

    def kill_host(self, host: str) -> list[int]:
        """SIGKILL every process in the host's namespace, as a power cut would."""
        out = subprocess.run(["ip", "netns", "pids", self.ns(host)], capture_output=True, text=True, check=True)
        pids = [int(p) for p in out.stdout.split()]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it exited on its own meanwhile
                os.kill(pid, signal.SIGKILL)
        return pids

    def destroy(self) -> None:
        for host in HOSTS:
            if Path(f"/run/netns/{self.ns(host)}").exists():
                self.kill_host(host)
            subprocess.run(["ip", "netns", "del", self.ns(host)], capture_output=True)
        # The kernel frees a namespace (and the veth end inside it) lazily: delete the pairs from outside.
        for i in range(len(HOSTS)):
            subprocess.run(["ip", "link", "del", f"sqz{self.tag}o{i}"], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


@dataclass
class Hosts:
    subnet: Subnet
    cluster: Cluster
    workers: dict[str, subprocess.Popen[bytes]]
    client: httpx.Client


@pytest.fixture()
def hosts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hosts]:
    assert os.geteuid() == 0 and shutil.which("ip") and shutil.which("unshare"), (
        "the multi-host test needs root, iproute2 and util-linux (ip netns, veth, unshare)"
    )
    for name, value in S3_CREDENTIALS.items():  # the test's own reads of the bucket (the checker)
        monkeypatch.setenv(name, value)
    subnet = Subnet(uuid.uuid4().hex[:4], f"10.{random.randint(200, 250)}.{random.randint(0, 255)}")
    root = Path(tempfile.mkdtemp(prefix="squeeze-hosts-"))
    logs = root / "logs"
    logs.mkdir()
    subnet.create()
    pg = PrivatePostgres(subnet.services_ip)
    redis = PrivateRedis(root, subnet.services_ip)
    s3: S3Server | None = None
    cluster: Cluster | None = None
    try:
        pg.start()
        redis.start()
        s3 = S3Server(logs / "moto.log", subnet.services_ip)
        database_url = pg.create_database("hosts")
        shared = {
            "QUEUE_PREFIX": f"h{uuid.uuid4().hex[:6]}-",
            "DATABASE_URL": database_url,
            "BROKER_URL": redis.url,
            **s3.env("hosts"),
            **FAST_LEASES,
        }
        homes = {host: root / host for host in HOSTS}
        for home in homes.values():
            home.mkdir()
        upgrade_to_head(database_url)
        api_env = {**os.environ, **shared, "SQUEEZE_HOME": str(homes["api"])}
        api, url = start_api_process(api_env, logs / "api.log", "/readyz", subnet.ip_of("api"), subnet.launcher("api"))
        stack = Stack(url, {**shared, "SQUEEZE_HOME": str(homes["api"])}, homes["api"], database_url, api, api)
        cluster = Cluster(stack, shared, logs, pg, redis)
        workers = {}
        for host in ("w1", "w2"):
            env = {**shared, "SQUEEZE_HOME": str(homes[host])}
            proc = start_worker(env, logs / f"{host}.log", host, subnet.launcher(host))
            proc.log = logs / f"{host}.log"  # type: ignore[attr-defined]
            cluster.workers.append(proc)
            workers[host] = proc
        for proc in workers.values():
            cluster.wait_ready(proc)
        token = create_api_key(database_url, "hosts")
        with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {token}"}) as client:
            yield Hosts(subnet, cluster, workers, client)
    finally:
        if cluster is not None:
            cluster.stop_workers()
            cluster.stack.api.kill()
        subnet.destroy()
        if s3 is not None:
            s3.stop()
        redis.stop()
        pg.destroy()


def _host_of(worker_id: str | None) -> str:
    """`sqz-w1:1234` -> `w1`: the worker id starts with the hostname its namespace was given."""
    return (worker_id or "").split(":")[0].removeprefix("sqz-")


def test_jobs_run_on_both_hosts_and_a_dead_host_hands_its_job_over(
    hosts: Hosts, mlp_onnx: Path, heavy_onnx: Path
) -> None:
    client, cluster = hosts.client, hosts.cluster
    mlp, heavy = upload(client, mlp_onnx)["id"], upload(client, heavy_onnx)["id"]
    quick = [submit(client, quick_job(mlp))["id"] for _ in range(6)]
    for job_id in quick:
        assert cluster.wait_done(client, job_id, 300)["status"] == "succeeded"
    ran_on = {_host_of(cluster.job_row(job_id)["worker"]) for job_id in quick}
    assert ran_on == {"w1", "w2"}, f"jobs ran only on {ran_on}: both worker hosts take jobs"

    slow = submit(client, slow_job(heavy))["id"]
    first = cluster.wait_running(slow, 1, 300)
    victim = _host_of(first["lease_owner"])
    assert victim in ("w1", "w2"), first["lease_owner"]
    assert hosts.subnet.kill_host(victim), f"host {victim} had no process to kill"
    survivor = "w2" if victim == "w1" else "w1"

    done = cluster.wait_done(client, slow, 300)
    assert done["status"] == "succeeded", done.get("error")
    assert done["attempts"] == 2, "the dead host's attempt was taken over once"
    assert _host_of(cluster.job_row(slow)["worker"]) == survivor, "the surviving host finished the job"
    artifact = next(a for a in client.get(f"/v1/jobs/{slow}/artifacts").json() if a["kind"] == "model")
    content = client.get(artifact["download_url"])
    assert content.status_code == 200 and len(content.content) == artifact["size_bytes"], "downloadable via S3"

    result = tally(cluster.database_url, cluster.stack.store(), [*quick, slow])
    print(f"many hosts: {dict(result.statuses)}, attempts {dict(result.attempts)}, lost {result.lost}, "
          f"doubled {result.doubled}, stored attempt folders {result.stored}, killed {victim}")  # fmt: skip
    assert result.lost == 0, f"{result.lost} jobs lost"
    assert result.doubled == 0, f"{result.doubled} jobs with two sets of artifacts"
    assert result.stored == result.jobs, "one stored attempt folder per job, in the bucket"
