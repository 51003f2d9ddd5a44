"""Run a job's passes in order inside the child: load the original, make evaluation inputs, run each
pass (converting between torch and ONNX where a pass needs the other form), check fidelity after
every step, time original and result, and write the artifacts and the report."""

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.schemas.jobs import JobSpec
from app.schemas.passes import ConvertConfig
from app.schemas.shapes import resolve_input_shapes
from workers.evaluation import report as reporting
from workers.evaluation.fidelity import fidelity
from workers.evaluation.footprint import footprint
from workers.evaluation.inputs import make_batches, with_batch
from workers.evaluation.latency import measure
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


def _outputs(handle: ModelHandle, batches: list[dict[str, Any]]) -> list[list[Any]]:
    session = onnx_session(handle.path, threads=1) if handle.kind == "onnx" else None
    return [run(handle, batch, session) for batch in batches]


def _size_params(handle: ModelHandle) -> tuple[int | None, int]:
    if handle.kind == "onnx":
        return onnx_size_and_params(handle.path)  # type: ignore[arg-type]
    return None, torch_params(handle.module)


def run_pipeline(task: dict[str, Any], workdir: Path, emit: Emit, max_unpacked: int, threads: int) -> dict[str, Any]:
    started = time.perf_counter()
    spec = JobSpec.model_validate(task["spec"])
    model = task["model"]
    shapes = resolve_input_shapes(model["inputs"], spec.input_shapes)
    steps_total = len(spec.passes) + 2
    emit({"progress": 0.0, "pass": "load"})
    handle = load_original(workdir / "upload", model["format"], model["inputs"], model["outputs"],
                           model["details"], workdir, max_unpacked)
    batches = make_batches(model["inputs"], shapes, spec.evaluate.samples, spec.seed, handle.vocab_size)
    latency_sizes = spec.evaluate.latency.batch_sizes or [next(iter(shapes.values()))[0]]
    timing_feeds = {b: make_batches(model["inputs"], with_batch(model["inputs"], shapes, b), b, spec.seed + 1,
                                    handle.vocab_size)[0] for b in latency_sizes}
    lat = spec.evaluate.latency

    emit({"progress": 0.5 / steps_total, "pass": "evaluate original"})
    reference = _outputs(handle, batches)
    _, original_params = _size_params(handle)
    original = {**footprint(handle, shapes, batches[0]), "format": model["format"],
                "size_bytes": model["size_bytes"], "sha256": model["sha256"],
                "param_count": model.get("param_count") or original_params,
                "latency": measure(handle, timing_feeds, lat.runs, lat.warmup, threads, spec.device)}

    steps: list[dict[str, Any]] = []
    for index, config in enumerate(spec.passes):
        planned: list[tuple[Pass, bool]] = [(REGISTRY[config.type](config), False)]
        if planned[0][0].takes == "onnx" and handle.kind == "torch":
            planned.insert(0, (ConvertPass(ConvertConfig(type="convert")), True))
        for pass_, auto in planned:
            label = f"{pass_.type} (auto)" if auto else pass_.type
            emit({"progress": (1 + index) / steps_total, "pass": label})
            ctx = PassContext(workdir=workdir, step=len(steps), device=spec.device, example=batches[0])
            t0 = time.perf_counter()
            handle = pass_.run(handle, ctx)
            seconds = time.perf_counter() - t0
            fid = fidelity(handle.output_names, reference, _outputs(handle, batches))
            size, params = _size_params(handle)
            steps.append({"index": len(steps), "type": pass_.type, "auto": auto,
                          "config": pass_.config.model_dump(mode="json"), "seconds": seconds,
                          "format": handle.kind, "size_bytes": size, "param_count": params, "fidelity": fid})
            threshold = spec.evaluate.min_conversion_cosine
            if pass_.converts and (fid.get("cosine_min") is None or fid["cosine_min"] < threshold):
                raise PassFailed("conversion_mismatch", f"step {len(steps) - 1} ({label}) changed the model's "
                                 f"outputs: min cosine {fid.get('cosine_min')} < {threshold} on output "
                                 f"{fid.get('output')!r}; the converted model would be wrong")

    if handle.kind != "onnx":
        raise PassFailed("no_artifact", "the pipeline ended on a torch model; end it with a convert pass")
    emit({"progress": (steps_total - 1) / steps_total, "pass": "evaluate result"})
    out_dir = workdir / "out"
    out_dir.mkdir(exist_ok=True)
    shutil.copyfile(handle.path, out_dir / "model.onnx")  # type: ignore[arg-type]
    final = footprint(handle, shapes, batches[0])
    result = {**final, "format": "onnx", "sha256": reporting.sha256_file(out_dir / "model.onnx"),
              "size_ratio": model["size_bytes"] / final["size_bytes"] if final["size_bytes"] else None,
              "fidelity": steps[-1]["fidelity"],
              "latency": measure(handle, timing_feeds, lat.runs, lat.warmup, threads, spec.device)}
    result["speedup_p50"] = reporting.speedups(original["latency"], result["latency"])
    # Labels come with a labelled evaluation dataset (issue 3a); generated inputs have none.
    labels: np.ndarray | None = None
    accuracy = (reporting.accuracy_section(handle.output_names, reference, _outputs(handle, batches), labels,
                                           spec.seed) if labels is not None else None)
    report = {
        "spec": spec.model_dump(mode="json"), "model_id": model["id"],
        "evaluation": {"samples": sum(next(iter(b.values())).shape[0] for b in batches), "input_shapes": shapes,
                       "inputs": f"generated from the input signature, seed {spec.seed}",
                       "latency": {"runs": lat.runs, "warmup": lat.warmup, "threads": threads,
                                   "device": spec.device, "batch_sizes": latency_sizes,
                                   "notes": reporting.latency_notes(spec.device, original["latency"],
                                                                    result["latency"])}},
        "original": original, "steps": steps, "result": result, "accuracy": accuracy,
        "constraints": reporting.constraints_verdict(spec, result, accuracy),
        "versions": reporting.versions(), "machine": reporting.machine(),
        "reproducibility": {"seeds": {"evaluation_inputs": spec.seed, "latency_inputs": spec.seed + 1,
                                      "bootstrap": spec.seed},
                            "input_sha256": model["sha256"], "output_sha256": result["sha256"]},
        "wall_seconds": time.perf_counter() - started,
    }
    emit({"progress": 0.99, "pass": "store"})
    return {"artifacts": [{"path": "out/model.onnx", "name": "model.onnx", "kind": "model", "format": "onnx"}],
            "report": report}
