"""Status reads under load: `GET /v1/jobs/{id}` from keep-alive connections on loopback against the real
service as `squeeze serve` runs it (its API processes, SQLite, the rate limiter on, a Celery worker), plain
and while a job runs in that worker.

    python -m bench.status_load [--seconds 10] [--connections 4] [--rate 500] [--api-processes 2]

Bounded. Two kinds of phase: a closed loop (`--connections` connections, each waiting for its answer before
the next: the most the API serves) and a paced open loop (`--rate` requests a second whatever the answers'
pace, latency counted from when each request was due: CI clients polling on their own clocks). Prints
requests/s, p50 and p99 of the status read, the same for `GET /healthz` (the framework's own floor: no key,
no database) as the ratio, and the API processes' CPU time per request (from /proc: what the rate would be
with a core of their own, whatever else shares the machine). The client is a few lines of asyncio (not
httpx) so that it costs the 2 shared cores little.
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from tests.conftest import ISOLATED, _free_port
from workers.examples import export_onnx, small_mlp

SPEC = {"passes": [{"type": "quantize", "method": "dynamic"}], "input_shapes": {"x": [4, 64]}, "cache": False}


@dataclass
class Phase:
    name: str
    requests: int
    seconds: float
    latencies_s: list[float]
    errors: int
    cpu_s: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        return statistics.quantiles(self.latencies_s, n=100)[int(q) - 1] * 1000 if len(self.latencies_s) > 1 else 0.0


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
    await reader.readexactly(length)
    return int(lines[0].split()[1])


async def _connection(host: str, port: int, request: bytes, deadline: float, phase: Phase) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            phase.latencies_s.append(time.perf_counter() - started)
            phase.requests += 1
            phase.errors += status != 200
    finally:
        writer.close()


async def _paced_connection(host: str, port: int, request: bytes, due: asyncio.Queue[float], phase: Phase) -> None:
    """Sends each request at the time it is due (or as soon as this connection is free) and counts its
    latency from that time, so a stalled server shows in the figures (no coordinated omission)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (at := await due.get()) >= 0:
            await asyncio.sleep(at - time.perf_counter())
            writer.write(request)
            status = await _read_response(reader)
            phase.latencies_s.append(time.perf_counter() - at)
            phase.requests += 1
            phase.errors += status != 200
    finally:
        writer.close()


async def paced(
    url: str,
    path: str,
    token: str | None,
    seconds: float,
    rate: float,
    name: str,
    pids: list[int],
    connections: int = 32,
) -> Phase:
    """An open loop: `rate` requests a second for `seconds`, whatever the answers' pace (CI clients polling
    on their own clocks), spread over a pool of keep-alive connections."""
    host, port = url.removeprefix("http://").split(":")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode()
    phase = Phase(name, 0, seconds, [], 0)
    due: asyncio.Queue[float] = asyncio.Queue()
    start = time.perf_counter() + 0.05
    for i in range(int(seconds * rate)):
        due.put_nowait(start + i / rate)
    for _ in range(connections):
        due.put_nowait(-1.0)
    cpu_before = cpu_seconds(pids)
    await asyncio.gather(*(_paced_connection(host, int(port), request, due, phase) for _ in range(connections)))
    phase.cpu_s = cpu_seconds(pids) - cpu_before
    return phase


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of these processes so far."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def load(
    url: str, path: str, token: str | None, seconds: float, connections: int, name: str, pids: list[int]
) -> Phase:
    host, port = url.removeprefix("http://").split(":")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode()
    phase = Phase(name, 0, seconds, [], 0)
    deadline = time.perf_counter() + seconds
    cpu_before = cpu_seconds(pids)
    await asyncio.gather(*(_connection(host, int(port), request, deadline, phase) for _ in range(connections)))
    phase.cpu_s = cpu_seconds(pids) - cpu_before
    return phase


def _report(phase: Phase, floor: Phase) -> None:
    print(
        f"{phase.name:<34} {phase.rate:7.0f} req/s  p50 {phase.percentile(50):5.1f} ms  "
        f"p99 {phase.percentile(99):5.1f} ms  errors {phase.errors}  "
        f"({phase.rate / floor.rate:.2f}x the /healthz rate)  API CPU {phase.cpu_s / phase.requests * 1000:.2f} ms/req "
        f"(= {phase.requests / phase.cpu_s:.0f} req/s per core)"
    )


