"""`squeeze submit` and `squeeze search`: the command-line client a person or a CI job uses against a running
Squeeze (`search` is at the end of this module).

Uploads a model (an .onnx with external data goes with the data files beside it that its graph names, as the
API's `data` fields), or takes an existing model id, submits a spec, follows the job with progress bars
(upload bytes, then job progress and current pass, each change long-polled with `?wait=30`), downloads
the artifacts and prints the report's headline numbers (the verdict, its warnings, the speedup with its
interval). Exit status, for a CI step: 0 the job succeeded and its verdict is pass; 1 it failed, or
missed a constraint or the fidelity floor; 2 the service refused the request (the problem's code and
detail are printed), or the command line was wrong; 3 it succeeded with warnings (slower or larger than
the original); 4 the server could not be reached.
"""

import contextlib
import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import httpx
import onnx
from google.protobuf.message import DecodeError
from rich.console import Console
from rich.live import Live
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
from rich.table import Table
from rich.text import Text

from app.services.onnx_skeleton import SkeletonError, SkeletonTooLarge, read_skeleton

TERMINAL = ("succeeded", "failed", "cancelled")
WAIT_S = 30.0
"""How long one long-poll request waits on the server for a change."""
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


def external_data_files(path: Path) -> list[Path]:
    """The files beside an .onnx model that its initializers keep their data in (torch 2.13's exporter writes
    `model.onnx.data`), read from the graph without its weights. A location outside the model's folder, a
    missing file or bytes that are not ONNX give nothing to attach: the server's refusal then says what is
    wrong with the upload."""
    if path.suffix.lower() != ".onnx":
        return []
    try:
        with path.open("rb") as fh:
            model = read_skeleton(fh, path.stat().st_size).model
    except (SkeletonError, SkeletonTooLarge, DecodeError):
        return []
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    folder = path.parent.resolve()
    found = [(folder / location).resolve() for location in sorted(locations)]
    return [file for file in found if file.parent == folder and file.is_file()]


def _upload(client: httpx.Client, path: Path, progress: Progress) -> dict[str, Any]:
    """The model file, and its external data files in `data` fields of the same request."""
    parts = [path, *external_data_files(path)]
    total = sum(part.stat().st_size for part in parts)
    label = path.name + (f" + {len(parts) - 1} data file(s)" if len(parts) > 1 else "")
    task = progress.add_task(f"upload {label}", total=total, unit="bytes")
    with contextlib.ExitStack() as stack:
        files = [
            (field, (part.name, cast(IO[bytes], _ProgressReader(stack.enter_context(part.open("rb")), progress, task))))
            for field, part in zip(["file"] + ["data"] * (len(parts) - 1), parts, strict=True)
        ]
        body = _checked(client.post("/v1/models", files=files))
    progress.update(task, completed=total)
    return dict(body)


def follow(client: httpx.Client, job_id: str, wait_s: float = WAIT_S) -> Iterator[dict[str, Any]]:
    """The job now and at each change until it ends, by long-polling: each request waits on the server up
    to `wait_s` for the job's ETag to change, so a job that runs for an hour costs a request per change (or
    per `wait_s`), not one per poll interval."""
    response = client.get(f"/v1/jobs/{job_id}")
    tag = ""
    while True:
        if response.status_code != 304:  # 304: nothing changed while the server waited; ask again
            job: dict[str, Any] = _checked(response)
            yield job
            if job["status"] in TERMINAL:
                return
            tag = response.headers.get("etag", "")
        response = client.get(
            f"/v1/jobs/{job_id}", params={"wait": wait_s}, headers={"If-None-Match": tag}, timeout=wait_s + 30
        )


def _follow(client: httpx.Client, job_id: str, progress: Progress) -> dict[str, Any]:
    task = progress.add_task(f"job {job_id}", total=1.0)
    job: dict[str, Any] = {}
    for job in follow(client, job_id):
        label = f"job {job_id}: {job['status']}" + (f" · {job['current_pass']}" if job.get("current_pass") else "")
        progress.update(task, completed=job["progress"], description=label)
    return job


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
    console: Console | None = None,
) -> int:
    """Upload (when `model` is a file), submit, follow, download; the exit status described above. An
    unreachable server is one line and UNREACHABLE, not a traceback."""
    console = console or Console(stderr=True)
    try:
        return _submit(url, api_key, model, spec, out, console)
    except httpx.TransportError as exc:  # the network boundary: any transport failure means "not reachable"
        console.print(f"[red]cannot reach Squeeze at {url}[/red]: {type(exc).__name__}: {exc}; is it running?")
        return UNREACHABLE


