"""`squeeze` command line: `squeeze serve` runs migrations, then the API and one Celery worker;
`squeeze worker` runs a worker alone; `squeeze migrate` only migrates."""

import argparse
import os
import signal
import subprocess
import sys
from types import FrameType

from app.settings import get_settings


def worker_command(queues: str, name: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-Q", queues, "--pool", "solo",
            "--concurrency", "1", "--without-gossip", "--without-mingle", "--without-heartbeat", "-n", name,
            "--loglevel", "INFO"]


def migrate() -> None:
    from app.db.migrate import upgrade_to_head

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.effective_database_url)


def serve(host: str, port: int, workers: int) -> int:
    """API in this process, workers as children; Ctrl-C or SIGTERM stops them all."""
    import uvicorn

    migrate()
    settings = get_settings()
    queues = ",".join(settings.queue_name(d) for d in ("cpu",))
    children = [subprocess.Popen(worker_command(queues, f"worker{i}@%h")) for i in range(workers)]

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"Squeeze: API on http://{host}:{port} (docs at /docs), {workers} worker(s), home {settings.home}",
          flush=True)
    try:
        uvicorn.run("app.main:create_app", factory=True, host=host, port=port, log_level="info")
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
        for child in children:  # a worker lets its job run shutdown_grace_s, then hands it back
            child.wait(timeout=settings.shutdown_grace_s + 30)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="squeeze", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="migrate, then run the API and worker(s)")
    p_serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    p_serve.add_argument("--port", type=int, default=get_settings().port)
    p_serve.add_argument("--workers", type=int, default=1)
    p_worker = sub.add_parser("worker", help="run one Celery worker")
    p_worker.add_argument("--queues", default="cpu", help="comma-separated: cpu, gpu")
    p_worker.add_argument("--name", default="worker@%h")
    sub.add_parser("migrate", help="apply database migrations")
    args = parser.parse_args()
    if args.command == "serve":
        return serve(args.host, args.port, args.workers)
    if args.command == "worker":
        migrate()
        settings = get_settings()
        queues = ",".join(settings.queue_name(q.strip().replace("gpu", "cuda")) for q in args.queues.split(","))
        os.execv(sys.executable, worker_command(queues, args.name))
    migrate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
