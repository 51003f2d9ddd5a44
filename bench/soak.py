"""Soak: a few hundred small jobs while a random worker is SIGKILLed every few seconds; prints how many
ended succeeded, how many were lost, and how many got more than one set of artifacts (must be 0 and 0).

    python -m bench.soak [--jobs 200] [--workers 3] [--kill-every 5]

Last run (2026-11-28, 2 shared cores at load ~10, 5 s leases, `--jobs 200 --workers 3 --kill-every 6`):
200 submitted, 199 worker SIGKILLs, 200 succeeded, 0 lost, 0 with more than one set of artifacts, one
stored attempt folder per job; attempts per job {1: 114, 2: 49, 3: 25, 4: 6, 5: 2, 6: 4}; 1276 s wall.

Runs on its own PostgreSQL cluster and Redis (started and removed here, like tests/faults), so it needs
the PostgreSQL server binaries and redis-server; as root it runs PostgreSQL as the `postgres` user.
"""

import argparse
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from app.db.models import Artifact, Job
from app.db.session import session_scope
from app.storage import Store
from tests.conftest import upload
from tests.faults.conftest import FAST_LEASES, Cluster, PrivatePostgres, PrivateRedis, quick_job, start_api


def build_mlp(folder: Path) -> Path:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    path = folder / "mlp.onnx"
    torch.onnx.export(
        model,
        (torch.randn(2, 64),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamo=True,
        external_data=False,
        dynamic_shapes=({0: torch.export.Dim("batch")},),
    )
    return path


@dataclass
class Tally:
    """How a batch of jobs ended: what the soak prints and the multi-host test asserts."""

    jobs: int
    statuses: Counter[str]
    attempts: Counter[int]
    lost: int
    """Jobs that did not succeed."""
    doubled: int
    """Jobs with more than one set (model + report) of registered artifacts."""
    stored: int
    """Attempt folders holding files in the store, over all the jobs (one per job when clean)."""

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and self.stored == self.jobs


def tally(database_url: str, store: Store, job_ids: list[str]) -> Tally:
    with session_scope(database_url) as session:
        rows = session.execute(select(Job.id, Job.status, Job.attempts).where(Job.id.in_(job_ids))).all()
        per_job = select(Artifact.job_id, func.count()).where(Artifact.job_id.in_(job_ids)).group_by(Artifact.job_id)
        sets = dict(session.execute(per_job).all())
    statuses = Counter(r.status for r in rows)
    stored = sum(len({key.split("/")[2] for key in store.list_keys(f"jobs/{job_id}/")}) for job_id in job_ids)
    return Tally(
        jobs=len(job_ids),
        statuses=statuses,
        attempts=Counter(r.attempts for r in rows),
        lost=len(job_ids) - statuses["succeeded"],
        doubled=sum(1 for r in rows if sets.get(r.id, 0) > 2),
        stored=stored,
    )


def soak(jobs: int, workers: int, kill_every: float, seed: int, timeout: float) -> int:
    rng = random.Random(seed)
    home = Path(tempfile.mkdtemp(prefix="squeeze-soak-"))
    (home / "logs").mkdir()
    pg, redis = PrivatePostgres(), PrivateRedis(home)
    pg.start()
    redis.start()
    cluster: Cluster | None = None
    try:
        database_url = pg.create_database("soak")
        # More attempts than the tests allow: the soak measures loss and duplication, not the attempt limit.
        env = {
            "SQUEEZE_HOME": str(home),
            "QUEUE_PREFIX": f"s{uuid.uuid4().hex[:6]}-",
            "DATABASE_URL": database_url,
            "BROKER_URL": redis.url,
            **FAST_LEASES,
            "MAX_ATTEMPTS": "20",
        }
        cluster = Cluster(start_api(env, home / "logs", database_url), env, home / "logs", pg, redis)
        with cluster.stack.client() as client:
            body = quick_job(str(upload(client, build_mlp(home))["id"]))
            for _ in range(workers):
                cluster.start_worker(wait=False)
            started = time.monotonic()
            job_ids = []
            for _ in range(jobs):
                response = client.post("/v1/jobs", json=body)
                assert response.status_code == 202, response.text
                job_ids.append(response.json()["id"])
            kills, next_kill = 0, time.monotonic() + rng.uniform(0.5, 1.5) * kill_every
            while time.monotonic() - started < timeout:
                with session_scope(database_url) as session:
                    open_jobs = session.scalar(
                        select(func.count())
                        .select_from(Job)
                        .where(Job.id.in_(job_ids), Job.status.in_(("queued", "running")))
                    )
                if not open_jobs:
                    break
                if time.monotonic() >= next_kill:
                    alive = [w for w in cluster.workers if w.poll() is None]
                    victim = rng.choice(alive)
                    victim.send_signal(signal.SIGKILL)
                    victim.wait()
                    kills += 1
                    cluster.start_worker(wait=False)
                    next_kill = time.monotonic() + rng.uniform(0.5, 1.5) * kill_every
                time.sleep(0.5)
            wall = time.monotonic() - started
        result = tally(database_url, cluster.stack.store(), job_ids)
        print(f"jobs submitted        {jobs}")
        print(f"workers               {workers} (SIGKILLed {kills} times, one every ~{kill_every:.0f} s)")
        print(f"statuses              {dict(result.statuses)}")
        print(f"attempts per job      {dict(sorted(result.attempts.items()))}")
        print(f"not succeeded (lost)  {result.lost}")
        print(
            f"jobs with >1 set      {result.doubled} (registered artifact rows), stored attempt folders {result.stored}"
        )
        print(f"wall time             {wall:.0f} s, {jobs / wall * 60:.1f} jobs/min")
        return 0 if result.clean else 1
    finally:
        if cluster is not None:
            cluster.stop_workers()
            cluster.stack.api.kill()
        redis.stop()
        pg.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between worker kills")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the private services on the way out
    return soak(args.jobs, args.workers, args.kill_every, args.seed, args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
