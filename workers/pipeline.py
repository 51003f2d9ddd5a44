"""Run a job's passes in order inside the child: load the original, make evaluation inputs, run each
pass (converting between torch and ONNX where a pass needs the other form), check fidelity after
every step, time original and result, and write the artifacts and the report."""

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.schemas.datasets import dataset_refs, eval_batch_size, shapes_from_dataset
from app.schemas.jobs import JobSpec
from app.schemas.passes import STORED, ConvertConfig
from app.schemas.shapes import resolve_input_shapes
from workers.datasets import batches as dataset_batches
from workers.datasets import load_dataset
from workers.evaluation import report as reporting
from workers.evaluation.accuracy import top1
from workers.evaluation.fidelity import fidelity
from workers.evaluation.footprint import footprint, onnx_weights, torch_weights
from workers.evaluation.inputs import make_batches, with_batch
from workers.evaluation.latency import compare_latency
from workers.evaluation.metrics import accuracy_report
from workers.passes import REGISTRY, Pass, PassContext
from workers.passes.convert import ConvertPass
from workers.runtime import (
    ModelHandle,
    PassFailed,
    load_original,
    onnx_session,
    onnx_size_and_params,
    run,
    torch_params,
)

Emit = Callable[[dict[str, Any]], None]
ARTIFACT_NAMES = {"onnx": "model.onnx", "pt2": "model.pt2", "torchscript": "model.torchscript.pt"}
GENERATED_SAMPLES = 32


def _outputs(handle: ModelHandle, batches: list[dict[str, Any]]) -> list[list[Any]]:
    session = onnx_session(handle.path, threads=1) if handle.kind == "onnx" else None
    return [run(handle, batch, session) for batch in batches]


def _size_params(handle: ModelHandle) -> tuple[int | None, int]:
    if handle.kind == "onnx":
        return onnx_size_and_params(handle.path)  # type: ignore[arg-type]
    return (handle.path.stat().st_size if handle.path else None), torch_params(handle.module)


def _format(handle: ModelHandle) -> str:
    """onnx; pt2 or torchscript for a torch model loaded back from its exported file; else torch."""
    if handle.kind == "onnx":
        return "onnx"
    if handle.path is not None:
        return "pt2" if handle.path.suffix == ".pt2" else "torchscript"
    return "torch"


def _sparsity(handle: ModelHandle) -> float:
    """Share of zero values among the model's float weights (ONNX initializers or torch parameters)."""
    weights = onnx_weights(handle.path) if handle.kind == "onnx" else torch_weights(handle.module)  # type: ignore[arg-type]
    return float(weights["sparsity"])


def _zstd_size(path: Path) -> int:
    """The artifact's size compressed with zstd: where unstructured sparsity shows in a dense file."""
    import zstandard

    compressor = zstandard.ZstdCompressor(level=3)
    with path.open("rb") as source:
        return len(compressor.compress(source.read()))


