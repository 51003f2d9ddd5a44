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
from workers.evaluation.footprint import footprint
from workers.evaluation.inputs import make_batches, with_batch
from workers.evaluation.latency import measure
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
GENERATED_SAMPLES = 32


def _outputs(handle: ModelHandle, batches: list[dict[str, Any]]) -> list[list[Any]]:
    session = onnx_session(handle.path, threads=1) if handle.kind == "onnx" else None
    return [run(handle, batch, session) for batch in batches]


def _size_params(handle: ModelHandle) -> tuple[int | None, int]:
    if handle.kind == "onnx":
        return onnx_size_and_params(handle.path)  # type: ignore[arg-type]
    return None, torch_params(handle.module)


def run_pipeline(task: dict[str, Any], workdir: Path, emit: Emit, max_unpacked: int, threads: int) -> dict[str, Any]:
    started = time.perf_counter()
    spec = JobSpec.model_validate(task["spec"], context={STORED: True})
    model = task["model"]
    metas: dict[str, dict[str, Any]] = task.get("datasets", {})
    evaluation = metas.get(spec.evaluate.dataset_id) if spec.evaluate.dataset_id else None
    shapes = resolve_input_shapes(model["inputs"],
                                  shapes_from_dataset(model["inputs"], spec.input_shapes, evaluation))
    steps_total = len(spec.passes) + 2
    emit({"progress": 0.0, "pass": "load"})
    handle = load_original(workdir / "upload", model["format"], model["inputs"], model["outputs"],
                           model["details"], workdir, max_unpacked)
    tokenizer_root = (workdir / "original" / model["details"].get("root", ".")
                      if model["format"] == "hf_folder" and model["details"].get("has_tokenizer") else None)
    datasets = {i: load_dataset(workdir / m["path"], m, model["inputs"], tokenizer_root)
                for i, m in metas.items()}
    labels = None
    if evaluation is not None:
        cut = dataset_batches(datasets[evaluation["id"]], handle.input_names,
                              eval_batch_size(model["inputs"], spec.input_shapes), spec.evaluate.samples,
                              per_batch_padding=evaluation["format"] == "text")
        batches = [feeds for feeds, _ in cut]
        labels = np.concatenate([y for _, y in cut if y is not None]) if evaluation["has_labels"] else None
    else:
        batches = make_batches(model["inputs"], shapes, spec.evaluate.samples or GENERATED_SAMPLES, spec.seed,
                               handle.vocab_size)
    output_names = [str(o["name"]) for o in model["outputs"]]
    scored = output_names.index(spec.evaluate.output) if spec.evaluate.output else 0

    def accuracy(outputs: list[list[Any]]) -> float | None:
        return top1(outputs, scored, labels) if labels is not None else None
    latency_sizes = spec.evaluate.latency.batch_sizes or [next(iter(shapes.values()))[0]]
    timing_feeds = {b: make_batches(model["inputs"], with_batch(model["inputs"], shapes, b), b, spec.seed + 1,
                                    handle.vocab_size)[0] for b in latency_sizes}
    lat = spec.evaluate.latency

    emit({"progress": 0.5 / steps_total, "pass": "evaluate original"})
    reference = _outputs(handle, batches)
    _, original_params = _size_params(handle)
    original = {**footprint(handle, shapes, batches[0]), "format": model["format"],
                "size_bytes": model["size_bytes"], "sha256": model["sha256"],
                "param_count": model.get("param_count") or original_params, "accuracy": accuracy(reference),
                "latency": measure(handle, timing_feeds, lat.runs, lat.warmup, threads, spec.device)}

    steps: list[dict[str, Any]] = []
    for index, config in enumerate(spec.passes):
        planned: list[tuple[Pass, bool]] = [(REGISTRY[config.type](config), False)]
        if planned[0][0].takes == "onnx" and handle.kind == "torch":
            planned.insert(0, (ConvertPass(ConvertConfig(type="convert")), True))
        for pass_, auto in planned:
            label = f"{pass_.type} (auto)" if auto else pass_.type
            emit({"progress": (1 + index) / steps_total, "pass": label})
            ctx = PassContext(workdir=workdir, step=len(steps), device=spec.device, example=batches[0],
                              datasets=datasets)
            t0 = time.perf_counter()
            handle = pass_.run(handle, ctx)
            seconds = time.perf_counter() - t0
            outputs = _outputs(handle, batches)
            fid = fidelity(handle.output_names, reference, outputs)
            size, params = _size_params(handle)
            steps.append({"index": len(steps), "type": pass_.type, "auto": auto,
                          "config": pass_.config.model_dump(mode="json"), "seconds": seconds,
                          "format": handle.kind, "size_bytes": size, "param_count": params, "fidelity": fid,
                          "accuracy": accuracy(outputs)})
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
              "fidelity": steps[-1]["fidelity"], "accuracy": steps[-1]["accuracy"],
              "accuracy_drop": (None if original["accuracy"] is None or steps[-1]["accuracy"] is None
                                else original["accuracy"] - steps[-1]["accuracy"]),
              "latency": measure(handle, timing_feeds, lat.runs, lat.warmup, threads, spec.device)}
    result["speedup_p50"] = reporting.speedups(original["latency"], result["latency"])
    # With a labelled evaluation dataset: top-1/top-5 and the drop with its bootstrap interval.
    statistics = (accuracy_report(np.concatenate([b[scored] for b in reference]),
                                  np.concatenate([b[scored] for b in outputs]), labels,
                                  output_names[scored], seed=spec.seed) if labels is not None else None)
    report = {
        "spec": spec.model_dump(mode="json"), "model_id": model["id"],
        "evaluation": {"samples": sum(next(iter(b.values())).shape[0] for b in batches), "input_shapes": shapes,
                       "inputs": (f"dataset {evaluation['id']}" if evaluation is not None
                                  else f"generated from the input signature, seed {spec.seed}"),
                       "dataset_id": evaluation["id"] if evaluation is not None else None,
                       "accuracy_output": output_names[scored] if labels is not None else None,
                       "latency": {"runs": lat.runs, "warmup": lat.warmup, "threads": threads,
                                   "device": spec.device, "batch_sizes": latency_sizes,
                                   "notes": reporting.latency_notes(spec.device, original["latency"],
                                                                    result["latency"])}},
        "datasets": [{"id": m["id"], "sha256": m["sha256"], "format": m["format"], "filename": m["filename"],
                      "samples": m["samples"],
                      "fields": [f for f, ref in dataset_refs(task["spec"]) if ref == i]}
                     for i, m in metas.items()],
        "original": original, "steps": steps, "result": result, "accuracy": statistics,
        "constraints": reporting.constraints_verdict(spec, result, statistics),
        "versions": reporting.versions(), "machine": reporting.machine(),
        "reproducibility": {"seeds": {"evaluation_inputs": spec.seed, "latency_inputs": spec.seed + 1,
                                      "bootstrap": spec.seed},
                            "input_sha256": model["sha256"], "output_sha256": result["sha256"]},
        "wall_seconds": time.perf_counter() - started,
    }
    emit({"progress": 0.99, "pass": "store"})
    return {"artifacts": [{"path": "out/model.onnx", "name": "model.onnx", "kind": "model", "format": "onnx"}],
            "report": report}
