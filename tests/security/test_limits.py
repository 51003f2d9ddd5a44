"""Limits on the limited API process (1 MiB uploads, a 6-request burst per key, one active job per
tenant): 413 fast and memory-bounded, 429 with Retry-After, 429 too_many_jobs."""

import select
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import Stack, upload


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _send_until_answered(
    stack: Stack, tenant: str, head: str, chunks: int, chunk: bytes, chunked: bool
) -> tuple[bytes, int, float]:
    """Send the request head, then up to `chunks` body chunks, stopping as soon as the server answers;
    after the first chunk, while the body is still open, /healthz must answer within 2 s.
    Returns (first response bytes, bytes sent, seconds)."""
    parts = urlsplit(stack.url)
    started = time.monotonic()
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head.replace("{KEY}", stack.key(tenant)).encode())
        try:
            for _ in range(chunks):
                if select.select([sock], [], [], 0)[0]:
                    break
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" if chunked else chunk)
                if sent == 0:
                    with stack.client() as client:
                        assert client.get("/healthz", timeout=2).status_code == 200, "healthz stalled"
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: what we want
        sock.settimeout(10)
        answer = b""
        try:
            while b"payload_too_large" not in answer and (data := sock.recv(65536)):
                answer += data
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, sent, time.monotonic() - started


def _healthz_meanwhile(stack: Stack, stop: threading.Event, answers: list[int]) -> None:
    with stack.client() as client:
        while not stop.is_set():
            answers.append(client.get("/healthz", timeout=5).status_code)
            time.sleep(0.05)


def test_declared_and_streamed_bodies_past_the_limit_get_413_fast(limited: Stack) -> None:
    stop, health = threading.Event(), list[int]()
    watcher = threading.Thread(target=_healthz_meanwhile, args=(limited, stop, health))
    watcher.start()
    rss_before = _rss_kib(limited.api.pid)
    earlier = set((limited.home / "tmp").glob("upload-*"))  # the home is shared with the suite's own API
    try:
        declared = (
            "POST /v1/models?filename=big.onnx HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {10 * 1024**3}\r\n\r\n"
        )
        answer, sent, seconds = _send_until_answered(
            limited, "big-declared", declared, 4096, b"\0" * 65536, chunked=False
        )
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"payload_too_large" in answer and seconds < 10, f"413 took {seconds:.1f}s"
        assert sent < 64 << 20, "the server must answer long before 10 GB arrive"
        chunked = (
            "POST /v1/models?filename=big.onnx HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        answer, sent, seconds = _send_until_answered(limited, "big-chunked", chunked, 1024, b"\1" * 65536, chunked=True)
        assert answer.startswith(b"HTTP/1.1 413") and b"payload_too_large" in answer, answer[:200]
        assert seconds < 20 and sent < 32 << 20, f"cut off after {sent} bytes, {seconds:.1f}s"
    finally:
        stop.set()
        watcher.join()
    assert health and set(health) == {200}, "/healthz kept answering during the uploads"
    growth_mib = (_rss_kib(limited.api.pid) - rss_before) / 1024
    assert growth_mib < 40, f"the API grew {growth_mib:.0f} MiB receiving over-limit bodies"
    left = set((limited.home / "tmp").glob("upload-*")) - earlier
    assert not left, f"no partial upload of these requests is left behind: {left}"


def test_a_json_job_body_past_its_limit_is_413(limited: Stack) -> None:
    with limited.client("big-json") as client:
        response = client.post(
            "/v1/jobs", content=b"[" + b"0," * (1 << 20) + b"0]", headers={"content-type": "application/json"}
        )
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


def test_each_key_is_rate_limited_with_retry_after(limited: Stack) -> None:
    with limited.client("chatty") as client, limited.client("quiet") as other:
        statuses = [client.get("/v1/models").status_code for _ in range(8)]
        assert statuses[:6] == [200] * 6 and 429 in statuses[6:], statuses
        limited_response = client.get("/v1/models")
        assert limited_response.json()["code"] == "rate_limited"
        assert int(limited_response.headers["retry-after"]) >= 1
        assert other.get("/v1/models").status_code == 200, "another key has its own bucket"


def test_active_jobs_per_tenant_are_capped(limited: Stack, mlp_onnx: Path) -> None:
    spec = {"passes": [{"type": "optimize"}], "input_shapes": {"x": [2, 64]}}
    with limited.client("busy") as client:
        model = upload(client, mlp_onnx)
        first = client.post("/v1/jobs", json={**spec, "model_id": model["id"]})
        assert first.status_code == 202, first.text
        second = client.post("/v1/jobs", json={**spec, "model_id": model["id"]})
        assert second.status_code == 429 and second.json()["code"] == "too_many_jobs", second.text
        assert "retry-after" in second.headers
        assert client.post(f"/v1/jobs/{first.json()['id']}/cancel").status_code == 200
        third = client.post("/v1/jobs", json={**spec, "model_id": model["id"]})
        assert third.status_code == 202, "a cancelled job frees its slot"
        client.post(f"/v1/jobs/{third.json()['id']}/cancel")