def run_pipeline(task: dict[str, Any], workdir: Path, emit: Emit, max_unpacked: int, threads: int) -> dict[str, Any]:
    started = time.perf_counter()
    spec = JobSpec.model_validate(task["spec"], context={STORED: True})
    model = task["model"]
    metas: dict[str, dict[str, Any]] = task.get("datasets", {})
    evaluation = metas.get(spec.evaluate.dataset_id) if spec.evaluate.dataset_id else None
    shapes = resolve_input_shapes(model["inputs"], shapes_from_dataset(model["inputs"], spec.input_shapes, evaluation))
    steps_total = len(spec.passes) + 2
    emit({"progress": 0.0, "pass": "load"})
    handle = load_original(
        workdir / "upload", model["format"], model["inputs"], model["outputs"], model["details"], workdir, max_unpacked
    )
    tokenizer_root = (
        workdir / "original" / model["details"].get("root", ".")
        if model["format"] == "hf_folder" and model["details"].get("has_tokenizer")
        else None
    )
    datasets = {i: load_dataset(workdir / m["path"], m, model["inputs"], tokenizer_root) for i, m in metas.items()}
    labels = None
    if evaluation is not None:
        cut = dataset_batches(
            datasets[evaluation["id"]],
            handle.input_names,
            eval_batch_size(model["inputs"], spec.input_shapes),
            spec.evaluate.samples,
            per_batch_padding=evaluation["format"] == "text",
        )
        batches = [feeds for feeds, _ in cut]
        labels = np.concatenate([y for _, y in cut if y is not None]) if evaluation["has_labels"] else None
    else:
        batches = make_batches(
            model["inputs"], shapes, spec.evaluate.samples or GENERATED_SAMPLES, spec.seed, handle.vocab_size
        )
    output_names = [str(o["name"]) for o in model["outputs"]]
    scored = output_names.index(spec.evaluate.output) if spec.evaluate.output else 0

    def accuracy(outputs: list[list[Any]]) -> float | None:
        return top1(outputs, scored, labels) if labels is not None else None

    latency_sizes = spec.evaluate.latency.batch_sizes or [next(iter(shapes.values()))[0]]
    timing_feeds = {
        b: make_batches(model["inputs"], with_batch(model["inputs"], shapes, b), b, spec.seed + 1, handle.vocab_size)[0]
        for b in latency_sizes
    }
    lat = spec.evaluate.latency

    emit({"progress": 0.5 / steps_total, "pass": "evaluate original"})
    reference = _outputs(handle, batches)
    _, original_params = _size_params(handle)
    original = {
        **footprint(handle, shapes, batches[0]),
        "format": model["format"],
        "size_bytes": model["size_bytes"],
        "sha256": model["sha256"],
        "param_count": model.get("param_count") or original_params,
        "accuracy": accuracy(reference),
    }

    steps: list[dict[str, Any]] = []
    original_handle = handle
    threshold = spec.evaluate.min_conversion_cosine

    previous = [reference]
    """outputs of the model as it entered the next step: a conversion is checked against its own input"""

    def apply(pass_: Pass, auto: bool, handle: ModelHandle, progress: float) -> ModelHandle:
        label = f"{pass_.type} (auto)" if auto else pass_.type
        emit({"progress": progress, "pass": label})
        ctx = PassContext(
            workdir=workdir,
            step=len(steps),
            device=spec.device,
            example=batches[0],
            datasets=datasets,
            original=original_handle,
        )
        t0 = time.perf_counter()
        handle = pass_.run(handle, ctx)
        seconds = time.perf_counter() - t0
        outputs = _outputs(handle, batches)
        fid = fidelity(handle.output_names, reference, outputs)
        size, params = _size_params(handle)
        step = {
            "index": len(steps),
            "type": pass_.type,
            "auto": auto,
            "config": pass_.config.model_dump(mode="json"),
            "seconds": seconds,
            "format": _format(handle),
            "size_bytes": size,
            "param_count": params,
            "sparsity": _sparsity(handle),
            "metrics": ctx.metrics,
            "fidelity": fid,
            "accuracy": accuracy(outputs),
        }
        steps.append(step)
        if pass_.converts:
            own = fid if previous[0] is reference else fidelity(handle.output_names, previous[0], outputs)
            step["conversion_fidelity"] = own
            if own.get("cosine_min") is None or own["cosine_min"] < threshold:
                raise PassFailed(
                    "conversion_mismatch",
                    f"step {len(steps) - 1} ({label}) changed the model's "
                    f"outputs: min cosine {own.get('cosine_min')} < {threshold} on output "
                    f"{own.get('output')!r} against the model it converted; the converted model "
                    "would be wrong",
                )
        previous[0] = outputs
        return handle

    for index, config in enumerate(spec.passes):
        pass_ = REGISTRY[config.type](config)
        needs = {"onnx": "onnx", "torch": "torch"}.get(pass_.form())
        if needs is not None and handle.kind != needs:
            to_needed = ConvertConfig.model_validate({"type": "convert", "to": needs})
            handle = apply(ConvertPass(to_needed), True, handle, (1 + index) / steps_total)
        handle = apply(pass_, False, handle, (1 + index) / steps_total)

    final = next(
        (c for c in reversed(spec.passes) if isinstance(c, ConvertConfig) and c.to != "torch"),
        ConvertConfig.model_validate({"type": "convert"}),
    )
    final_format = final.to
    if _format(handle) != final_format:
        handle = apply(ConvertPass(final), True, handle, (steps_total - 1.5) / steps_total)
    emit({"progress": (steps_total - 1) / steps_total, "pass": "evaluate result"})
    out_dir = workdir / "out"
    out_dir.mkdir(exist_ok=True)
    name = ARTIFACT_NAMES[final_format]
    shutil.copyfile(handle.path, out_dir / name)  # type: ignore[arg-type]
    final_size, _ = _size_params(handle)
    result = {
        **footprint(handle, shapes, batches[0]),
        "format": final_format,
        "size_bytes": final_size,
        "sha256": reporting.sha256_file(out_dir / name),
        "size_ratio": model["size_bytes"] / final_size if final_size else None,
        "size_zstd_bytes": _zstd_size(out_dir / name),
        "fidelity": steps[-1]["fidelity"],
        "accuracy": steps[-1]["accuracy"],
        "accuracy_drop": (
            None
            if original["accuracy"] is None or steps[-1]["accuracy"] is None
            else original["accuracy"] - steps[-1]["accuracy"]
        ),
    }
    timing = compare_latency(
        original_handle, handle, timing_feeds, lat.runs, lat.warmup, threads, spec.device, spec.seed + 1, workdir
    )
    original["latency"], original["latency_as_onnx"] = timing.original, timing.original_as_onnx
    result["latency"], result["latency_comparison"] = timing.result, timing.comparisons
    result["speedup_p50"] = reporting.speedups(original["latency"], result["latency"])
    # With a labelled evaluation dataset: top-1/top-5 and the drop with its bootstrap interval.
    statistics = (
        accuracy_report(
            np.concatenate([b[scored] for b in reference]),
            np.concatenate([b[scored] for b in previous[0]]),
            labels,
            output_names[scored],
            seed=spec.seed,
        )
        if labels is not None
        else None
    )
    report = {
        "spec": spec.model_dump(mode="json"),
        "model_id": model["id"],
        "evaluation": {
            "samples": sum(next(iter(b.values())).shape[0] for b in batches),
            "input_shapes": shapes,
            "inputs": (
                f"dataset {evaluation['id']}"
                if evaluation is not None
                else f"generated from the input signature, seed {spec.seed}"
            ),
            "dataset_id": evaluation["id"] if evaluation is not None else None,
            "accuracy_output": output_names[scored] if labels is not None else None,
            "latency": {
                "runs": lat.runs,
                "warmup": lat.warmup,
                "threads": threads,
                "device": spec.device,
                "batch_sizes": latency_sizes,
                "notes": reporting.latency_notes(spec.device, original["latency"], result["latency"]),
            },
        },
        "datasets": [
            {
                "id": m["id"],
                "sha256": m["sha256"],
                "format": m["format"],
                "filename": m["filename"],
                "samples": m["samples"],
                "fields": [f for f, ref in dataset_refs(task["spec"]) if ref == i],
            }
            for i, m in metas.items()
        ],
        "original": original,
        "steps": steps,
        "result": result,
        "accuracy": statistics,
        "constraints": reporting.constraints_verdict(spec, result, statistics),
        "versions": reporting.versions(),
        "machine": reporting.machine(),
        "reproducibility": {
            "seeds": {"evaluation_inputs": spec.seed, "latency_inputs": spec.seed + 1, "bootstrap": spec.seed},
            "input_sha256": model["sha256"],
            "output_sha256": result["sha256"],
        },
        "wall_seconds": time.perf_counter() - started,
    }
    emit({"progress": 0.99, "pass": "store"})
    return {
        "artifacts": [{"path": f"out/{name}", "name": name, "kind": "model", "format": final_format}],
        "report": report,
    }
