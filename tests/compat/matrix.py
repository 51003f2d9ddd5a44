"""The compatibility matrix: every corpus model through every ONNX pipeline, via the real API. A cell is an
artifact that loads in onnxruntime with default session options and meets its floor, measured here on the
downloaded file against the upload, or a refusal with a catalogued code. Shared by tests/compat and
bench/compat_matrix.py."""

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort

from tests.compat.corpus import CorpusModel, has_constant_matmul

PIPELINES: dict[str, Callable[[str], list[dict]]] = {
    "dynamic": lambda ds: [{"type": "quantize", "method": "dynamic"}],
    "optimize+dynamic": lambda ds: [{"type": "optimize"}, {"type": "quantize", "method": "dynamic"}],
    "static": lambda ds: [{"type": "quantize", "method": "static", "calibration": {"dataset_id": ds, "samples": 32}}],
    "int4": lambda ds: [{"type": "quantize", "method": "int4"}],
    "fp16": lambda ds: [{"type": "quantize", "method": "fp16"}],
    "onnx->torch->onnx": lambda ds: [{"type": "convert", "to": "torch"}, {"type": "convert", "to": "onnx"}],
}
"""column -> the job's passes, given the uploaded dataset (calibration and evaluation)"""
IN_FLIGHT = 16
"""jobs queued or running at once: below a tenant's default limit of 20"""
FLOORS = {
    "dynamic": 0.98,
    "optimize+dynamic": 0.98,
    "static": 0.98,
    "int4": 0.95,
    "fp16": 0.99,
    "onnx->torch->onnx": 0.999,
}
"""the least mean cosine to the upload, on every float output of the downloaded artifact"""
EXPECTED_REFUSALS: dict[tuple[str, str], str] = {
    # empty since the ONNX -> torch converter covers GRU, ConvTranspose, Resize, LayerNormalization and Slice;
    # a cell that must refuse is one line here, e.g. ("gru_recogniser14", "fp16"): "quantization_failed",
}
"""(model, column) -> the error code the job is expected to fail with; every other cell must give an
artifact. Shrink it as passes learn more: one line per cell."""


@dataclass
class Outcome:
    model: str
    column: str
    status: str
    """artifact, refused, or what went wrong"""
    cosine: float | None = None
    """measured here on the downloaded artifact"""
    code: str | None = None
    message: str | None = None
    canonical: dict | None = None
    """the report's `canonical` section"""
    ops: frozenset[str] = frozenset()
    """the downloaded artifact's operator types"""

    @property
    def expected(self) -> bool:
        refusal = EXPECTED_REFUSALS.get((self.model, self.column))
        if refusal is not None:
            return self.status == "refused" and self.code == refusal
        return self.status == "artifact" and self.cosine is not None and self.cosine >= FLOORS[self.column]


def columns_for(model: CorpusModel) -> list[str]:
    """Every pipeline, int4 only where a MatMul holds a stored weight."""
    return [c for c in PIPELINES if c != "int4" or has_constant_matmul(model.path)]


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def specs(client: httpx.Client, corpus: list[CorpusModel]) -> dict[tuple[str, str], dict]:
    """Upload every model with its dataset; (model, column) -> the cell's job spec."""
    cells = {}
    for model in corpus:
        with model.path.open("rb") as fh:
            uploaded = client.post("/v1/models", files={"file": (model.path.name, fh)})
        assert uploaded.status_code == 201, f"{model.name}: {uploaded.text}"
        dataset = client.post("/v1/datasets", files={"file": (f"{model.name}.npz", _npz(model.data))})
        assert dataset.status_code == 201, f"{model.name}: {dataset.text}"
        for column in columns_for(model):
            cells[(model.name, column)] = {
                "model_id": uploaded.json()["id"],
                "passes": PIPELINES[column](dataset.json()["id"]),
                "evaluate": {"dataset_id": dataset.json()["id"], "latency": {"runs": 1, "warmup": 0}},
                "cache": False,  # every cell runs, never an earlier job's result
            }
    return cells


