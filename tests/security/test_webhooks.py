"""Webhook destinations and delivery. No public address is reachable here, so refusals are tested with
the real policy, and signing and retries against a loopback receiver with the policy injected (the
refusal stays the default everywhere else)."""

import base64
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from app.errors import WebhookRefused
from app.services.webhooks import check_url, is_public
from tests.conftest import Stack
from workers.webhooks import Delivery, deliver, sign

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


class Receiver:
    """A loopback HTTP server answering with the queued statuses (then 204), recording each request."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                self.send_response(status)
                if status in (301, 302, 307):
                    self.send_header("Location", f"http://127.0.0.1:{receiver.server.server_port}/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver([])
    yield r
    r.server.shutdown()


def _loopback(_: object) -> bool:
    return True


def _how(sleeps: list[float]) -> Delivery:
    return Delivery(attempts=4, backoff_s=0.5, timeout_s=5, allow=_loopback, sleep=sleeps.append)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://[::1]/x",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost:8000/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://[fe80::1]/",
        "http://224.0.0.1/",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://[64:ff9b::7f00:1]/",
        "http://[2002:7f00:1::]/",
        "ftp://example.com/",
        "file:///etc/passwd",
        "http://user:pw@example.com/",
    ],
)
def test_non_public_destinations_are_refused(url: str) -> None:
    with pytest.raises(WebhookRefused):
        check_url(url)


def test_public_addresses_pass_the_policy() -> None:
    target = check_url("https://hooks.example.com/a?b=1", resolver=lambda host, port: ["93.184.215.14"])
    assert (target.ip, target.port, target.path, target.host) == ("93.184.215.14", 443, "/a?b=1", "hooks.example.com")
    import ipaddress

    assert not is_public(ipaddress.ip_address("100.64.0.1")), "carrier-grade NAT is not public"


def test_a_name_that_resolves_to_loopback_at_send_time_gets_no_connection(receiver: Receiver) -> None:
    """The name was public at submit; by delivery it points at a loopback listener, which must see nothing."""
    sleeps: list[float] = []
    how = Delivery(
        attempts=3, backoff_s=0.1, timeout_s=2, sleep=sleeps.append, resolver=lambda host, port: ["127.0.0.1"]
    )
    url = f"http://hooks.example.com:{receiver.server.server_port}/hook"
    assert not deliver(url, SECRET, "msg_1", {"type": "job.succeeded"}, how)
    assert receiver.requests == [], "a refused destination must not be connected to"
    assert sleeps == [], "a refusal is final, not retried"


def test_submit_refuses_loopback_webhooks_and_the_listener_sees_nothing(client: httpx.Client) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.5)
        port = listener.getsockname()[1]
        for host in ("127.0.0.1", "[::1]", "localhost", "169.254.169.254"):
            response = client.post(
                "/v1/jobs",
                json={
                    "model_id": "mdl_x",
                    "passes": [{"type": "optimize"}],
                    "webhook": {"url": f"http://{host}:{port}/hook"},
                },
            )
            assert response.status_code == 422 and response.json()["code"] == "webhook_refused", response.text
        with pytest.raises(TimeoutError):
            listener.accept()


def test_delivery_is_signed_the_standard_webhooks_way(receiver: Receiver) -> None:
    payload = {"type": "job.succeeded", "data": {"id": "job_1"}}
    assert deliver(receiver.url, SECRET, "msg_job_1_1", payload, _how([]))
    headers, body = receiver.requests[0]
    assert json.loads(body) == payload
    assert headers["webhook-id"] == "msg_job_1_1"
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    signed = f"msg_job_1_1.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}", "Standard Webhooks verifiers must accept it"
    assert sign(SECRET, "a", 1, b"x") != sign(SECRET, "a", 2, b"x"), "the timestamp is signed"


def test_failures_are_retried_with_backoff_and_bounded(receiver: Receiver) -> None:
    receiver.statuses = [503, 500]
    sleeps: list[float] = []
    assert deliver(receiver.url, SECRET, "msg_2", {"n": 1}, _how(sleeps))
    assert len(receiver.requests) == 3 and sleeps == [0.5, 1.0], "two retries, doubling the wait"
    assert {r[0]["webhook-id"] for r in receiver.requests} == {"msg_2"}, "retries keep the message id"
    receiver.requests.clear()
    receiver.statuses = [503] * 10
    sleeps.clear()
    assert not deliver(receiver.url, SECRET, "msg_3", {"n": 1}, _how(sleeps))
    assert len(receiver.requests) == 4 and sleeps == [0.5, 1.0, 2.0], "gives up after the configured attempts"


def test_redirects_are_not_followed(receiver: Receiver) -> None:
    receiver.statuses = [302]
    assert not deliver(receiver.url, SECRET, "msg_4", {}, _how([]))
    assert len(receiver.requests) == 1, "the redirect target must not be requested"


def test_worker_notifies_a_finished_job_signed_with_the_tenants_secret(
    stack: Stack, mlp_onnx: Path, receiver: Receiver
) -> None:
    """The worker's call after a job ends: payload from the database row, signed with the tenant's secret
    (GET /v1/tenant). The row's webhook is set directly, since the API refuses a loopback one."""
    from sqlalchemy import update

    from app.db.models import Job
    from app.db.session import session_scope
    from app.settings import Settings
    from tests.conftest import upload
    from workers.webhooks import notify_job_ended

    with stack.client("hooked") as client:
        model = upload(client, mlp_onnx)
        job = client.post(
            "/v1/jobs",
            json={
                "model_id": model["id"],
                "passes": [{"type": "optimize"}],
                "input_shapes": {"x": [2, 64]},
                "evaluate": {"samples": 2, "latency": {"runs": 1, "warmup": 0}},
            },
        ).json()
        final = stack.wait_for(client, job["id"])
        secret = client.get("/v1/tenant").json()["webhook_secret"]
    with session_scope(stack.database_url) as session:
        spec = {**job["spec"], "webhook": {"url": receiver.url}}
        session.execute(update(Job).where(Job.id == job["id"]).values(spec=spec))
    settings = Settings(squeeze_home=stack.home, database_url=stack.database_url)
    assert notify_job_ended(job["id"], settings, _how([]))
    headers, body = receiver.requests[0]
    event = json.loads(body)
    assert event["type"] == f"job.{final['status']}" and event["data"]["id"] == job["id"]
    assert event["data"]["verdict"] == final["verdict"] is not None, "the verdict travels with the event"
    timestamp = int(headers["webhook-timestamp"])
    assert headers["webhook-signature"] == sign(secret, headers["webhook-id"], timestamp, body), (
        "signed with the secret GET /v1/tenant shows"
    )
