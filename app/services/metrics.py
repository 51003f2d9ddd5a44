"""Prometheus metrics of the API process: HTTP requests by route and status with their latency, and, read
from the database at scrape time (the source of truth, whichever process ran the jobs), jobs by status and
queue and the age of the oldest queued job."""

import time
from collections.abc import Awaitable, Callable, Iterator

from fastapi import Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from app.db.models import Job, utcnow
from app.db.session import session_scope


class JobCollector(Collector):
    """Counts jobs per status and queue, and how long the oldest queued job has waited."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("squeeze_jobs", "Jobs in the database by status and queue", labels=["status", "queue"])
        waiting = GaugeMetricFamily(
            "squeeze_oldest_queued_job_age_seconds",
            "Seconds since the oldest still-queued job was submitted (0 when none)",
        )
        with session_scope(self.database_url) as session:
            for status, queue, count in session.execute(
                select(Job.status, Job.queue, func.count()).group_by(Job.status, Job.queue)
            ):
                jobs.add_metric([status, queue], count)
            oldest = session.scalar(select(func.min(Job.created_at)).where(Job.status == "queued"))
        if oldest is not None and oldest.tzinfo is None:  # SQLite hands back naive UTC datetimes
            oldest = oldest.replace(tzinfo=utcnow().tzinfo)
        waiting.add_metric([], (utcnow() - oldest).total_seconds() if oldest is not None else 0.0)
        yield jobs
        yield waiting


class Metrics:
    """One registry per app (tests run several apps in one process), with the request middleware."""

    def __init__(self, database_url: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "squeeze_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "squeeze_http_request_duration_seconds",
            "HTTP request latency by route",
            ["method", "route"],
            registry=self.registry,
        )
        self.registry.register(JobCollector(database_url))

    async def middleware(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        # The route template (/v1/jobs/{job_id}), not the path: ids would make one series per object.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        self.requests.labels(request.method, route, str(response.status_code)).inc()
        self.latency.labels(request.method, route).observe(time.perf_counter() - started)
        return response
