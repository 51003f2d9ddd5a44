"""The one settings object. Defaults run the embedded mode: SQLite, a local artifact folder and a
filesystem broker, all under SQUEEZE_HOME; DATABASE_URL, BROKER_URL and STORAGE_URL switch each part
(S3 credentials come from the standard AWS variables, read by boto3)."""

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from passes.base import FidelityFloors


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    squeeze_home: Path = Field(Path("var"), description="Root of the embedded database, store and broker.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in SQUEEZE_HOME.")
    broker_url: str | None = Field(None, description="Celery broker; default a filesystem queue in SQUEEZE_HOME.")
    storage_url: str | None = Field(
        None, description="Artifact store: file:///path (default SQUEEZE_HOME/store) or s3://bucket/prefix."
    )
    s3_endpoint_url: str | None = Field(None, description="S3 API endpoint (MinIO, Ceph); default AWS's own.")
    s3_region: str = Field("us-east-1", description="Region the S3 requests are signed for.")
    s3_presign_endpoint_url: str | None = Field(
        None, description="Host named in presigned URLs, when clients reach S3 elsewhere than the workers do."
    )
    presigned_downloads: bool = Field(
        False, description="Answer artifact downloads with 307 to a presigned S3 URL instead of streaming them."
    )
    presigned_ttl_s: float = Field(300.0, gt=0, le=7 * 24 * 3600, description="Lifetime of a presigned URL.")
    port: int = 8000

    max_upload_bytes: int = Field(4 * 1024**3, description="Largest accepted upload.")
    job_timeout_s: float = Field(3600.0, description="Wall-clock limit of one job attempt's child process.")
    job_memory_bytes: int = Field(
        16 * 1024**3,
        description="Address-space limit of the job's child process (CPU jobs: CUDA cannot start under one).",
    )
    job_threads: int = Field(1, description="Threads the child uses for inference and latency runs.")
    cancel_poll_s: float = Field(0.5, description="How often a worker checks whether its running job was cancelled.")
    queue_prefix: str = Field("", description="Prefix for the cpu/gpu queue names (isolates test runs).")
    job_isolation: Literal["auto", "bwrap", "off"] = Field(
        "auto",
        description="How a job's child is isolated (docs/security.md): bwrap (bubblewrap namespaces, or the job "
        "fails), auto (bwrap when this host allows it, else none, said in /readyz and the log), off (trusted "
        "single-user deployments only).",
    )
    allow_torchscript_uploads: bool = Field(
        False, description="Accept TorchScript uploads; honoured only while job isolation is active."
    )
    inspection_timeout_s: float = Field(
        30.0, gt=0, description="Longest an upload's inspection may take before it is refused (422)."
    )
    metrics_token: str | None = Field(
        None, description="When set, GET /metrics requires `Authorization: Bearer <METRICS_TOKEN>`."
    )

    # Fidelity floors: the least mean cosine to the original a result may have (constraints.min_cosine in a spec
    # replaces them); below it the job fails with constraints_not_met, and quantization first keeps the
    # responsible nodes in float, within `sensitivity_retries` more attempts.
    fidelity_floor_fp16: float = Field(0.99, ge=-1, le=1, description="Floor of a half-precision (fp16, bf16) result.")
    fidelity_floor_int8: float = Field(0.98, ge=-1, le=1, description="Floor of a dynamic or static int8 result.")
    fidelity_floor_int4: float = Field(0.9, ge=-1, le=1, description="Floor of an int4 weight-only result.")
    fidelity_floor: float = Field(
        0.5,
        ge=-1,
        le=1,
        description="Floor of a result of a pass meant to change the function (prune, lowrank, distill): it only "
        "catches a broken model; judge those by the constraints you give (max_accuracy_drop, min_cosine).",
    )
    sensitivity_retries: int = Field(
        4, ge=0, le=32, description="Quantization attempts after the first that keep more nodes in float."
    )

    # Abuse limits (docs/security.md).
    api_processes: int = Field(
        2,
        ge=1,
        le=64,
        description="API processes `squeeze serve` runs on its port (uvicorn workers): one process is busy at "
        "about 600 status reads/s, two serve 500/s with p99 under 20 ms on 2 cores (README: status reads).",
    )
    prestart_children: bool = Field(
        True,
        description="Each worker process starts its next job's sandboxed child ahead (libraries imported while "
        "it waits: seconds off every job's start, an idle process of several hundred MB per worker).",
    )
    rate_limit_per_s: float = Field(
        50.0, gt=0, description="Requests per second one API key may sustain (README: polling and the limit)."
    )
    rate_limit_burst: int = Field(200, ge=1, description="Requests one API key may make at once, then waits.")
    status_poll_s: float = Field(
        0.25,
        gt=0,
        le=10,
        description="How often the API reads the status of jobs that long-polls and event streams wait on "
        "(one query for all of them, only while someone waits): the most a change takes to reach them.",
    )
    max_active_jobs_per_tenant: int = Field(
        20, ge=1, description="Queued plus running jobs one tenant may have; more get 429 too_many_jobs."
    )
    max_graph_nodes: int = Field(1_000_000, ge=1, description="Largest ONNX graph accepted, in nodes.")
    max_tensor_bytes: int = Field(4 * 1024**3, ge=1, description="Largest tensor an ONNX model may declare.")
    webhook_attempts: int = Field(5, ge=1, le=10, description="Deliveries tried per webhook, then it gives up.")
    webhook_backoff_s: float = Field(1.0, ge=0, description="Wait before the first retry; doubles each time.")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Connect and read timeout of one delivery.")
    # Leases: a running job belongs to the worker whose lease is live; everything below bounds how long a
    # job can sit with a dead worker, a lost message or a stopping worker before someone else takes it.
    lease_s: float = Field(60.0, gt=0, description="How long a claimed job stays its worker's unrenewed.")
    heartbeat_s: float = Field(10.0, gt=0, description="How often a worker renews the lease of its job.")
    reaper_interval_s: float = Field(
        30.0,
        gt=0,
        description="How often every worker re-queues jobs whose lease expired and re-publishes "
        "queued jobs whose message may be lost.",
    )
    max_attempts: int = Field(3, ge=1, description="Attempts (worker lost, pipeline crashed) before failing.")
    requeue_after_s: float = Field(
        300.0,
        gt=0,
        description="A job queued this long since its last publish is published again (the "
        "broker may have lost it; a duplicate message is harmless).",
    )
    shutdown_grace_s: float = Field(
        60.0, ge=0, description="On SIGTERM a worker lets its job run this long, then hands it back."
    )
    db_retry_s: float = Field(
        120.0, ge=0, description="How long a worker retries recording a result while the database is unreachable."
    )
    broker_visibility_timeout_s: float = Field(
        6 * 3600.0, gt=0, description="Redis: an unacknowledged message is redelivered after this long."
    )
    publish_retries: int = Field(1, ge=0, description="Publish retries at submit, then the sweep's turn.")

    @property
    def home(self) -> Path:
        return self.squeeze_home.resolve()

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'squeeze.db'}"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return self.home / "broker"

    @property
    def effective_storage_url(self) -> str:
        return self.storage_url or f"file://{self.home / 'store'}"

    @property
    def local_key_file(self) -> Path:
        """Where `squeeze serve` keeps the embedded default's API key (mode 0600)."""
        return self.home / "local-api-key"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def fidelity_floors(self) -> FidelityFloors:
        return FidelityFloors(
            fp16=self.fidelity_floor_fp16,
            int8=self.fidelity_floor_int8,
            int4=self.fidelity_floor_int4,
            generic=self.fidelity_floor,
            retries=self.sensitivity_retries,
        )

    def queue_name(self, device: str) -> str:
        """The Celery queue a job for `device` goes to: `cpu` or `gpu` (with the optional prefix)."""
        return f"{self.queue_prefix}{'gpu' if device == 'cuda' else 'cpu'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