def run_jobs(client: httpx.Client, cells: dict[tuple[str, str], dict], timeout: float) -> dict[tuple[str, str], dict]:
    """Every cell's job run to a final state, IN_FLIGHT at a time (under the tenant's job limit); a cell
    missing from the answer did not end within `timeout`."""
    waiting, final = list(cells), {}
    running: dict[tuple[str, str], str] = {}
    deadline = time.monotonic() + timeout
    while (waiting or running) and time.monotonic() < deadline:
        while waiting and len(running) < IN_FLIGHT:
            cell = waiting.pop(0)
            response = client.post("/v1/jobs", json=cells[cell])
            assert response.status_code == 202, f"{cell}: {response.text}"
            running[cell] = response.json()["id"]
        for cell, job_id in list(running.items()):
            job = get(client, f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                final[cell] = job
                del running[cell]
        time.sleep(1)
    return final


def get(client: httpx.Client, url: str) -> httpx.Response:
    """GET, waiting out the API's rate limit (429 with Retry-After) as a polite client does."""
    while (response := client.get(url)).status_code == 429:
        time.sleep(float(response.headers.get("Retry-After", "1")))
    return response


def mean_cosine(reference: list[np.ndarray], result: list[np.ndarray]) -> float:
    """The least, over float outputs, of the per-sample cosine averaged over samples."""
    cosines = []
    for a, b in zip(reference, result, strict=True):
        if a.dtype.kind != "f":
            continue
        x, y = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
        norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
        cosines.append(float(np.mean((x * y).sum(1) / np.maximum(norms, 1e-12))))
    return min(cosines)


def outcome(client: httpx.Client, model: CorpusModel, column: str, job: dict | None, folder: Path) -> Outcome:
    """The cell: the downloaded artifact run with default session options against the upload, or the
    job's error."""
    if job is None:
        return Outcome(model.name, column, "timed out")
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        return Outcome(model.name, column, "refused", code=error.get("code"), message=error.get("message"))
    report = get(client, f"/v1/jobs/{job['id']}/report").json()
    download = get(client, f"/v1/artifacts/{report['result']['artifact_id']}/content")
    assert download.status_code == 200, f"{model.name} x {column}: {download.text[:300]}"
    content = download.content
    path = folder / f"{model.name}-{column.replace('>', '').replace('+', '-')}.onnx"
    path.write_bytes(content)
    feeds = {k: v for k, v in model.data.items() if k != "labels"}
    try:
        result = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception as exc:  # the cell's finding is that the artifact does not run; report it, do not stop
        return Outcome(model.name, column, "artifact does not run", message=str(exc)[:300])
    original = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"]).run(None, feeds)
    return Outcome(
        model.name,
        column,
        "artifact",
        cosine=mean_cosine(original, result),
        canonical=report.get("canonical"),
        ops=frozenset(n.op_type for n in onnx.load(str(path)).graph.node),
    )


def run_matrix(client: httpx.Client, corpus: list[CorpusModel], folder: Path, timeout: float = 600) -> list[Outcome]:
    cells = specs(client, corpus)
    final = run_jobs(client, cells, timeout)
    by_name = {m.name: m for m in corpus}
    return [outcome(client, by_name[name], column, final.get((name, column)), folder) for name, column in cells]


def render(corpus: list[CorpusModel], outcomes: list[Outcome]) -> str:
    """The matrix as a Markdown table: cosine on the downloaded artifact, or the refusal's code."""
    cells = {(o.model, o.column): o for o in outcomes}
    lines = [
        "| model | pattern | " + " | ".join(PIPELINES) + " |",
        "| --- | --- | " + " | ".join("---" for _ in PIPELINES) + " |",
    ]
    for model in corpus:
        row = []
        for column in PIPELINES:
            o = cells.get((model.name, column))
            if o is None:
                row.append("n/a")
            elif o.status == "artifact" and o.cosine is not None:
                row.append(f"{o.cosine:.4f}" + ("" if o.expected else " (below floor)"))
            else:
                row.append(f"{o.code or o.status}" + ("" if o.expected else " (unexpected)"))
        lines.append(f"| {model.name} | {model.pattern} | " + " | ".join(row) + " |")
    return "\n".join(lines)
