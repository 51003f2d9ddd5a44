"""Prometheus metrics of the API process: HTTP requests by route and status with their latency, and, read
from the database at scrape time (the source of truth, whichever process ran the jobs), jobs by status and
queue and the age of the oldest queued job."""

import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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

    def middleware(self, app: ASGIApp) -> ASGIApp:
        """The request counter and latency histogram as plain ASGI middleware (Starlette's
        BaseHTTPMiddleware would add a task and a stream per request)."""
        return _MetricsMiddleware(app, self)


class _MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before it answers

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The route template (/v1/jobs/{job_id}), not the path: ids would make one series per object.
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - started)