def api_pids(serve_pid: int) -> list[int]:
    """The API's processes under `squeeze serve`: the serve process and its uvicorn workers, not the Celery
    worker it also starts."""
    children = Path(f"/proc/{serve_pid}/task/{serve_pid}/children").read_text().split()
    return [serve_pid] + [int(c) for c in children if b"celery" not in Path(f"/proc/{c}/cmdline").read_bytes()]


def start_service(env: dict[str, str], home: Path, api_processes: int) -> tuple[subprocess.Popen[bytes], str, str]:
    """`squeeze serve` as a user runs it (one Celery worker beside the API); its URL and the local key."""
    port = _free_port()
    serve = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"]
    with (home / "logs" / "serve.log").open("ab") as log:
        proc = subprocess.Popen(
            [*serve, "--api-processes", str(api_processes)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while not _ready(url):
        assert proc.poll() is None and time.monotonic() < deadline, (home / "logs" / "serve.log").read_text()
        time.sleep(0.3)
    return proc, url, (home / "local-api-key").read_text().strip()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def run(seconds: float, connections: int, rate: float, api_processes: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="squeeze-status-"))
    (home / "logs").mkdir()
    env = {
        **os.environ,
        **ISOLATED,
        "SQUEEZE_HOME": str(home),
        "QUEUE_PREFIX": f"sl{uuid.uuid4().hex[:6]}-",
        "RATE_LIMIT_PER_S": "1000000",  # the limiter runs on every request but never refuses the benchmark
        "RATE_LIMIT_BURST": "1000000",
    }
    service, url, token = start_service(env, home, api_processes)
    pids = api_pids(service.pid)
    try:
        export_onnx(small_mlp(), torch.randn(2, 64), home / "mlp.onnx", "logits")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            with (home / "mlp.onnx").open("rb") as fh:
                model = client.post("/v1/models", files={"file": ("mlp.onnx", fh)}).json()
            job = client.post("/v1/jobs", json={**SPEC, "model_id": model["id"]}).json()
            while client.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("succeeded", "failed"):
                time.sleep(0.2)
            floor = asyncio.run(load(url, "/healthz", None, seconds, connections, "GET /healthz (floor)", pids))
            status = f"/v1/jobs/{job['id']}"
            plain = asyncio.run(load(url, status, token, seconds, connections, "GET /v1/jobs/{id}", pids))
            at_rate = asyncio.run(paced(url, status, token, seconds, rate, f"... paced at {rate:g}/s", pids))
            slow = {"latency": {"batch_sizes": [1, 32], "runs": 10_000}}
            busy = client.post("/v1/jobs", json={**SPEC, "model_id": model["id"], "evaluate": slow}).json()
            while client.get(f"/v1/jobs/{busy['id']}").json()["status"] != "running":
                time.sleep(0.2)
            running = asyncio.run(
                load(url, f"/v1/jobs/{busy['id']}", token, seconds, connections, "... while a job runs", pids)
            )
            running_at_rate = asyncio.run(
                paced(url, f"/v1/jobs/{busy['id']}", token, seconds, rate, f"... paced at {rate:g}/s", pids)
            )
            still = client.get(f"/v1/jobs/{busy['id']}").json()["status"]
            client.post(f"/v1/jobs/{busy['id']}/cancel")
        print(
            f"squeeze serve with {api_processes} API process(es); {connections} keep-alive connections (closed "
            f"loop) or paced; {seconds:g} s per phase, loopback, {os.cpu_count()} cores"
        )
        for phase in (floor, plain, at_rate, running, running_at_rate):
            _report(phase, floor)
        print(f"(the job was {still} when the running phase ended)")
    finally:
        service.terminate()
        service.wait(timeout=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--rate", type=float, default=500.0, help="requests/s of the paced (open-loop) phases")
    parser.add_argument("--api-processes", type=int, default=2, help="squeeze serve --api-processes")
    args = parser.parse_args()
    run(args.seconds, args.connections, args.rate, args.api_processes)


if __name__ == "__main__":
    main()
