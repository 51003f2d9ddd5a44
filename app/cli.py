"""`squeeze` command line: `squeeze serve` runs migrations, then the API and one Celery worker;
`squeeze worker` runs a worker alone; `squeeze migrate` only migrates; `squeeze keys` creates, lists
and revokes API keys; `squeeze submit` is the client: upload, submit, follow with progress bars, download;
`squeeze search MODEL` runs a search with a live table of candidates and prints the front; `squeeze examples
DIR` writes the README walk-through's models and datasets."""

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from app.settings import get_settings


def worker_command(queues: str, name: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "worker",
        "-Q",
        queues,
        "--pool",
        "solo",
        "--concurrency",
        "1",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-n",
        name,
        "--loglevel",
        "INFO",
    ]


def gpu_devices(gpus: str) -> list[str]:
    """The device indices `--gpus` names: `all` is every GPU nvidia-smi lists (within CUDA_VISIBLE_DEVICES,
    when set); else a comma-separated list."""
    if gpus != "all":
        return [g.strip() for g in gpus.split(",") if g.strip()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [g.strip() for g in visible.split(",") if g.strip()]
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(f"--gpus all: nvidia-smi found no GPU ({exc}); give the indices, e.g. --gpus 0,1") from exc
    return [line.strip() for line in listed.splitlines() if line.strip()]


def gpu_workers(queues: str, name: str, devices: list[str]) -> int:
    """One worker per GPU, each seeing only its own device (as cuda:0); SIGTERM or Ctrl-C stops them all."""
    if not devices:
        raise SystemExit("--gpus: no GPU to start a worker on")
    children = [
        subprocess.Popen(
            worker_command(queues, name.replace("@", f"-gpu{device}@", 1)),
            env={**os.environ, "CUDA_VISIBLE_DEVICES": device},
        )
        for device in devices
    ]

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        return max(child.wait() for child in children)
    except KeyboardInterrupt:
        for child in children:
            child.terminate()
        for child in children:  # a worker lets its job run shutdown_grace_s, then hands it back
            child.wait(timeout=get_settings().shutdown_grace_s + 30)
        return 0


def migrate() -> None:
    from app.db.migrate import upgrade_to_head

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.effective_database_url)


def keys(args: argparse.Namespace) -> int:
    """`squeeze keys create|revoke|list`: the token is printed once, at creation, and never stored."""
    from app.db.session import session_scope
    from app.errors import SqueezeError
    from app.services import keys as service

    settings = get_settings()
    if settings.database_url is None and not (settings.home / "squeeze.db").is_file():
        print(
            f"squeeze keys: no Squeeze database in SQUEEZE_HOME={settings.home}: a key made here would not be "
            "the server's. Run this with the server's SQUEEZE_HOME (or DATABASE_URL), or start the service "
            "once (make run) to create it",
            file=sys.stderr,
        )
        return 1
    migrate()
    with session_scope(settings.effective_database_url) as session:
        try:
            if args.keys_command == "create":
                new = service.create_key(session, args.tenant)
                where = "DATABASE_URL" if settings.database_url else f"SQUEEZE_HOME={settings.home}"
                print(
                    f"(database of {where})\n"
                    f"API key for tenant {args.tenant!r} (shown once; keep it secret):\n{new.token}\n"
                    f"Webhook signing secret of tenant {args.tenant!r}:\n{new.webhook_secret}"
                )
            elif args.keys_command == "revoke":
                key = service.revoke_key(session, args.key)
                print(f"revoked {key.id} (prefix {key.prefix}, tenant {key.tenant})")
            else:
                print(f"{'id':<26} {'prefix':<13} {'tenant':<20} {'created':<20} revoked")
                for key in service.list_keys(session):
                    revoked = key.revoked_at.strftime("%Y-%m-%d %H:%M") if key.revoked_at else "-"
                    print(
                        f"{key.id:<26} {key.prefix:<13} {key.tenant:<20} "
                        f"{key.created_at.strftime('%Y-%m-%d %H:%M'):<20} {revoked}"
                    )
        except SqueezeError as exc:
            print(f"squeeze keys: {exc.message}", file=sys.stderr)
            return 1
    return 0


def local_key() -> str:
    """The embedded default's key (tenant `local`), made on first start and kept in SQUEEZE_HOME."""
    from app.db.session import session_scope
    from app.services.keys import ensure_local_key

    settings = get_settings()
    with session_scope(settings.effective_database_url) as session:
        return ensure_local_key(session, settings.local_key_file)


