"""Tell a job's webhook that the job ended: one signed POST (Standard Webhooks), retried with backoff.

The destination is checked again right before every attempt (app.services.webhooks.check_url) and the
connection goes to the address that check resolved, so a name that re-points to an internal address
after submit is still refused. Redirects are never followed. Delivery never raises: a webhook that
cannot be delivered is logged, and the job's state in the database is the truth either way.
"""

import base64
import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from app.db.models import Job, Tenant
from app.db.session import session_scope
from app.errors import WebhookRefused
from app.services.webhooks import AddressPolicy, Resolver, Target, check_url, is_public, system_resolver
from app.settings import Settings

log = logging.getLogger(__name__)
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The webhook-signature header: `v1,` + base64(HMAC-SHA256(key, id.timestamp.body)), where the key is
    the base64 part of the tenant's `whsec_...` secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass
class Delivery:
    """How to deliver: the address policy and resolver (tests inject loopback ones), retries, timeouts."""

    attempts: int
    backoff_s: float
    timeout_s: float
    resolver: Resolver = system_resolver
    allow: AddressPolicy = is_public
    sleep: Callable[[float], None] = time.sleep
    log: list[str] = field(default_factory=list)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a fixed IP, with SNI and certificate checks for the URL's host name."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout, context=ssl.create_default_context())
        self._ip = target.ip

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self._ip = target.ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


def _post_once(target: Target, body: bytes, headers: dict[str, str], timeout: float) -> int:
    cls = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    conn = cls(target, timeout)
    try:
        conn.request("POST", target.path, body=body, headers=headers)
        response = conn.getresponse()
        response.read(64 << 10)
        return response.status
    finally:
        conn.close()


def deliver(url: str, secret: str, msg_id: str, payload: dict[str, Any], how: Delivery) -> bool:
    """POST the signed payload until a 2xx, a final refusal, or `how.attempts` tries; True if delivered."""
    body = json.dumps(payload, separators=(",", ":")).encode()
    wait = how.backoff_s
    for attempt in range(1, how.attempts + 1):
        try:
            target = check_url(url, how.resolver, how.allow)
        except WebhookRefused as exc:  # the name now points somewhere forbidden: never connect
            how.log.append(f"refused: {exc.message}")
            log.warning("webhook %s refused: %s", msg_id, exc.message)
            return False
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": "squeeze-webhooks",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body),
        }
        try:
            status = _post_once(target, body, headers, how.timeout_s)
        except (OSError, http.client.HTTPException) as exc:
            how.log.append(f"attempt {attempt}: {type(exc).__name__}")
        else:
            how.log.append(f"attempt {attempt}: {status}")
            if 200 <= status < 300:
                return True
            if status not in RETRY_STATUSES:  # redirects and other refusals are final
                log.warning("webhook %s answered %s; not retried", msg_id, status)
                return False
        if attempt < how.attempts:
            how.sleep(wait)
            wait *= 2
    log.warning("webhook %s not delivered after %s attempts", msg_id, how.attempts)
    return False


def notify_job_ended(job_id: str, settings: Settings, how: Delivery | None = None) -> bool:
    """If the job's spec has a webhook, deliver a `job.<status>` event to it; True if one was delivered."""
    with session_scope(settings.effective_database_url) as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        url = ((job.spec or {}).get("webhook") or {}).get("url") if job is not None else None
        if job is None or not url or job.status not in ("succeeded", "failed", "cancelled"):
            return False  # no webhook, or the attempt ended but the job goes on (re-queued, handed back)
        tenant = session.get(Tenant, job.tenant)
        if tenant is None:
            log.warning("job %s has a webhook but tenant %s has no signing secret; not sent", job_id, job.tenant)
            return False
        secret = tenant.webhook_secret
        data = {
            "id": job.id,
            "model_id": job.model_id,
            "status": job.status,
            "attempts": job.attempts,
            "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
            "verdict": (job.report or {}).get("constraints", {}).get("verdict"),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        }
    payload = {"type": f"job.{data['status']}", "timestamp": data["finished_at"], "data": data}
    how = how or Delivery(settings.webhook_attempts, settings.webhook_backoff_s, settings.webhook_timeout_s)
    return deliver(url, secret, f"msg_{job_id}_{data['attempts']}", payload, how)
