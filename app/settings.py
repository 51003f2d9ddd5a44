"""The one settings object. Defaults run the embedded mode: SQLite, a local artifact folder and a
filesystem broker, all under SQUEEZE_HOME; DATABASE_URL, BROKER_URL and STORAGE_URL switch each part."""

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    squeeze_home: Path = Field(Path("var"), description="Root of the embedded database, store and broker.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in SQUEEZE_HOME.")
    broker_url: str | None = Field(None, description="Celery broker; default a filesystem queue in SQUEEZE_HOME.")
    storage_url: str | None = Field(None, description="Artifact store; file:///path (default SQUEEZE_HOME/store).")
    port: int = 8000

    max_upload_bytes: int = Field(4 * 1024**3, description="Largest accepted upload.")
    job_timeout_s: float = Field(3600.0, description="Wall-clock limit of one job attempt's child process.")
    job_memory_bytes: int = Field(16 * 1024**3, description="Address-space limit of the job's child process.")
    job_threads: int = Field(1, description="Threads the child uses for inference and latency runs.")
    cancel_poll_s: float = Field(0.5, description="How often a worker checks whether its running job was cancelled.")
    queue_prefix: str = Field("", description="Prefix for the cpu/gpu queue names (isolates test runs).")

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
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    def queue_name(self, device: str) -> str:
        """The Celery queue a job for `device` goes to: `cpu` or `gpu` (with the optional prefix)."""
        return f"{self.queue_prefix}{'gpu' if device == 'cuda' else 'cpu'}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
