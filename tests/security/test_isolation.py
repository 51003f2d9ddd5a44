"""Job isolation, proved with bubblewrap on (the test stacks set JOB_ISOLATION=bwrap, so a host that cannot
isolate fails these tests instead of skipping them): a child that tries every way out of its job reaches
nothing, and TorchScript that reads the key file, in `forward` or in `__setstate__`, fails inside the
sandbox without the secret showing up anywhere the attacker can read."""

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import torch

from app.db.session import session_scope
from app.services.keys import ensure_local_key
from tests.conftest import POSTGRES_URL, REDIS_URL, Stack, upload
from workers.isolation import JOB_DIR, bwrap_command
from workers.sandbox import _child_env

TENANT = "intruder"

ESCAPE_ATTEMPTS = """
import json, os, socket, sys
targets = json.loads(sys.argv[1])
reached = {}
for name, path in targets["read"].items():
    try:
        with open(path, "rb") as fh:
            reached[name] = fh.read(4096).decode("latin-1")
    except OSError as exc:
        reached[name] = None
for name, path in targets["write"].items():
    try:
        with open(path, "wb") as fh:
            fh.write(b"overwritten by another tenant's job")
        reached[name] = "written"
    except OSError:
        reached[name] = None
for name, (host, port) in targets["connect"].items():
    try:
        socket.create_connection((host, port), timeout=2).close()
        reached[name] = "connected"
    except OSError:
        reached[name] = None
with open("/job/out.txt", "w") as fh:
    fh.write("the job's own folder is writable")
reached["environ"] = dict(os.environ)
print(json.dumps(reached))
"""


@pytest.fixture(scope="module")
def local_key(stack: Stack) -> str:
    """The embedded default's key file in SQUEEZE_HOME, as `squeeze serve` writes it: the secret to steal."""
    with session_scope(stack.database_url) as session:
        return ensure_local_key(session, stack.home / "local-api-key")


@pytest.fixture(scope="module")
def intruder(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client(TENANT) as client:
        yield client


def _victim_artifact(stack: Stack) -> Path:
    path = stack.home / "store" / "jobs" / "job_victim" / "attempt-1" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"the victim's artifact")
    return path


def test_readyz_says_jobs_run_isolated(stack: Stack) -> None:
    body = httpx.get(f"{stack.url}/readyz", timeout=10).json()
    assert body["job_isolation"]["mode"] == "bwrap" and body["job_isolation"]["active"], body


