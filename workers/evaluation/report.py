"""Assemble the report: original and result side by side, every step, accuracy, constraints and the
verdict, and what it takes to reproduce it (versions, machine, seeds, sha256 of input and output)."""

import contextlib
import os
import platform
from importlib import metadata
from typing import Any

from app.schemas.jobs import JobSpec
from workers.evaluation.latency import HIGH_CV, p50_at_first_batch

LIBRARIES = (
    "squeeze",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "onnxslim",
    "transformers",
    "safetensors",
    "numpy",
    "torch-pruning",
    "tensorly",
    "scikit-learn",
    "pydantic",
)


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def machine() -> dict[str, Any]:
    """The machine the figures were measured on: CPU model and cores, memory, and the GPU if there is one."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    memory = None
    with contextlib.suppress(ValueError, OSError):
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    import torch

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "gpu": gpu,
        "cuda": torch.version.cuda if gpu else None,
        "platform": platform.platform(),
    }


def _check(limit: float, value: float | None, met: bool | None, unchecked: str) -> dict[str, Any]:
    return {"limit": limit, "value": value, "met": met, "reason": unchecked if value is None else None}


def _constraint_checks(
    spec: JobSpec, result: dict[str, Any], accuracy: dict[str, Any] | None, floor: float
) -> dict[str, Any]:
    """Each constraint given, plus the fidelity floor when `min_cosine` is not: limit, value, met. A result
    below the floor fails even when no constraint was given: it is a different model, whatever its size."""
    given = spec.constraints
    checks: dict[str, Any] = {}
    cosine = result["fidelity"].get("cosine_mean")
    if given is not None and given.min_cosine is not None:
        checks["min_cosine"] = _check(
            given.min_cosine,
            cosine,
            cosine is not None and cosine >= given.min_cosine,
            "the result has no float output",
        )
    elif cosine is not None:
        checks["fidelity_floor"] = _check(floor, cosine, cosine >= floor, "")
    if given is None:
        return checks
    if given.min_size_ratio is not None:
        value = result.get("size_ratio")
        checks["min_size_ratio"] = _check(
            given.min_size_ratio,
            value,
            value is not None and value >= given.min_size_ratio,
            "the result's size is unknown",
        )
    if given.max_latency_ms is not None:
        value = p50_at_first_batch(result.get("latency") or [])
        checks["max_latency_ms"] = _check(
            given.max_latency_ms,
            value,
            value is not None and value <= given.max_latency_ms,
            "the result's latency was not measured",
        )
    if given.max_accuracy_drop is not None:
        value = accuracy["drop"] if accuracy and accuracy.get("task") == "classification" else None
        value = value if value is not None else result.get("accuracy_drop")
        checks["max_accuracy_drop"] = _check(
            given.max_accuracy_drop,
            value,
            None if value is None else value <= given.max_accuracy_drop,
            "no labelled evaluation set: give evaluate.dataset_id with labels",
        )
    return checks


def regressions(result: dict[str, Any]) -> list[str]:
    """What makes a result worse than its original without breaking a constraint: slower at a batch size
    (the headline comparison's interval excludes 1) or larger on disk."""
    found = [
        f"slower than the original at batch {c['batch_size']}: x{c['speedup']:.2f} the speed "
        f"(95% interval {c['speedup_ci95']['low']:.2f} to {c['speedup_ci95']['high']:.2f}, {c['baseline_runtime']} "
        f"against {c['result_runtime']})"
        for c in result.get("latency_comparison") or []
        if c["headline"] and c["reading"] == "slower"
    ]
    ratio = result.get("size_ratio")
    if ratio is not None and ratio < 1:
        found.append(f"larger than the original: x{1 / ratio:.2f} its size on disk")
    return found


def constraints_verdict(
    spec: JobSpec, result: dict[str, Any], accuracy: dict[str, Any] | None, floor: float
) -> dict[str, Any]:
    """`fail` when a constraint or the fidelity floor (ChildTask.fidelity_floor) is missed (or a constraint
    could not be checked), naming each; else `warn` when the result is slower or larger than its original;
    else `pass`."""
    checks = _constraint_checks(spec, result, accuracy, floor)
    warnings = regressions(result)
    failed = [name for name, c in checks.items() if not c["met"]]
    if failed:
        reasons = [
            f"{name}: {checks[name]['reason']}"
            if checks[name]["met"] is None
            else f"{name}: {checks[name]['value']:.4g} against a limit of {checks[name]['limit']:.4g}"
            for name in failed
        ]
        return {"verdict": "fail", "reason": "; ".join(reasons), "checks": checks, "warnings": warnings}
    given = [name for name in checks if name != "fidelity_floor"]
    met = f"all {len(given)} constraints met" if given else "no constraints were given"
    if "fidelity_floor" in checks:
        met += f"; cosine to the original {checks['fidelity_floor']['value']:.4f} is above the {floor} floor"
    if warnings:
        return {
            "verdict": "warn",
            "reason": f"{met}, but " + "; ".join(warnings),
            "checks": checks,
            "warnings": warnings,
        }
    return {"verdict": "pass", "reason": met, "checks": checks, "warnings": []}


def speedups(original: list[dict[str, Any]], result: list[dict[str, Any]]) -> dict[str, float]:
    """p50 latency ratio original/result per batch size (above 1: the result is faster), only where both
    were timed on the same device."""
    before = {(row["batch_size"], row.get("device")): row["p50_ms"] for row in original}
    return {
        str(row["batch_size"]): before[key] / row["p50_ms"]
        for row in result
        if (key := (row["batch_size"], row.get("device"))) in before and row["p50_ms"] > 0
    }


def latency_notes(device: str, original: list[dict[str, Any]], result: list[dict[str, Any]]) -> list[str]:
    """What timed what, in words, where it is not the obvious: a cuda job whose ONNX form ran on the CPU."""
    notes = []
    for name, rows in (("original", original), ("result", result)):
        if rows and device == "cuda" and rows[0]["device"] != "cuda":
            why = {
                "onnxruntime": "onnxruntime here has no CUDA provider",
                "openvino": "an OpenVINO IR is measured on OpenVINO's CPU plugin",
                "litert": "a TFLite model is measured on the LiteRT interpreter's CPU kernels",
            }.get(rows[0]["runtime"], "no CUDA device was available")
            notes.append(f"the {name} was timed on the CPU with {rows[0]['runtime']}: {why}")
        elif rows:
            notes.append(f"the {name} was timed with {rows[0]['runtime']} on {rows[0]['device']} ({rows[0]['timer']})")
    for name, rows in (("original", original), ("result", result)):
        notes += [
            f"the {name}'s runs at batch {row['batch_size']} varied by {row['cv']:.0%} (coefficient of variation): "
            "the machine was busy, so read the interval, not the point estimate"
            for row in rows
            if (row.get("cv") or 0) > HIGH_CV
        ]
    return notes
