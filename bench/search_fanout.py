"""Fan-out: one search of 8 candidates on the embedded stack (SQLite, filesystem broker, local store), first
with one worker process and then with two; prints each wall time (submit to the search's end) and the ratio.

    python -m bench.search_fanout [--candidates 8] [--runs 200]

Every candidate is a real job (`"cache": false`, and each run its own seed, so nothing is reused), isolated
like the tests' jobs, one thread each. The ratio can only approach 2 where the machine has two cores free
for the two workers; the README records the figure with the machine's load.

Last run (2026-12-03, 2 shared cores at load average 9.5, defaults): 1 worker 95.8 s, 2 workers 57.0 s, x1.68.
"""

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from app.db.migrate import upgrade_to_head
from bench.soak import build_mlp
from tests.conftest import backend_env, create_api_key, start_api_process, start_worker, upload

DYNAMIC = {"type": "quantize", "method": "dynamic"}


def space(calibration: str, count: int) -> list[dict[str, Any]]:
    """`count` distinct int8/fp16 pipelines of the MLP."""
    calibrate: dict[str, Any] = {"dataset_id": calibration, "samples": 64}
    static: dict[str, Any] = {"type": "quantize", "method": "static", "calibration": calibrate}
    pipelines: list[dict[str, Any]] = [
        {**DYNAMIC, "per_channel": pc, "weight_type": wt} for pc in (True, False) for wt in ("int8", "uint8")
    ]
    pipelines += [{**static, "per_channel": pc} for pc in (True, False)]
    pipelines += [{**static, "calibration": {**calibrate, "method": "entropy"}}]
    pipelines += [{"type": "quantize", "method": "fp16"}, {"type": "optimize"}]
    return [{"passes": [p]} for p in pipelines[:count]]


def run_search(client: httpx.Client, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    response = client.post("/v1/searches", json=body)
    response.raise_for_status()
    search = response.json()
    while search["status"] == "running":
        time.sleep(0.25)
        search = client.get(f"/v1/searches/{search['id']}").json()
    wall = time.perf_counter() - started
    states = [c["state"] for c in search["candidates"]]
    print(f"  {len(states)} candidates: {states.count('succeeded')} succeeded; {wall:.1f} s")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--runs", type=int, default=200, help="timed latency runs per model per candidate")
    args = parser.parse_args()
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="fanout-") as tmp:
        home = Path(tmp)
        env = {**backend_env(home, None), "JOB_THREADS": "1"}
        database = f"sqlite:///{home / 'squeeze.db'}"
        upgrade_to_head(database)
        (home / "logs").mkdir()
        api, url = start_api_process({**os.environ, **env}, home / "logs" / "api.log", "/readyz")
        workers: list[subprocess.Popen[bytes]] = []
        try:
            headers = {"Authorization": f"Bearer {create_api_key(database, 'bench')}"}
            with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
                model = upload(client, build_mlp(home))["id"]
                x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
                np.savez(home / "calibration.npz", x=x)
                with (home / "calibration.npz").open("rb") as fh:
                    calibration = client.post("/v1/datasets", files={"file": ("calibration.npz", fh)}).json()["id"]
                body = {
                    "model_id": model,
                    "space": space(calibration, args.candidates),
                    "budget": {"max_candidates": args.candidates},
                    "evaluate": {"samples": 16, "latency": {"runs": args.runs, "warmup": 5}},
                    "input_shapes": {"x": [8, 64]},
                    "cache": False,
                }
                walls = []
                for count in (1, 2):
                    workers.append(start_worker(env, home / "logs" / f"worker-{count}.log", f"w{count}"))
                    print(f"{count} worker(s):")
                    walls.append(run_search(client, {**body, "seed": count}))
        finally:
            for proc in (*workers, api):
                proc.terminate()
            for proc in (*workers, api):
                proc.wait(timeout=60)
    load = os.getloadavg()[0]
    print(f"wall 1 worker {walls[0]:.1f} s, 2 workers {walls[1]:.1f} s: x{walls[0] / walls[1]:.2f} faster")
    print(f"({os.cpu_count()} cores, load average {load:.1f} at the end)")


if __name__ == "__main__":
    main()