def test_a_child_reaches_nothing_outside_its_job(stack: Stack, local_key: str, tmp_path: Path) -> None:
    victim = _victim_artifact(stack)
    api = urlsplit(stack.url)
    pg, redis = urlsplit(POSTGRES_URL.replace("+psycopg", "")), urlsplit(REDIS_URL)
    workdir = tmp_path / "job"
    (workdir / "tmp").mkdir(parents=True)
    targets = {
        "read": {
            "key file": str(stack.home / "local-api-key"),
            "database": str(stack.home / "squeeze.db"),
            "worker environ": f"/proc/{stack.worker.pid}/environ",
            "pid 1 environ": "/proc/1/environ",
            "another tenant's artifact": str(victim),
        },
        "write": {"another tenant's artifact (write)": str(victim), "/usr": "/usr/squeeze-was-here"},
        "connect": {
            "postgres": (pg.hostname, pg.port or 5432),
            "redis": (redis.hostname, redis.port or 6379),
            "api": (api.hostname, api.port),
        },
    }
    command = bwrap_command([sys.executable, "-c", ESCAPE_ATTEMPTS, json.dumps(targets)], workdir, stack.home)
    done = subprocess.run(command, env=_child_env(JOB_DIR, 1, True), capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    reached = json.loads(done.stdout)
    environ = reached.pop("environ")
    for name in ("key file", "database", "worker environ", "another tenant's artifact"):
        assert reached[name] is None, f"the child read the {name}: {reached[name]!r}"
    assert local_key not in (reached["pid 1 environ"] or ""), "pid 1 inside holds no secret"
    for name in ("another tenant's artifact (write)", "/usr", "postgres", "redis", "api"):
        assert reached[name] is None, f"the child reached {name}"
    assert victim.read_bytes() == b"the victim's artifact", "another tenant's artifact was replaced"
    assert environ["SQUEEZE_ISOLATED"] == "1" and environ["HOME"] == str(JOB_DIR), environ
    for name in ("DATABASE_URL", "BROKER_URL", "STORAGE_URL", "SQUEEZE_HOME"):
        assert name not in environ, f"{name} reached the child"
    assert (workdir / "out.txt").read_text() == "the job's own folder is writable"


class ReadsInForward(torch.nn.Module):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stolen = torch.from_file(self.path, shared=False, size=16, dtype=torch.uint8)
        return x + stolen[:4].to(torch.float32)


class ReadsOnLoad(torch.nn.Module):
    """`__setstate__` runs inside torch.jit.load itself, before any pass: it maps the file read-write."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.stolen = torch.zeros(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.stolen

    @torch.jit.export
    def __getstate__(self) -> tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        self.stolen = torch.from_file(self.path, shared=True, size=4, dtype=torch.float32)


@pytest.mark.parametrize("payload", [ReadsInForward, ReadsOnLoad])
def test_torchscript_reading_the_key_file_fails_inside_the_sandbox(
    payload: type[torch.nn.Module], stack: Stack, intruder: httpx.Client, local_key: str, tmp_path: Path
) -> None:
    key_file = stack.home / "local-api-key"
    path = tmp_path / f"{payload.__name__}.pt"
    torch.jit.save(torch.jit.script(payload(str(key_file))), path)
    model = upload(intruder, path)
    job = intruder.post(
        "/v1/jobs",
        json={
            "model_id": model["id"],
            "passes": [{"type": "convert", "to": "onnx"}],
            "input_shapes": {"x": [1, 4]},
            "evaluate": {"samples": 1, "latency": {"runs": 1, "warmup": 0}},
        },
    )
    assert job.status_code == 202, job.text
    final = stack.wait_for(intruder, job.json()["id"])
    assert final["status"] == "failed", f"a job that maps {key_file} cannot succeed: {final}"
    assert key_file.read_text().strip() == local_key, "the key file is unchanged"
    readable = [json.dumps(final), intruder.get(f"/v1/jobs/{final['id']}/artifacts").text]
    readable += [log.read_text(errors="replace") for log in (stack.home / "logs").iterdir()]
    for text in readable:
        assert local_key not in text, "the local tenant's key reached something the attacker or a log holds"


def test_torchscript_is_refused_where_the_operator_did_not_allow_it(
    limited: Stack, local_key: str, tmp_path: Path
) -> None:
    path = tmp_path / "reads.pt"
    torch.jit.save(torch.jit.script(ReadsInForward(str(limited.home / "local-api-key"))), path)
    with limited.client(TENANT) as client:
        response = client.post("/v1/models", files={"file": ("reads.pt", path.read_bytes())})
    assert response.status_code == 422 and response.json()["code"] == "unsafe_model_format", response.text
    assert "ONNX" in response.json()["detail"], "the refusal says what to upload instead"


def test_the_sandbox_has_no_network_namespace_exit(tmp_path: Path, stack: Stack) -> None:
    """Even a listener the test opens on loopback, which nothing else guards, is out of reach."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    probe = f"import socket\ntry:\n socket.create_connection(('127.0.0.1', {port}), 2)\nexcept OSError:\n pass"
    workdir = tmp_path / "job"
    workdir.mkdir()
    command = bwrap_command([sys.executable, "-c", probe], workdir, stack.home)
    done = subprocess.run(command, env=_child_env(JOB_DIR, 1, True), capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    with pytest.raises(TimeoutError):
        listener.accept()  # nobody knocked
    listener.close()
