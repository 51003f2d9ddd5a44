"""The Celery configuration both halves share: the API only publishes job ids with it, the workers
consume them. Kept free of torch so the API can import it."""

from typing import Any

from celery import Celery

from app.schemas.tasks import RunJob
from app.settings import Settings

RUN_JOB_TASK = "squeeze.run_job"


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker_url": settings.effective_broker_url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        "result_backend": None,
        # At-least-once: a message is acknowledged only after its job is recorded, and goes back to the
        # queue if the worker dies; the database makes a second delivery harmless.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 5,
        "task_default_queue": settings.queue_name("cpu"),
        "worker_hijack_root_logger": False,
    }
    if config["broker_url"].startswith("filesystem://"):
        folder = settings.broker_folder
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            "store_processed": False,
            "control_folder": str(folder / "control"),
            "polling_interval": 0.1,  # kombu's 1 s default kept a new job waiting half a second on average
        }
        config["worker_enable_remote_control"] = False
    else:
        # A message unacknowledged this long is delivered again; a job still under a live lease ignores it.
        config["broker_transport_options"] = {"visibility_timeout": settings.broker_visibility_timeout_s}
    return config


def publish_job(celery: Celery, job_id: str, queue: str, retries: int) -> None:
    """Hand a job to the broker: a RunJob message, retried `retries` times while the broker is away."""
    celery.send_task(
        RUN_JOB_TASK,
        args=[RunJob(job_id=job_id).model_dump()],
        queue=queue,
        retry=retries > 0,
        retry_policy={"max_retries": retries, "interval_start": 0.2, "interval_step": 0.5},
    )


def make_celery(settings: Settings, name: str = "squeeze") -> Celery:
    celery = Celery(name)
    celery.conf.update(celery_config(settings))
    return celery
