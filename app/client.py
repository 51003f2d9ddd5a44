"""`squeeze submit`: the command-line client a person or a CI job uses against a running Squeeze.

Uploads a model (or takes an existing model id), submits a spec, follows the job with progress bars
(upload bytes, then job progress and current pass), downloads the artifacts and prints the report's
headline numbers (the verdict, its warnings, the speedup with its interval). Exit status, for a CI step:
0 the job succeeded and its verdict is pass; 1 it failed, or missed a constraint or the fidelity floor;
2 the service refused the request (the problem's code and detail are printed), or the command line was
wrong; 3 it succeeded with warnings (slower or larger than the original); 4 the server could not be reached.
"""

import io
import time
from pathlib import Path
from typing import IO, Any, cast

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

TERMINAL = ("succeeded", "failed", "cancelled")
MET, FAILED, REFUSED, WARNED, UNREACHABLE = 0, 1, 2, 3, 4
EXIT_BY_VERDICT = {"pass": MET, "warn": WARNED, "fail": FAILED}


class RefusedError(Exception):
    """The service answered with a problem+json error."""


class AmountColumn(ProgressColumn):
    """Bytes for the upload bar, a percentage for the job bar (its progress is a share, not bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.bytes = DownloadColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "bytes":
            return self.bytes.render(task)
        return Text(f"{task.percentage:>3.0f}%")


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
    task = progress.add_task(f"upload {path.name}", total=path.stat().st_size, unit="bytes")
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
    for c in result.get("latency_comparison") or []:
        if c["headline"]:
            ci = c["speedup_ci95"]
            console.print(
                f"latency at batch {c['batch_size']}: x{c['speedup']:.2f} the original's speed "
                f"(95% interval {ci['low']:.2f} to {ci['high']:.2f}): {c['reading']}"
            )
    constraints = report.get("constraints") or {}
    verdict = str(constraints.get("verdict"))
    colour = {"pass": "green", "warn": "yellow"}.get(verdict, "red")
    console.print(f"verdict [{colour}]{verdict.upper()}[/{colour}]: {constraints.get('reason')}")
    for warning in constraints.get("warnings") or []:
        console.print(f"[yellow]warning[/yellow] {warning}")


def submit(
    url: str,
    api_key: str | None,
    model: str,
    spec: dict[str, Any],
    out: Path | None,
    poll_s: float = 1.0,
    console: Console | None = None,
) -> int:
    """Upload (when `model` is a file), submit, follow, download; the exit status described above. An
    unreachable server is one line and UNREACHABLE, not a traceback."""
    console = console or Console(stderr=True)
    try:
        return _submit(url, api_key, model, spec, out, poll_s, console)
    except httpx.TransportError as exc:  # the network boundary: any transport failure means "not reachable"
        console.print(f"[red]cannot reach Squeeze at {url}[/red]: {type(exc).__name__}: {exc}; is it running?")
        return UNREACHABLE


def _submit(
    url: str, api_key: str | None, model: str, spec: dict[str, Any], out: Path | None, poll_s: float, console: Console
) -> int:
    """Upload, submit, follow, download and summarise; raises httpx.TransportError when the server is gone."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    columns = (TextColumn("{task.description}"), BarColumn(), AmountColumn(), TimeElapsedColumn())
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
            return REFUSED
    error = job.get("error") or {}
    if job["status"] != "succeeded" and error.get("code") != "constraints_not_met":
        console.print(f"[red]job {job['id']} {job['status']}[/red] {error.get('code')}: {error.get('message')}")
        return FAILED
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
    return EXIT_BY_VERDICT[(report.get("constraints") or {}).get("verdict", "fail")]