def serve(host: str, port: int, workers: int, api_processes: int) -> int:
    """API in this process, workers as children; Ctrl-C or SIGTERM stops them all."""
    import uvicorn

    migrate()
    settings = get_settings()
    token = local_key()
    queues = ",".join(settings.queue_name(d) for d in ("cpu",))
    children = [subprocess.Popen(worker_command(queues, f"worker{i}@%h")) for i in range(workers)]

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(
        f"Squeeze: API on http://{host}:{port} (docs at /docs, {api_processes} process(es)), {workers} worker(s), "
        f"home {settings.home}",
        flush=True,
    )
    print(
        f"Squeeze: API key of tenant 'local' (kept in {settings.local_key_file}):\n  {token}\n"
        f"  e.g. curl -H 'Authorization: Bearer {token}' http://{host}:{port}/v1/models",
        flush=True,
    )
    try:
        uvicorn.run("app.main:create_app", factory=True, host=host, port=port, workers=api_processes, log_level="info")
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            child.terminate()
        for child in children:  # a worker lets its job run shutdown_grace_s, then hands it back
            child.wait(timeout=settings.shutdown_grace_s + 30)
    return 0


def read_spec(parser: argparse.ArgumentParser, value: str) -> dict[str, Any]:
    """`--spec`: inline JSON (starts with `{`) or a JSON file; a user error ends in one line, exit 2."""
    inline = value.lstrip().startswith("{")
    path = Path(value)
    if not inline and not path.is_file():
        parser.error(f"--spec {value!r}: no such file; give a JSON file or inline JSON starting with '{{'")
    text = value if inline else path.read_text()
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        parser.error(f"--spec {'(inline)' if inline else value}: not valid JSON: {exc.msg} at line {exc.lineno}")
    if not isinstance(spec, dict):
        parser.error("--spec: the job spec must be a JSON object with passes")
    return spec


def add_search_parser(sub: Any) -> None:
    p = sub.add_parser(
        "search",
        help="search compression pipelines for a model; live table of candidates, the Pareto front at the end",
        description="Exit status: 0 a candidate was chosen; 1 none met the constraints; 2 refused (or a bad "
        "command line); 4 server unreachable.",
    )
    p.add_argument("model", help="a model file to upload, or the id of an uploaded model (mdl_...)")
    p.add_argument("--dataset", help="the evaluation dataset: a file to upload or ds_... (labels give accuracy)")
    p.add_argument("--calibration-dataset", help="inputs for static int8 calibration: a file or ds_...")
    p.add_argument("--train-dataset", help="training data for pruning, low-rank and distillation: a file or ds_...")
    p.add_argument("--max-accuracy-drop", type=float, help="e.g. 0.01 for one point of top-1 (needs labels)")
    p.add_argument("--min-cosine", type=float, help="the result's mean cosine to the original, e.g. 0.99")
    p.add_argument(
        "--objective", choices=("latency", "size", "accuracy"), default="latency", help="what the chosen one is best at"
    )
    p.add_argument("--max-candidates", type=int, default=8, help="candidates run at most (default 8)")
    p.add_argument("--max-wall-s", type=float, default=3600, help="wall-time budget in seconds (default 3600)")
    p.add_argument("--spec", help="more of the search spec (JSON file or inline), e.g. evaluate.latency or space")
    p.add_argument("--url", default=os.environ.get("SQUEEZE_URL", "http://127.0.0.1:8000"), help="the Squeeze API")
    p.add_argument("--api-key", default=os.environ.get("SQUEEZE_API_KEY"), help="bearer key ($SQUEEZE_API_KEY)")


