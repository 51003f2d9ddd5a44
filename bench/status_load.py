"""Status reads under load: `GET /v1/jobs/{id}` from keep-alive connections on loopback against the real
API process (uvicorn, its database, the rate limiter on), plain and while a job runs in a real worker.

    python -m bench.status_load [--seconds 10] [--connections 8]

Bounded: each phase sends requests for `--seconds` from `--connections` connections, each waiting for its
answer before the next (a closed loop, like CI clients polling). Prints requests/s, p50 and p99 of the
status read, and the same for `GET /healthz` (the framework's own floor: no key, no database) as the ratio,
and the API process's CPU time per request (from /proc: what the rate would be with a core of its own,
whatever else shares the machine). The client is a few lines of asyncio (not httpx) so that it costs the
2 shared cores little.
"""

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch

from app.db.migrate import upgrade_to_head
from tests.conftest import ISOLATED, create_api_key, start_api_process, start_worker
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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, path: str, token: str | None, seconds: float, connections: int, name: str, pid: int) -> Phase:
    host, port = url.removeprefix("http://").split(":")
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}\r\n".encode()
    phase = Phase(name, 0, seconds, [], 0)
    deadline = time.perf_counter() + seconds
    cpu_before = cpu_seconds(pid)
    await asyncio.gather(*(_connection(host, int(port), request, deadline, phase) for _ in range(connections)))
    phase.cpu_s = cpu_seconds(pid) - cpu_before
    return phase


def _report(phase: Phase, floor: Phase) -> None:
    print(
        f"{phase.name:<34} {phase.rate:7.0f} req/s  p50 {phase.percentile(50):5.1f} ms  "
        f"p99 {phase.percentile(99):5.1f} ms  errors {phase.errors}  "
        f"({phase.rate / floor.rate:.2f}x the /healthz rate)  API CPU {phase.cpu_s / phase.requests * 1000:.2f} ms/req "
        f"(= {phase.requests / phase.cpu_s:.0f} req/s per core)"
    )


def run(seconds: float, connections: int) -> None:
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
    database_url = f"sqlite:///{home / 'squeeze.db'}"
    upgrade_to_head(database_url)
    api, url = start_api_process(env, home / "logs" / "api.log", "/readyz")
    worker = start_worker(env, home / "logs" / "worker.log")
    try:
        token = create_api_key(database_url, "bench")
        export_onnx(small_mlp(), torch.randn(2, 64), home / "mlp.onnx", "logits")
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
            with (home / "mlp.onnx").open("rb") as fh:
                model = client.post("/v1/models", files={"file": ("mlp.onnx", fh)}).json()
            job = client.post("/v1/jobs", json={**SPEC, "model_id": model["id"]}).json()
            while client.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("succeeded", "failed"):
                time.sleep(0.2)
            floor = asyncio.run(load(url, "/healthz", None, seconds, connections, "GET /healthz (floor)", api.pid))
            status = f"/v1/jobs/{job['id']}"
            plain = asyncio.run(load(url, status, token, seconds, connections, "GET /v1/jobs/{id}", api.pid))
            slow = {"latency": {"batch_sizes": [1, 32], "runs": 10_000}}
            busy = client.post("/v1/jobs", json={**SPEC, "model_id": model["id"], "evaluate": slow}).json()
            while client.get(f"/v1/jobs/{busy['id']}").json()["status"] != "running":
                time.sleep(0.2)
            running = asyncio.run(
                load(url, f"/v1/jobs/{busy['id']}", token, seconds, connections, "... while a job runs", api.pid)
            )
            still = client.get(f"/v1/jobs/{busy['id']}").json()["status"]
            client.post(f"/v1/jobs/{busy['id']}/cancel")
        print(f"{connections} keep-alive connections, {seconds:g} s per phase, loopback, {os.cpu_count()} cores")
        _report(floor, floor)
        _report(plain, floor)
        _report(running, floor)
        print(f"(the job was {still} when the running phase ended)")
    finally:
        for proc in (api, worker):
            proc.terminate()
        for proc in (api, worker):
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=4)
    args = parser.parse_args()
    run(args.seconds, args.connections)


if __name__ == "__main__":
    main()
