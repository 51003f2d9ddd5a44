"""Fault-injection fixtures: a private PostgreSQL cluster and a private Redis (ours to restart; the
machine's shared ones are never touched), one API on them, and workers each test starts, kills, stops
and pauses. Leases, heartbeats and sweeps are shortened through the environment.
"""

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ISOLATED, Stack, _free_port, start_api_process, start_worker, upload

# A 10 s lease renewed every second: short enough to keep take-overs quick, long enough that a loaded
# 2-core CI machine (a job's torch threads on both cores) does not lapse a live lease by starving its renewal.
FAST_LEASES = {
    "LEASE_S": "10",
    "HEARTBEAT_S": "1",
    "REAPER_INTERVAL_S": "1",
    "MAX_ATTEMPTS": "3",
    "REQUEUE_AFTER_S": "4",
    "SHUTDOWN_GRACE_S": "1",
    "CANCEL_POLL_S": "0.3",
    "JOB_TIMEOUT_S": "120",
    "DB_RETRY_S": "60",
    "JOB_MEMORY_BYTES": str(4 * 1024**3),
    # These suites flood one tenant with jobs on purpose: the abuse limits would answer 429 instead.
    "MAX_ACTIVE_JOBS_PER_TENANT": "10000",
    "RATE_LIMIT_PER_S": "10000",
    "RATE_LIMIT_BURST": "10000",
    **ISOLATED,  # kills, timeouts and OOM are classified through bubblewrap too
}
ENDED = ("succeeded", "failed", "cancelled")


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"no PostgreSQL {name} under /usr/lib/postgresql/*/bin: install postgresql")
    return found[-1]


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, owned by this test session."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="squeeze-pg-", dir="/tmp"))
        self.host, self.port = host, _free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                [_pg_bin("initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres", "--no-sync"]
            ),
            check=True,
            capture_output=True,
        )
        if host != "127.0.0.1":  # initdb trusts loopback only; let the test subnet in too
            with (self.dir / "data" / "pg_hba.conf").open("a") as hba:
                hba.write(f"host all all {host}/24 trust\n")

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses={self.host} -c fsync=off"
        subprocess.run(
            _as_postgres(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(self.dir / "data"),
                    "-o",
                    opts,
                    "-l",
                    str(self.dir / "log"),
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([_pg_bin("pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"]),
            check=False,
            capture_output=True,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        return self.url(name)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A redis-server with no persistence on a free port: a restart loses every message."""

    def __init__(self, workdir: Path, host: str = "127.0.0.1") -> None:
        self.host, self.port = host, _free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                self.host,
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        ping = ["redis-cli", "-h", self.host, "-p", str(self.port), "ping"]
        while subprocess.run(ping, capture_output=True).stdout != b"PONG\n":
            assert time.monotonic() < deadline, "the private redis-server did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@dataclass
class Cluster:
    """The API on the private services, plus the workers a test starts (all stopped at its end)."""

    stack: Stack
    env: dict[str, str]
    logs: Path
    pg: PrivatePostgres | None
    redis: PrivateRedis | None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return self.stack.database_url

    def start_worker(self, name: str | None = None, wait: bool = True, **overrides: str) -> subprocess.Popen[bytes]:
        """A real Celery worker with the fast lease settings; returns once it consumes (unless not `wait`)."""
        name = name or f"w{len(self.workers) + 1}-{uuid.uuid4().hex[:4]}"
        log = self.logs / f"{name}.log"
        proc = start_worker({**self.env, **overrides}, log, name)
        proc.log = log  # type: ignore[attr-defined]
        self.workers.append(proc)
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: subprocess.Popen[bytes]) -> None:
        log: Path = proc.log  # type: ignore[attr-defined]
        deadline = time.monotonic() + 120
        while b" ready." not in log.read_bytes():
            assert proc.poll() is None, f"worker {log.stem} died at start:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"worker {log.stem} not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                with _ignore_missing():
                    os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait()
        self.workers.clear()

    def job_row(self, job_id: str) -> dict[str, Any]:
        """The job as the database holds it (lease, fence, child pid: what the API does not show)."""
        from sqlalchemy import select

        from app.db.models import Job
        from app.db.session import session_scope

        with session_scope(self.database_url) as session:
            job = session.scalars(select(Job).where(Job.id == job_id)).one()
            return {c.name: getattr(job, c.name) for c in Job.__table__.columns}

    def wait_row(
        self, job_id: str, ready: Callable[[dict[str, Any]], bool], timeout: float = 120, what: str = ""
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            row = self.job_row(job_id)
            if ready(row):
                return row
            assert time.monotonic() < deadline, (
                f"job {job_id} never got {what or 'there'}: {row['status']}, attempt {row['attempts']}\n"
                + self.worker_lines(job_id)
            )
            time.sleep(0.1)

    def worker_lines(self, job_id: str) -> str:
        """What the workers logged about the job (claims, lease losses, outcomes), for a failing wait."""
        lines = [
            f"{log.stem}: {line}"
            for log in sorted(self.logs.glob("*.log"))
            for line in log.read_text(errors="replace").splitlines()
            if job_id in line
        ]
        return "\n".join(lines[-30:])

    def wait_running(self, job_id: str, attempt: int = 1, timeout: float = 120) -> dict[str, Any]:
        """Until `attempt` runs its pipeline process; returns the row with its child_pid."""
        return self.wait_row(
            job_id,
            lambda r: r["status"] == "running" and r["attempts"] == attempt and r["child_pid"] is not None,
            timeout,
            f"attempt {attempt} running",
        )

    def wait_done(self, client: httpx.Client, job_id: str, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ENDED:
                return dict(job)
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout} s"
            time.sleep(0.3)

    def stored_attempts(self, job_id: str) -> list[str]:
        """The attempt folders that hold files in the artifact store for this job."""
        return sorted({key.split("/")[2] for key in self.stack.store().list_keys(f"jobs/{job_id}/")})


class _ignore_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is ProcessLookupError


def start_api(env: dict[str, str], logs: Path, database_url: str) -> Stack:
    """uvicorn on a free port with this environment, as the session stack does; returns once ready."""
    from app.db.migrate import upgrade_to_head

    upgrade_to_head(database_url)
    api, url = start_api_process({**os.environ, **env}, logs / "api.log")
    # Workers come and go per test: the Stack's `worker` slot holds the API so Stack keeps its shape.
    return Stack(url=url, env=env, home=Path(env["SQUEEZE_HOME"]), database_url=database_url, worker=api, api=api)


@pytest.fixture(scope="session")
def private_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    pg = PrivatePostgres()
    redis = PrivateRedis(tmp_path_factory.mktemp("redis"))
    try:
        pg.start()
        redis.start()
        yield pg, redis
    finally:
        redis.stop()
        pg.destroy()


@pytest.fixture(scope="session")
def cluster_base(
    private_services: tuple[PrivatePostgres, PrivateRedis], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    pg, redis = private_services
    home = tmp_path_factory.mktemp("faults-home")
    logs = home / "logs"
    logs.mkdir()
    database_url = pg.create_database("squeeze")
    env = {
        "SQUEEZE_HOME": str(home),
        "QUEUE_PREFIX": f"f{uuid.uuid4().hex[:8]}-",
        "DATABASE_URL": database_url,
        "BROKER_URL": redis.url,
        **FAST_LEASES,
    }
    stack = start_api(env, logs, database_url)
    yield Cluster(stack, env, logs, pg, redis)
    stack.api.terminate()
    stack.api.wait(timeout=30)


@pytest.fixture()
def cluster(cluster_base: Cluster) -> Iterator[Cluster]:
    """The session's cluster with no worker yet; every worker the test starts is killed after it."""
    yield cluster_base
    cluster_base.stop_workers()


@pytest.fixture()
def client(cluster: Cluster) -> Iterator[httpx.Client]:
    with cluster.stack.client() as c:
        yield c


@pytest.fixture(scope="session")
def models(cluster_base: Cluster, mlp_onnx: Path, heavy_onnx: Path, balloon_onnx: Path) -> dict[str, str]:
    """Model ids on the fault cluster: `mlp` (seconds), `heavy` (long with many latency runs), `balloon`."""
    with cluster_base.stack.client() as c:
        return {
            name: str(upload(c, path)["id"])
            for name, path in (("mlp", mlp_onnx), ("heavy", heavy_onnx), ("balloon", balloon_onnx))
        }


@pytest.fixture(scope="session")
def balloon_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid ONNX model that asks onnxruntime for 32 GiB (Expand to [batch, 2**26, 64]) on every run."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])
    big = numpy_helper.from_array(np.array([1, 1 << 26, 64], dtype=np.int64), "big")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axes"], ["x3"]),
        helper.make_node("Expand", ["x3", "big"], ["huge"]),
        helper.make_node("ReduceSum", ["huge", "axes"], ["y"], keepdims=0),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "balloon", [x], [y], [big, axes]), opset_imports=[helper.make_opsetid("", 17)]
    )
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("balloon") / "balloon.onnx"
    onnx.save(model, str(path))
    return path


def quick_job(model_id: str) -> dict[str, Any]:
    """A job of a few seconds: dynamic int8 on the MLP, minimal evaluation."""
    return {
        "model_id": model_id,
        "passes": [{"type": "quantize", "method": "dynamic"}],
        "input_shapes": {"x": [2, 64]},
        "evaluate": {"samples": 2, "latency": {"runs": 1, "warmup": 0}},
        "cache": False,  # the fault tests need every submit to run, not to reuse an earlier result
    }


def slow_job(model_id: str, runs: int = 150) -> dict[str, Any]:
    """A job that runs long enough to be hit mid-way: many timed runs of the 4x1024x1024 model."""
    return {
        "model_id": model_id,
        "passes": [{"type": "quantize", "method": "dynamic"}],
        "evaluate": {"samples": 64, "latency": {"runs": runs, "warmup": 0}},
        "cache": False,
    }


def submit(client: httpx.Client, body: dict[str, Any], **headers: str) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return dict(response.json())


def artifacts(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    return list(client.get(f"/v1/jobs/{job_id}/artifacts").json())


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:  # a zombie is dead for our purposes
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False