def search_spec(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, Any]:
    """The search spec from the command line's options, on top of --spec."""
    spec = read_spec(parser, args.spec) if args.spec else {}
    constraints = {**spec.get("constraints", {})}
    if args.max_accuracy_drop is not None:
        constraints["max_accuracy_drop"] = args.max_accuracy_drop
    if args.min_cosine is not None:
        constraints["min_cosine"] = args.min_cosine
    budget = {**spec.get("budget", {}), "max_candidates": args.max_candidates, "max_wall_s": args.max_wall_s}
    if constraints:
        spec["constraints"] = constraints
    return {**spec, "objective": args.objective, "budget": budget}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="squeeze", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="migrate, then run the API and worker(s)")
    p_serve.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"), help="address to listen on")
    p_serve.add_argument("--port", type=int, default=get_settings().port, help="port to listen on (default: $PORT)")
    p_serve.add_argument("--workers", type=int, default=1, help="Celery worker processes to start beside the API")
    p_serve.add_argument(
        "--api-processes",
        type=int,
        default=get_settings().api_processes,
        help="API processes on the port (default: $API_PROCESSES, 2)",
    )
    p_worker = sub.add_parser("worker", help="run one Celery worker")
    p_worker.add_argument("--queues", default="cpu", help="comma-separated: cpu, gpu")
    p_worker.add_argument("--name", default="worker@%h", help="the Celery node name (%%h: the host name)")
    p_worker.add_argument(
        "--gpus",
        help="`all` or device indices (0,1,...): one worker process per GPU, each with CUDA_VISIBLE_DEVICES set "
        "to its device, so a host with N GPUs runs N jobs at once",
    )
    sub.add_parser("migrate", help="apply database migrations")
    p_examples = sub.add_parser("examples", help="write the README walk-through's example models and datasets")
    p_examples.add_argument("folder", type=Path, help="where to write them (made if missing)")
    p_submit = sub.add_parser(
        "submit",
        help="upload a model, run a job, follow it, download the result",
        description="Exit status: 0 met; 1 failed or missed a constraint; 2 refused (or a bad command line); "
        "3 met with warnings (slower or larger than the original); 4 server unreachable.",
    )
    p_submit.add_argument("model", help="a model file to upload, or the id of an uploaded model (mdl_...)")
    p_submit.add_argument(
        "--spec", required=True, help="the job spec: a JSON file, or inline JSON; model_id is filled in"
    )
    p_submit.add_argument(
        "--url",
        default=os.environ.get("SQUEEZE_URL", "http://127.0.0.1:8000"),
        help="the Squeeze API (default: $SQUEEZE_URL, else http://127.0.0.1:8000)",
    )
    p_submit.add_argument(
        "--api-key", default=os.environ.get("SQUEEZE_API_KEY"), help="bearer key (default: $SQUEEZE_API_KEY)"
    )
    p_submit.add_argument("--out", type=Path, help="folder to download the artifacts into")
    add_search_parser(sub)
    p_keys = sub.add_parser("keys", help="create, list and revoke API keys (in the server's SQUEEZE_HOME)")
    keys_sub = p_keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("create", help="make a key for a tenant (printed once)").add_argument(
        "--tenant", required=True, help="the tenant the key acts for; made on first use"
    )
    keys_sub.add_parser("revoke", help="revoke a key at once").add_argument("key", help="its prefix or id")
    keys_sub.add_parser("list", help="every key: id, prefix, tenant, created, revoked")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if args.command == "submit":
        from app.client import submit

        spec = read_spec(parser, args.spec)
        if not args.model.startswith("mdl_") and not Path(args.model).is_file():
            parser.error(f"{args.model!r}: no such model file (or give an uploaded model's id, mdl_...)")
        return submit(args.url, args.api_key, args.model, spec, args.out)
    if args.command == "search":
        from app.client import search

        for value in (args.model, args.dataset, args.calibration_dataset, args.train_dataset):
            if value and not value.startswith(("mdl_", "ds_")) and not Path(value).is_file():
                parser.error(f"{value!r}: no such file (or give an uploaded id, mdl_... or ds_...)")
        datasets = {
            "evaluate": args.dataset,
            "calibration_dataset_id": args.calibration_dataset,
            "train_dataset_id": args.train_dataset,
        }
        return search(args.url, args.api_key, args.model, search_spec(parser, args), datasets)
    if args.command == "examples":
        from workers.examples import write_examples

        for path in write_examples(args.folder):
            print(path)
        return 0
    if args.command == "serve":
        return serve(args.host, args.port, args.workers, args.api_processes)
    if args.command == "keys":
        return keys(args)
    if args.command == "worker":
        migrate()
        settings = get_settings()
        queues = ",".join(settings.queue_name(q.strip().replace("gpu", "cuda")) for q in args.queues.split(","))
        if args.gpus is None:
            os.execv(sys.executable, worker_command(queues, args.name))
        return gpu_workers(queues, args.name, gpu_devices(args.gpus))
    migrate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