def _submit(url: str, api_key: str | None, model: str, spec: dict[str, Any], out: Path | None, console: Console) -> int:
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
            job = _follow(client, job["id"], progress)
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


def _dataset_id(client: httpx.Client, value: str | None, progress: Progress) -> str | None:
    """A dataset id as given (ds_...), or the id of the file uploaded now."""
    if value is None or value.startswith("ds_"):
        return value
    path = Path(value)
    task = progress.add_task(f"upload {path.name}", total=path.stat().st_size, unit="bytes")
    with path.open("rb") as fh:
        body = _checked(client.post("/v1/datasets", files={"file": (path.name, fh)}))
    progress.update(task, completed=path.stat().st_size)
    return str(body["id"])


def candidates_table(search: dict[str, Any], front_only: bool = False) -> Table:
    """The search's candidates (or its front) as a rich table: state, latency, size, quality."""
    title = "Pareto front" if front_only else f"search {search['id']}: {search['status']}"
    table = Table(title=title)
    for column in ("candidate", "state", "p50 ms", "size", "quality", "front"):
        table.add_column(column, justify="left" if column in ("candidate", "state") else "right")
    for c in search["candidates"]:
        if front_only and not c["on_front"]:
            continue
        p = c.get("point") or {}
        chosen = " (chosen)" if c["job_id"] == search.get("chosen_job_id") else ""
        table.add_row(
            c["label"] + chosen,
            c["state"] + (" (cached)" if c.get("reused_from") else ""),
            f"{p['p50_ms']:.3f}" if p else "–",
            f"{p['size_bytes'] / 1e3:.1f} kB" if p else "–",
            f"{p['quality_metric']} {p['quality']:.4f}" if p else "–",
            "yes" if c["on_front"] else "",
        )
    return table


def search(
    url: str,
    api_key: str | None,
    model: str,
    spec: dict[str, Any],
    datasets: dict[str, str | None],
    poll_s: float = 1.0,
    console: Console | None = None,
) -> int:
    """Upload the model and datasets given as files, start a search, show its candidates live, print the
    front and the verdict. Exit status: 0 a candidate was chosen; 1 none met the constraints (or the search
    was cancelled); 2 refused; 4 the server could not be reached."""
    console = console or Console(stderr=True)
    try:
        return _search(url, api_key, model, spec, datasets, poll_s, console)
    except httpx.TransportError as exc:  # the network boundary, as in submit()
        console.print(f"[red]cannot reach Squeeze at {url}[/red]: {type(exc).__name__}: {exc}; is it running?")
        return UNREACHABLE


def _search(
    url: str,
    api_key: str | None,
    model: str,
    spec: dict[str, Any],
    datasets: dict[str, str | None],
    poll_s: float,
    console: Console,
) -> int:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    columns = (TextColumn("{task.description}"), BarColumn(), AmountColumn(), TimeElapsedColumn())
    with httpx.Client(base_url=url, headers=headers, timeout=300) as client:
        try:
            with Progress(*columns, console=console, transient=True) as progress:
                path = Path(model)
                model_id = _upload(client, path, progress)["id"] if path.is_file() else model
                ids = {field: _dataset_id(client, value, progress) for field, value in datasets.items()}
            body = {**spec, "model_id": model_id, **{k: v for k, v in ids.items() if v and k != "evaluate"}}
            if ids.get("evaluate"):
                body["evaluate"] = {**body.get("evaluate", {}), "dataset_id": ids["evaluate"]}
            found: dict[str, Any] = _checked(client.post("/v1/searches", json=body))
            with Live(candidates_table(found), console=console, refresh_per_second=4) as live:
                while found["status"] == "running":
                    time.sleep(poll_s)
                    found = _checked(client.get(f"/v1/searches/{found['id']}"))
                    live.update(candidates_table(found))
        except RefusedError as exc:
            console.print(f"[red]refused[/red] {exc}")
            return REFUSED
    console.print(candidates_table(found, front_only=True))
    console.print(f"verdict: {found['verdict']}")
    console.print(f"report: {url.rstrip('/')}{found['report_url']}")
    return MET if found["chosen_job_id"] and found["status"] == "succeeded" else FAILED
