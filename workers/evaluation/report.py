"""Assemble the report: original and result side by side, every step, constraints, versions."""

import platform
from importlib import metadata
from typing import Any

from app.schemas.jobs import JobSpec

LIBRARIES = ("torch", "onnx", "onnxruntime", "onnxscript", "transformers", "numpy", "squeeze")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    import os

    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def constraints_verdict(spec: JobSpec, result: dict[str, Any]) -> dict[str, Any]:
    if spec.constraints is None:
        return {"verdict": "no_constraints", "checks": {}}
    checks: dict[str, Any] = {}
    if spec.constraints.min_cosine is not None:
        value = result["fidelity"].get("cosine_mean")
        checks["min_cosine"] = {"limit": spec.constraints.min_cosine, "value": value,
                                "met": value is not None and value >= spec.constraints.min_cosine}
    if spec.constraints.min_size_ratio is not None:
        value = result["size_ratio"]
        checks["min_size_ratio"] = {"limit": spec.constraints.min_size_ratio, "value": value,
                                    "met": value >= spec.constraints.min_size_ratio}
    if spec.constraints.max_accuracy_drop is not None:
        value = result.get("accuracy_drop")
        limit = spec.constraints.max_accuracy_drop
        checks["max_accuracy_drop"] = {"limit": limit, "value": value, "met": value is not None and value <= limit}
    return {"verdict": "met" if all(c["met"] for c in checks.values()) else "not_met", "checks": checks}


def speedups(original: list[dict[str, Any]], result: list[dict[str, Any]]) -> dict[str, float]:
    """p50 latency ratio original/result per batch size (above 1: the result is faster)."""
    before = {row["batch_size"]: row["p50_ms"] for row in original}
    return {str(row["batch_size"]): before[row["batch_size"]] / row["p50_ms"]
            for row in result if row["batch_size"] in before and row["p50_ms"] > 0}
