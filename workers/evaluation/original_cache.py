"""Measure once: the original model's figures (its evaluation outputs, accuracy, footprint, and its latency
rounds) are computed by the first job on a model and reused by every later job of the same tenant with the
same model bytes, evaluation settings and machine.

The key is a sha256 over the model's sha256, the evaluation settings (inputs, samples, seed, latency batch
sizes, runs and warm-up, device, threads, the evaluation dataset's sha256, whether an ONNX result is timed
against the original exported to ONNX) and the machine's fingerprint (CPU model, cores, memory, platform,
the versions of the libraries that run the original): another machine, or an upgraded onnxruntime, is a
different key, so a stale figure is never read. Entries live in the artifact store under
`cache/original/{tenant}/{model sha256}/` (app.storage.layout), so deleting a model deletes its entries
once no other model of the tenant has the same bytes.

The worker fetches an entry into the child's folder before the run (the child never sees the store) and
stores the one the child wrote after a recorded success. A reused figure says so in the report
(`original.reused`: which job measured it, when).
"""

import hashlib
import json
import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from app.schemas.tasks import ChildTask
from app.storage import Store
from app.storage.layout import original_cache_prefix

VERSION = 1
"""bumped when what an entry holds, or how a figure in it is computed, changes"""
LIBRARIES = ("torch", "onnxruntime", "onnx", "transformers", "numpy", "squeeze")
INBOX = "original-cache"
"""where the worker puts a found entry for the child"""
OUTBOX = "original-measured"
"""where the child writes the entry it measured, for the worker to store"""
ENTRY, OUTPUTS = "entry.json", "outputs.npz"
Outputs = list[list[np.ndarray]]


class OriginalEntry(BaseModel):
    """One model's figures under one key: what the child wrote, plus who measured it and where."""

    model_config = ConfigDict(extra="forbid")

    figures: dict[str, Any]
    """the original's report figures without latency (footprint, size, sha256, parameters, accuracy)"""
    latency: dict[str, list[dict[str, Any]]]
    """rows per timed form: `original`, and `original_as_onnx` when it was timed"""
    samples: dict[str, dict[int, list[list[float]]]]
    """per-round samples in ms by form and batch size: the bootstrap of a later comparison resamples them"""
    shape: tuple[int, int]
    """(evaluation batches, outputs) of outputs.npz"""
    measured_by_job: str | None = None
    measured_at: str | None = None
    fingerprint: dict[str, Any] | None = None


def fingerprint() -> dict[str, Any]:
    """What the original's latency depends on besides the model and the settings: this machine and the
    libraries that run it."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_bytes": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "versions": versions,
    }


def cache_key(task: ChildTask, tenant: str, machine: dict[str, Any]) -> str:
    """The key of the original's figures for this task on this machine, under its tenant and model bytes."""
    spec = task.spec
    evaluation = task.datasets.get(spec.evaluate.dataset_id) if spec.evaluate.dataset_id else None
    settings = {
        "version": VERSION,
        "tenant": tenant,
        "model_sha256": task.model.sha256,
        "evaluate": spec.evaluate.model_dump(mode="json"),
        "evaluation_sha256": evaluation.sha256 if evaluation is not None else None,
        "input_shapes": spec.input_shapes,
        "seed": spec.seed,
        "device": spec.device,
        "threads": task.threads,
        "onnx_result_of_torch_original": task.plan.artifact_format == "onnx" and task.model.format != "onnx",
        "machine": machine,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    return original_cache_prefix(tenant, task.model.sha256) + digest


def store_prefix(key: str) -> str:
    return f"{key}/"


def fetch(store: Store, key: str, workdir: Path) -> bool:
    """Copy the entry under `key` into the child's folder; False when there is none."""
    prefix = store_prefix(key)
    if set(store.list_keys(prefix)) != {prefix + ENTRY, prefix + OUTPUTS}:
        return False
    (workdir / INBOX).mkdir()
    for name in (ENTRY, OUTPUTS):
        store.get_file(prefix + name, workdir / INBOX / name)
    return True


def keep(store: Store, key: str, workdir: Path, job_id: str, machine: dict[str, Any]) -> bool:
    """Store the entry the child measured (if it measured one), stamped with the job and the machine."""
    folder = workdir / OUTBOX
    if not (folder / ENTRY).is_file() or not (folder / OUTPUTS).is_file():
        return False
    entry = OriginalEntry.model_validate_json((folder / ENTRY).read_text())
    entry.measured_by_job, entry.fingerprint = job_id, machine
    entry.measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    (folder / ENTRY).write_text(entry.model_dump_json())
    prefix = store_prefix(key)
    store.put_file(prefix + OUTPUTS, folder / OUTPUTS)
    store.put_file(prefix + ENTRY, folder / ENTRY)  # last: an entry is complete once its entry.json is there
    return True


def load(workdir: Path) -> tuple[OriginalEntry, Outputs] | None:
    """The entry the worker found for this job, with the original's outputs on the evaluation batches."""
    folder = workdir / INBOX
    if not (folder / ENTRY).is_file():
        return None
    entry = OriginalEntry.model_validate_json((folder / ENTRY).read_text())
    batches, outputs = entry.shape
    with np.load(folder / OUTPUTS, allow_pickle=False) as arrays:
        reference = [[arrays[f"b{b}_o{o}"] for o in range(outputs)] for b in range(batches)]
    return entry, reference


def save(
    workdir: Path,
    figures: dict[str, Any],
    latency: dict[str, list[dict[str, Any]]],
    samples: dict[str, dict[int, list[list[float]]]],
    reference: Outputs,
) -> None:
    """Write what this job measured of the original, for the worker to store after the job succeeded."""
    folder = workdir / OUTBOX
    folder.mkdir(exist_ok=True)
    arrays = {f"b{b}_o{o}": array for b, batch in enumerate(reference) for o, array in enumerate(batch)}
    np.savez(folder / OUTPUTS, **arrays)  # type: ignore[arg-type]
    entry = OriginalEntry(
        figures={k: v for k, v in figures.items() if k not in ("latency", "latency_as_onnx")},
        latency=latency,
        samples=samples,
        shape=(len(reference), len(reference[0]) if reference else 0),
    )
    (folder / ENTRY).write_text(entry.model_dump_json())


def reused(entry: OriginalEntry) -> dict[str, Any]:
    """What the report says about figures it did not measure itself."""
    return {
        "from_job": entry.measured_by_job,
        "measured_at": entry.measured_at,
        "figures": ["outputs", "accuracy", "footprint", *sorted(entry.latency)],
        "why": "an earlier job measured this model with the same evaluation settings on this machine",
    }
