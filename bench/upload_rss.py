"""1 GiB uploads through the API into an S3 bucket, measuring how much the API process's resident
memory grows while it streams each body to disk, hashes it, inspects it and sends it up in multipart parts.

    python -m bench.upload_rss [--gib 1]

The bucket is on moto's S3 server (a real HTTP endpoint, started here on loopback); the uploads are a
safetensors dataset (the API reads only its header) and an ONNX model with its weight inline (the API
reads its graph without the weight), streamed by httpx from files on disk. Prints the API's RSS before,
its peak during each upload, and the growth (the README's figures; each must stay < 64 MiB).
"""

import argparse
import json
import os
import struct
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from app.db.migrate import upgrade_to_head
from tests.conftest import S3_CREDENTIALS, S3Server, create_api_key, start_api_process
from tests.integration.test_upload_memory import write_inline_onnx

MIB = 1024 * 1024
LIMIT_MIB = 64


def write_safetensors(path: Path, total_bytes: int) -> int:
    """One float32 tensor `x` of shape [rows, 256] filling about `total_bytes`, written in 8 MiB chunks."""
    rows = total_bytes // (256 * 4)
    header = json.dumps({"x": {"dtype": "F32", "shape": [rows, 256], "data_offsets": [0, rows * 1024]}}).encode()
    chunk = os.urandom(8 * MIB)
    with path.open("wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        left = rows * 1024
        while left:
            fh.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
    return path.stat().st_size


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


class PeakRss(threading.Thread):
    """Samples a process's RSS every 50 ms and keeps the highest."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, rss_bytes(pid), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, rss_bytes(self.pid))


def upload_once(client: httpx.Client, pid: int, route: str, path: Path) -> tuple[httpx.Response, int, int, float]:
    """POST `path` to `route`: (answer, RSS before, peak RSS during, seconds)."""
    before = rss_bytes(pid)
    sampler = PeakRss(pid)
    sampler.start()
    started = time.monotonic()
    with path.open("rb") as fh:
        response = client.post(route, files={"file": (path.name, fh)})
    wall = time.monotonic() - started
    sampler.done.set()
    sampler.join()
    assert response.status_code == 201, response.text
    return response, before, sampler.peak, wall


def measure(gib: float) -> int:
    home = Path(tempfile.mkdtemp(prefix="squeeze-rss-"))
    (home / "logs").mkdir()
    s3 = S3Server(home / "logs" / "moto.log")
    os.environ.update(S3_CREDENTIALS)
    env = {**os.environ, "SQUEEZE_HOME": str(home), "QUEUE_PREFIX": f"rss{uuid.uuid4().hex[:6]}-"}
    env.update(s3.env("bench"))
    env["MAX_UPLOAD_BYTES"] = str(int((max(gib, 1) + 1) * 1024**3))
    database_url = f"sqlite:///{home / 'squeeze.db'}"
    upgrade_to_head(database_url)
    api, url = start_api_process(env, home / "logs" / "api.log", "/readyz")
    try:
        write_safetensors(home / "big.safetensors", int(gib * 1024**3))
        write_inline_onnx(home / "big.onnx")
        token = create_api_key(database_url, "bench")
        headers = {"Authorization": f"Bearer {token}"}
        failed = 0
        with httpx.Client(base_url=url, timeout=600, headers=headers) as client:
            client.get("/v1/datasets").raise_for_status()  # warm: first-request imports are not the upload's
            for kind, route, path in (
                ("datasets", "/v1/datasets", home / "big.safetensors"),
                ("models", "/v1/models", home / "big.onnx"),
            ):
                response, before, peak, wall = upload_once(client, api.pid, route, path)
                key = f"bench/{kind}/{response.json()['id']}/upload"
                stored = s3.client().head_object(Bucket=s3.bucket, Key=key)["ContentLength"]
                growth = (peak - before) / MIB
                print(f"{route} {path.name}: {path.stat().st_size / MIB:.0f} MiB to s3 (moto server), {wall:.1f} s")
                print(f"  stored object         {stored / MIB:.0f} MiB, sha256 {response.json()['sha256'][:16]}...")
                print(f"  API RSS before        {before / MIB:.1f} MiB")
                print(f"  API RSS peak          {peak / MIB:.1f} MiB")
                print(f"  API RSS growth        {growth:.1f} MiB (limit {LIMIT_MIB} MiB)")
                failed += growth >= LIMIT_MIB or stored != path.stat().st_size
                path.unlink()
        return 1 if failed else 0
    finally:
        api.terminate()
        api.wait(timeout=30)
        s3.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=1.0)
    return measure(parser.parse_args().gib)


if __name__ == "__main__":
    raise SystemExit(main())
