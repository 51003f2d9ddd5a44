"""`squeeze submit`: the command-line client a person or a CI job uses against a running Squeeze.

Uploads a model (or takes an existing model id), submits a spec, follows the job with progress bars
(upload bytes, then job progress and current pass), downloads the artifacts and prints the report's
headline numbers. Exits 0 when the job succeeded and met its constraints, 1 when it failed or missed
them, 2 when the service refused the request (the problem's code and detail are printed).
"""

import io
import json
import time
from pathlib import Path
from typing import IO, Any, cast

import httpx
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

TERMINAL = ("succeeded", "failed", "cancelled")


class RefusedError(Exception):
    """The service answered with a problem+json error."""


class _ProgressReader(io.RawIOBase):
    """A readable file that advances a progress bar as httpx reads it for the upload."""

    def __init__(self, fh: IO[bytes], progress: Progress, task: TaskID) -> None:
        super().__init__()
        self.fh, self.progress, self.task = fh, progress, task

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.progress.advance(self.task, len(data))
        return data


def _checked(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            body = response.json()
            message = f"{response.status_code} {body.get('code')}: {body.get('detail')}"
        except ValueError:
            message = f"{response.status_code}: {response.text[:500]}"
        raise RefusedError(message)
    return response.json()


def _upload(client: httpx.Client, path: Path, progress: Progress) -> dict[str, Any]:
    task = progress.add_task(f"upload {path.name}", total=path.stat().st_size)
    with path.open("rb") as fh:
        reader = cast(IO[bytes], _ProgressReader(fh, progress, task))
        body = _checked(client.post("/v1/models", files={"file": (path.name, reader)}))
    progress.update(task, completed=path.stat().st_size)
    return dict(body)


def _follow(client: httpx.Client, job_id: str, progress: Progress, poll_s: float) -> dict[str, Any]:
    task = progress.add_task(f"job {job_id}", total=1.0)
    while True:
        job: dict[str, Any] = _checked(client.get(f"/v1/jobs/{job_id}"))
        label = f"job {job_id}: {job['status']}" + (f" · {job['current_pass']}" if job.get("current_pass") else "")
        progress.update(task, completed=job["progress"], description=label)
        if job["status"] in TERMINAL:
            return job
        time.sleep(poll_s)


def _summary(console: Console, report: dict[str, Any]) -> None:
    original, result = report["original"], report["result"]
    console.print(
        f"size {original['size_bytes'] / 1e6:.2f} MB -> {result['size_bytes'] / 1e6:.2f} MB "
        f"(x{result.get('size_ratio') or 0:.2f} smaller)"
    )
    fid = result.get("fidelity") or {}
    if fid.get("cosine_mean") is not None:
        console.print(f"fidelity: cosine mean {fid['cosine_mean']:.4f}, min {fid['cosine_min']:.4f}")
    for batch, ratio in (result.get("speedup_p50") or {}).items():
        console.print(f"latency p50 at batch {batch}: x{ratio:.2f} faster than the original")
    constraints = report.get("constraints") or {}
    if constraints.get("checks"):
        console.print(f"constraints {constraints.get('verdict')}: {json.dumps(constraints['checks'])}")


def submit(
    url: str,
    api_key: str | None,
    model: str,
    spec: dict[str, Any],
    out: Path | None,
    poll_s: float = 1.0,
    console: Console | None = None,
) -> int:
    """Upload (when `model` is a file), submit, follow, download; the exit status described above."""
    console = console or Console(stderr=True)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeElapsedColumn())
    with (
        httpx.Client(base_url=url, headers=headers, timeout=300) as client,
        Progress(*columns, console=console, transient=False) as progress,
    ):
        try:
            path = Path(model)
            model_id = _upload(client, path, progress)["id"] if path.is_file() else model
            job = _checked(client.post("/v1/jobs", json={**spec, "model_id": model_id}))
            job = _follow(client, job["id"], progress, poll_s)
        except RefusedError as exc:
            console.print(f"[red]refused[/red] {exc}")
            return 2
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        console.print(f"[red]job {job['id']} {job['status']}[/red] {error.get('code')}: {error.get('message')}")
        return 1
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        report = _checked(client.get(f"/v1/jobs/{job['id']}/report"))
        _summary(console, report)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for artifact in _checked(client.get(f"/v1/jobs/{job['id']}/artifacts")):
                target = out / Path(artifact["name"]).name
                with (
                    client.stream("GET", f"/v1/artifacts/{artifact['id']}/content") as response,
                    target.open("wb") as fh,
                ):
                    for chunk in response.iter_bytes():
                        fh.write(chunk)
                console.print(f"saved {target} ({artifact['size_bytes']} bytes, sha256 {artifact['sha256'][:12]}…)")
    return 1 if (report.get("constraints") or {}).get("verdict") == "fail" else 0
