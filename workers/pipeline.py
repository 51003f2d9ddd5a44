"""Run a job inside the child, as DESIGN.md tells it: load the original and prepare the evaluation inputs,
measure the original, apply each planned step and check it, finish the artifact, measure the result, and
build the report. The plan (passes.planner) was made at submit; this module runs it as stored."""

import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.hashing import sha256_file
from app.schemas.datasets import dataset_refs, eval_batch_size, shapes_from_dataset
from app.schemas.errors import JobErrorCode
from app.schemas.reports import Report
from app.schemas.shapes import resolve_input_shapes
from app.schemas.tasks import ArtifactFile, ChildSucceeded, ChildTask, DatasetRecord, Interim, Progress
from passes.planner import PlannedStep
from passes.registry import run_for
from workers.context import PassContext
from workers.conversion.canonical import canonicalise
from workers.datasets import batches as dataset_batches
from workers.datasets import load_dataset
from workers.evaluation import original_cache
from workers.evaluation import report as reporting
from workers.evaluation.causal_lm import causal_lm_section, is_causal_lm, losses_of
from workers.evaluation.fidelity import fidelity
from workers.evaluation.footprint import footprint, weights
from workers.evaluation.inputs import Feeds, make_batches, with_batch
from workers.evaluation.latency import KnownTiming, LatencyComparison, compare_latency, measure, measure_compiled
from workers.evaluation.metrics import accuracy_report, top1
from workers.evaluation.perplexity import perplexity
from workers.runtime import (
    CompiledPackage,
    ModelHandle,
    PassFailed,
    device_of,
    inline_weights,
    load_original,
    run,
    session_for,
)

Emit = Callable[[Progress], None]
Outputs = list[list[np.ndarray]]
"""outputs[b][o]: output o of the model on evaluation batch b"""
ARTIFACT_NAMES = {
    "onnx": "model.onnx",
    "pt2": "model.pt2",
    "torchscript": "model.torchscript.pt",
    "openvino": "model.openvino.zip",
    "tflite": "model.tflite",
}
PACKAGE_NAME = "model.aoti.pt2"
"""the AOTInductor package a convert to pt2 can deliver beside model.pt2"""
GENERATED_SAMPLES = 32
HOW_TO_LOAD = {
    "onnx": "onnxruntime.InferenceSession('model.onnx', providers=[...])",
    "pt2": "torch.export.load('model.pt2').module() (a model of GPU kernels loads on a CUDA machine and takes "
    "its float32 inputs on the GPU; any other on the CPU)",
    "torchscript": "torch.jit.load('model.torchscript.pt')",
    "openvino": "unzip model.openvino.zip (model.xml, model.bin); openvino.Core().compile_model('model.xml', 'CPU', "
    "{'INFERENCE_PRECISION_HINT': 'f32'}) (measured so; without the hint OpenVINO computes a float32 model in bf16 "
    "on CPUs with AMX or AVX512-BF16)",
    "tflite": "ai_edge_litert.interpreter.Interpreter(model_path='model.tflite').get_signature_runner()(**inputs): "
    "image inputs channels-last (see result.input_layout)",
    "aoti": "torch._inductor.aoti_load_package('model.aoti.pt2')(*inputs): kernels compiled for the device in "
    "result.aoti.device (a GPU package for that GPU architecture) by the torch version in its latency rows, which "
    "is the one that loads it; float32 inputs on that device, as for the .pt2, laid out row-major: the kernels "
    "take the traced strides as given, so pass x.clone(memory_format=torch.contiguous_format) where a view may "
    "have others (even on an axis of size 1, as numpy's x[:, None] makes)",
}


@dataclass
class Inputs:
    """What every measurement of the job runs on, the same for the original and each step."""

    batches: list[Feeds]
    labels: np.ndarray | None
    shapes: dict[str, list[int]]
    timing: dict[int, Feeds]
    """one batch per latency batch size"""
    scored: int
    """the output accuracy reads"""
    datasets: dict[str, Feeds]
    evaluation: DatasetRecord | None

    @property
    def text(self) -> bool:
        """Evaluated on text lines: for a causal LM, perplexity is measured on them."""
        return self.evaluation is not None and self.evaluation.format == "text"


@dataclass
class Current:
    """The model as it enters the next step, with its outputs (a conversion is checked against them)."""

    handle: ModelHandle
    outputs: Outputs


def run_pipeline(task: ChildTask, workdir: Path, emit: Emit, imports_s: float | None = None) -> ChildSucceeded:
    started = time.perf_counter()
    total = len(task.plan.steps) + 2
    emit(Progress(progress=0.0, current="load"))
    torch.set_num_threads(task.threads)  # exports and torch passes use the job's threads
    original = load_original(workdir / "upload", task.model, workdir, task.max_unpacked_bytes)
    inputs = prepare_inputs(task, original, workdir)
    emit(Progress(progress=0.5 / total, current="evaluate original"))
    known = original_cache.load(workdir)
    reference, original_figures = known_or_measured(known, task, original, inputs)
    current, canonical = canonical_form(original, reference, inputs, task, workdir)
    steps = []
    for planned in task.plan.steps:
        emit(Progress(progress=(1 + planned.index) / total, current=planned.label))
        current, step = apply_step(planned, current, original, reference, inputs, task, workdir)
        steps.append(step)
        done = interim_of(step, original_figures)
        emit(Progress(progress=(2 + planned.index) / total, current=planned.label, interim=done))
    emit(Progress(progress=(total - 1) / total, current="evaluate result"))
    artifact = finish_artifact(current.handle, task.plan.artifact_format, workdir)
    artifacts = [artifact]
    delivered = deliver(current.handle, workdir / artifact.path, inputs)
    timing = KnownTiming(known[0].latency, known[0].samples) if known is not None else None
    result, measured = measure_result(
        task, original, delivered, reference, steps[-1], original_figures, inputs, workdir, timing
    )
    package = finish_package(current.handle, workdir)
    if package is not None:
        artifacts.append(package)
        result["aoti"] = package_figures(task, delivered.handle, workdir / package.path, reference, inputs, steps)
    elif failed := [s["metrics"]["aoti"] for s in steps if "error" in s["metrics"].get("aoti", {})]:
        result["aoti"] = failed[-1]  # asked for (by default on cuda) and not made: the report says why
    for figures in (result, result.get("aoti", {})):
        if "how_to_load" in figures:
            figures["how_to_load"] = with_requirements(figures["how_to_load"], steps)
    if known is None:
        original_cache.save(workdir, original_figures, original_timing(measured), measured.samples, reference)
    llm = causal_lm_figures(task, original, delivered, reference, inputs) if is_causal_lm(original) else None
    report = build_report(
        task,
        inputs,
        original_figures,
        canonical,
        steps,
        result,
        reference,
        delivered.outputs,
        started,
        imports_s,
        llm,
    )
    emit(Progress(progress=0.99, current="store"))
    return ChildSucceeded(artifacts=artifacts, report=report)


def prepare_inputs(task: ChildTask, handle: ModelHandle, workdir: Path) -> Inputs:
    """The evaluation batches (from the evaluation dataset, or generated from the input signature), their
    labels, the resolved input shapes, one timing batch per latency batch size, and every dataset named."""
    spec, model = task.spec, task.model
    model_inputs, model_outputs = model.signature()
    evaluation = task.datasets.get(spec.evaluate.dataset_id) if spec.evaluate.dataset_id else None
    given = shapes_from_dataset(model_inputs, spec.input_shapes, evaluation.model_dump() if evaluation else None)
    shapes = resolve_input_shapes(model_inputs, given)
    tokenizer_root = (
        workdir / "original" / model.details.get("root", ".")
        if model.format == "hf_folder" and model.details.get("has_tokenizer")
        else None
    )
    datasets = {
        i: load_dataset(workdir / d.path, d.model_dump(), model_inputs, tokenizer_root)
        for i, d in task.datasets.items()
    }
    labels = None
    if evaluation is not None:
        cut = dataset_batches(
            datasets[evaluation.id],
            handle.input_names,
            eval_batch_size(model_inputs, spec.input_shapes),
            spec.evaluate.samples,
            per_batch_padding=evaluation.format == "text",
        )
        batches = [feeds for feeds, _ in cut]
        labels = np.concatenate([y for _, y in cut if y is not None]) if evaluation.has_labels else None
    else:
        samples = spec.evaluate.samples or GENERATED_SAMPLES
        batches = make_batches(model_inputs, shapes, samples, spec.seed, handle.vocab_size)
    sizes = spec.evaluate.latency.batch_sizes or [next(iter(shapes.values()))[0]]
    timing = {
        b: make_batches(model_inputs, with_batch(model_inputs, shapes, b), b, spec.seed + 1, handle.vocab_size)[0]
        for b in sizes
    }
    names = [str(o["name"]) for o in model_outputs]
    scored = names.index(spec.evaluate.output) if spec.evaluate.output else 0
    return Inputs(batches, labels, shapes, timing, scored, datasets, evaluation)


def outputs_of(handle: ModelHandle, inputs: Inputs) -> Outputs:
    session = session_for(handle, threads=1) if handle.kind != "torch" else None
    return [run(handle, batch, session) for batch in inputs.batches]


def accuracy_of(outputs: Outputs, inputs: Inputs) -> float | None:
    return top1(outputs, inputs.scored, inputs.labels) if inputs.labels is not None else None


def known_or_measured(
    known: tuple[original_cache.OriginalEntry, Outputs] | None, task: ChildTask, handle: ModelHandle, inputs: Inputs
) -> tuple[Outputs, dict[str, Any]]:
    """The original's outputs on the evaluation batches and its figures: those an earlier job measured on
    this machine (the report says so), or measured now."""
    if known is not None:
        entry, reference = known
        return reference, {**entry.figures, "reused": original_cache.reused(entry)}
    reference = original_outputs(handle, inputs)
    return reference, measure_original(task, handle, inputs, reference)


def original_outputs(handle: ModelHandle, inputs: Inputs) -> Outputs:
    """The upload's own outputs: a TensorFlow upload's from TensorFlow (its handle is the tf2onnx conversion,
    checked against them in canonical_form), any other's from its handle."""
    if handle.tensorflow is not None:
        return [handle.tensorflow.run(batch) for batch in inputs.batches]
    return outputs_of(handle, inputs)


def measure_original(task: ChildTask, handle: ModelHandle, inputs: Inputs, reference: Outputs) -> dict[str, Any]:
    """The original's figures: the upload's own size and sha256, weights, compute, accuracy on its outputs
    `reference` (its latency is timed beside the result's, in measure_result)."""
    return {
        **footprint(handle, inputs.shapes, inputs.batches[0]),
        "format": task.model.format,
        "size_bytes": task.model.size_bytes,
        "sha256": task.model.sha256,
        "param_count": task.model.param_count or weights(handle)["param_count"],
        "accuracy": accuracy_of(reference, inputs),
    }


def interim_of(step: dict[str, Any], original_figures: dict[str, Any]) -> Interim:
    return Interim(
        step=step["index"],
        label=step["label"],
        cosine_mean=(step["fidelity"] or {}).get("cosine_mean"),
        accuracy=step["accuracy"],
        original_accuracy=original_figures["accuracy"],
    )


def from_tensorflow(original: ModelHandle, reference: Outputs, inputs: Inputs, task: ChildTask) -> dict[str, Any]:
    """A TensorFlow upload's conversion to ONNX (done as it loaded), checked against TensorFlow's outputs like
    any conversion: the job fails with conversion_mismatch when tf2onnx changed them."""
    converted = outputs_of(original, inputs)
    checked = fidelity(original.output_names, reference, converted, inputs.batches)
    check_conversion(
        f"converting the {task.model.format} upload to ONNX", checked, task.spec.evaluate.min_conversion_cosine
    )
    return {"format": task.model.format, "tools": original.tensorflow.converter, "fidelity": checked}


def canonical_form(
    original: ModelHandle, reference: Outputs, inputs: Inputs, task: ChildTask, workdir: Path
) -> tuple[Current, dict[str, Any] | None]:
    """An ONNX upload in canonical form (workers.conversion.canonical), checked against the upload like any
    conversion, with what changed for the report; a torch upload as it is. A TensorFlow upload's ONNX form
    is checked against TensorFlow first, and the report keeps that check as `source_conversion`."""
    if original.kind != "onnx" or original.path is None:
        return Current(original, reference), None
    source = from_tensorflow(original, reference, inputs, task) if original.tensorflow is not None else None
    path = workdir / "canonical.onnx"
    section = canonicalise(original.path, path)
    handle = original.with_onnx(path)
    outputs = outputs_of(handle, inputs)
    section["fidelity"] = fidelity(handle.output_names, reference, outputs, inputs.batches)
    check_conversion("canonicalising the upload", section["fidelity"], task.spec.evaluate.min_conversion_cosine)
    if source is not None:
        section["source_conversion"] = source
    return Current(handle, outputs), section


def apply_step(
    planned: PlannedStep,
    current: Current,
    original: ModelHandle,
    reference: Outputs,
    inputs: Inputs,
    task: ChildTask,
    workdir: Path,
) -> tuple[Current, dict[str, Any]]:
    """Run one planned step, then measure it against the original (and a conversion against its own input,
    failing the job when the conversion changed the outputs)."""
    config = planned.config
    ctx = PassContext(
        workdir=workdir,
        step=planned.index,
        device=task.spec.device,
        example=inputs.batches[0],
        datasets=inputs.datasets,
        original=original,
        evaluation=inputs.batches,
        floors=task.floors,
        min_cosine=task.spec.constraints.min_cosine if task.spec.constraints else None,
    )
    t0 = time.perf_counter()
    handle = run_for(config)(config, current.handle, ctx)
    seconds = time.perf_counter() - t0
    outputs = outputs_of(handle, inputs)
    names = handle.output_names
    step = {
        "index": planned.index,
        "type": config.type,
        "label": planned.label,
        "auto": planned.auto,
        "config": config.model_dump(mode="json"),
        "seconds": seconds,
        "format": handle_format(handle),
        **weights(handle),
        "metrics": ctx.metrics,
        "sensitivity": ctx.sensitivity,
        "fidelity": fidelity(names, reference, outputs, inputs.batches),
        "accuracy": accuracy_of(outputs, inputs),
    }
    if is_causal_lm(original) and inputs.text:
        step["perplexity"] = perplexity(losses_of(outputs, inputs.batches), task.spec.seed)
    if config.checks_conversion():
        own = (
            step["fidelity"]
            if current.outputs is reference
            else fidelity(names, current.outputs, outputs, inputs.batches)
        )
        step["conversion_fidelity"] = own
        check_conversion(f"step {planned.index} ({planned.label})", own, task.spec.evaluate.min_conversion_cosine)
    return Current(handle, outputs), step


def check_conversion(what: str, own: dict[str, Any], threshold: float) -> None:
    cosine = own.get("cosine_min")
    if cosine is None or cosine < threshold:
        raise PassFailed(
            JobErrorCode.conversion_mismatch,
            f"{what} changed the model's outputs: min cosine {cosine} < "
            f"{threshold} on output {own.get('output')!r} against the model it converted; the converted model "
            "would be wrong",
        )


def handle_format(handle: ModelHandle) -> str:
    """onnx, openvino or tflite; pt2 or torchscript for a torch model loaded back from its exported file; else
    torch."""
    if handle.kind != "torch":
        return handle.kind
    if handle.path is not None:
        return "pt2" if handle.path.suffix == ".pt2" else "torchscript"
    return "torch"


def finish_artifact(handle: ModelHandle, fmt: str, workdir: Path) -> ArtifactFile:
    """Copy the last step's file to out/ under the artifact's name (an ONNX model's weights inside it)."""
    if handle.path is None or handle_format(handle) != fmt:
        raise RuntimeError(f"the plan ends in {fmt} but its last step left {handle_format(handle)}")
    name = ARTIFACT_NAMES[fmt]
    (workdir / "out").mkdir(exist_ok=True)
    target = workdir / "out" / name
    if fmt == "onnx" and inline_weights(handle.path, target) == target:
        return ArtifactFile(path=f"out/{name}", name=name, kind="model", format=fmt)
    if fmt == "openvino":  # the .xml and its .bin, in one archive
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.write(handle.path, "model.xml")
            archive.write(handle.path.with_suffix(".bin"), "model.bin")
        return ArtifactFile(path=f"out/{name}", name=name, kind="model", format=fmt)
    shutil.copyfile(handle.path, target)
    return ArtifactFile(path=f"out/{name}", name=name, kind="model", format=fmt)  # type: ignore[arg-type]


def with_requirements(how_to_load: str, steps: list[dict[str, Any]]) -> str:
    """How to load the artifact, after what its kernels need loaded first (a pass's `serving_requires`)."""
    needs = [s["metrics"]["serving_requires"] for s in steps if "serving_requires" in s["metrics"]]
    return f"{'; '.join(needs)}; then {how_to_load}" if needs else how_to_load


def finish_package(handle: ModelHandle, workdir: Path) -> ArtifactFile | None:
    """Copy the AOTInductor package compiled with the .pt2 (if any) to out/, a second artifact of the job."""
    if handle.package is None:
        return None
    shutil.copyfile(handle.package, workdir / "out" / PACKAGE_NAME)
    return ArtifactFile(path=f"out/{PACKAGE_NAME}", name=PACKAGE_NAME, kind="model", format="aoti")


def package_figures(
    task: ChildTask, pt2: ModelHandle, path: Path, reference: Outputs, inputs: Inputs, steps: list[dict[str, Any]]
) -> dict[str, Any]:
    """The AOTInductor package as a server runs it, loaded from the delivered file: its outputs against the
    original's, its latency on the job's device, and its compile time (from the step that made it)."""
    package = pt2.with_torch(CompiledPackage(path, device_of(pt2.module)))
    outputs = [run(package, batch) for batch in inputs.batches]
    lat = task.spec.evaluate.latency
    rows = measure(package, inputs.timing, lat.runs, lat.warmup, task.threads, task.spec.device)
    made = next(s["metrics"]["aoti"] for s in reversed(steps) if "aoti" in s["metrics"])
    return {
        **made,
        "format": "aoti",
        "size_bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "how_to_load": HOW_TO_LOAD["aoti"],
        "fidelity": fidelity(pt2.output_names, reference, outputs, inputs.batches),
        "latency": [{**row, "compiled": "aotinductor"} for row in rows],
    }


@dataclass
class Delivered:
    """The result as the user gets it: the artifact file, the model loaded from it, and its outputs on the
    evaluation batches, which the report's fidelity and accuracy are computed from."""

    path: Path
    handle: ModelHandle
    outputs: Outputs


def deliver(handle: ModelHandle, artifact: Path, inputs: Inputs) -> Delivered:
    """An ONNX result is the downloaded file itself (out/model.onnx), loaded the way a user loads it: an
    InferenceSession with default options, not the pipeline's fixed-thread one. A torch result is the module
    loaded back from the file it was saved as, which finish_artifact copied. An OpenVINO result is the IR
    unpacked from the downloaded zip; a TFLite result the downloaded file."""
    if handle.kind in ("openvino", "tflite"):
        path = unpacked_openvino(artifact) if handle.kind == "openvino" else artifact
        delivered = replace(handle, path=path)
        return Delivered(artifact, delivered, outputs_of(delivered, inputs))
    if handle.kind != "onnx":
        return Delivered(artifact, handle, outputs_of(handle, inputs))
    import onnxruntime as ort

    delivered = handle.with_onnx(artifact)
    session = ort.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    return Delivered(artifact, delivered, [run(delivered, batch, session) for batch in inputs.batches])


def unpacked_openvino(artifact: Path) -> Path:
    """The IR's .xml, unpacked from the artifact beside it (the archive is ours, written by finish_artifact)."""
    folder = artifact.parent.parent / "delivered-openvino"
    with zipfile.ZipFile(artifact) as archive:
        archive.extractall(folder)
    return folder / "model.xml"


def measure_result(
    task: ChildTask,
    original_handle: ModelHandle,
    delivered: Delivered,
    reference: Outputs,
    last: dict[str, Any],
    original: dict[str, Any],
    inputs: Inputs,
    workdir: Path,
    known: KnownTiming | None = None,
) -> tuple[dict[str, Any], LatencyComparison]:
    """The delivered artifact's figures: fidelity and accuracy from its own outputs, its latency timed on the
    artifact file interleaved with the original's (which this fills in on `original`; with `known`, against
    the original's rounds from an earlier job), and the ratios; and what was timed (the original's rounds go
    to the cache)."""
    lat = task.spec.evaluate.latency
    handle, size = delivered.handle, last["size_bytes"]
    accuracy = accuracy_of(delivered.outputs, inputs)
    result = {
        **footprint(handle, inputs.shapes, inputs.batches[0]),
        "format": task.plan.artifact_format,
        "size_bytes": size,
        "sha256": sha256_file(delivered.path),
        "size_ratio": task.model.size_bytes / size if size else None,
        "size_zstd_bytes": zstd_size(delivered.path),
        "how_to_load": HOW_TO_LOAD[task.plan.artifact_format],
        "input_layout": input_layout(handle, inputs),
        "fidelity": fidelity(handle.output_names, reference, delivered.outputs, inputs.batches),
        "accuracy": accuracy,
        "accuracy_drop": (
            None if original["accuracy"] is None or accuracy is None else original["accuracy"] - accuracy
        ),
    }
    timing = compare_latency(
        original_handle,
        handle,
        inputs.timing,
        lat.runs,
        lat.warmup,
        task.threads,
        task.spec.device,
        task.spec.seed + 1,
        workdir,
        known,
    )
    original["latency"], original["latency_as_onnx"] = timing.original, timing.original_as_onnx
    result["latency"], result["latency_comparison"] = timing.result, timing.comparisons
    if task.spec.device == "cuda":
        for figures, model in ((original, original_handle), (result, handle)):
            figures["latency_compiled"] = measure_compiled(model, inputs.timing, lat.runs, lat.warmup, task.threads)
    result["speedup_p50"] = reporting.speedups(original["latency"], result["latency"])
    return result, timing


def input_layout(handle: ModelHandle, inputs: Inputs) -> dict[str, Any] | None:
    """A TFLite result's inputs and outputs that are laid out otherwise than the original's: the axes order
    from the original's layout to the artifact's (what a user feeding original-layout arrays transposes by)."""
    if handle.kind != "tflite":
        return None
    return {
        "inputs": {n: handle.input_transposes.get(n) for n in handle.input_names},
        "outputs_to_original": {n: handle.output_transposes.get(n) for n in handle.output_names},
        "note": "null: the original's layout; else numpy.transpose(array, axes) takes the original's array to the "
        "artifact's (inputs) or the artifact's output back to the original's",
    }


def original_timing(timing: LatencyComparison) -> dict[str, list[dict[str, Any]]]:
    """The original's latency rows by form, as the cache keeps them."""
    rows = {"original": timing.original}
    return rows | ({"original_as_onnx": timing.original_as_onnx} if timing.original_as_onnx else {})


def causal_lm_figures(
    task: ChildTask, original: ModelHandle, delivered: Delivered, reference: Outputs, inputs: Inputs
) -> dict[str, Any]:
    """The LLM section: perplexity from the outputs already computed, generation measured now."""
    losses = (
        (losses_of(reference, inputs.batches), losses_of(delivered.outputs, inputs.batches)) if inputs.text else None
    )
    spec = task.spec
    return causal_lm_section(
        original,
        delivered.handle,
        losses,
        inputs.batches,
        spec.evaluate.generation,
        task.threads,
        spec.device,
        spec.seed,
    )


def zstd_size(path: Path) -> int:
    """The artifact's size compressed with zstd: where unstructured sparsity shows in a dense file."""
    import zstandard

    with path.open("rb") as source:
        return len(zstandard.ZstdCompressor(level=3).compress(source.read()))


def build_report(
    task: ChildTask,
    inputs: Inputs,
    original: dict[str, Any],
    canonical: dict[str, Any] | None,
    steps: list[dict[str, Any]],
    result: dict[str, Any],
    reference: Outputs,
    final: Outputs,
    started: float,
    imports_s: float | None,
    causal_lm: dict[str, Any] | None = None,
) -> Report:
    """The report, validated against its schema here: a report that does not fit is our bug, raised now."""
    spec = task.spec
    _, model_outputs = task.model.signature()
    scored_name = str(model_outputs[inputs.scored]["name"])
    statistics = (
        accuracy_report(
            np.concatenate([b[inputs.scored] for b in reference]),
            np.concatenate([b[inputs.scored] for b in final]),
            inputs.labels,
            scored_name,
            seed=spec.seed,
        )
        if inputs.labels is not None
        else None
    )
    return Report.model_validate(
        {
            "spec": spec.model_dump(mode="json"),
            "model_id": task.model.id,
            "plan": task.plan.model_dump(mode="json"),
            "evaluation": evaluation_section(task, inputs, original, result, scored_name),
            "datasets": [dataset_section(task, d) for d in task.datasets.values()],
            "original": original,
            "canonical": canonical,
            "steps": steps,
            "result": result,
            "accuracy": statistics,
            "causal_lm": causal_lm,
            "constraints": reporting.constraints_verdict(spec, result, statistics, task.fidelity_floor()),
            "versions": reporting.versions(),
            "machine": reporting.machine(),
            "startup": {"prestarted": task.prestarted, "imports_s": imports_s},
            "reproducibility": {
                "seeds": {"evaluation_inputs": spec.seed, "latency_inputs": spec.seed + 1, "bootstrap": spec.seed},
                "input_sha256": task.model.sha256,
                "output_sha256": result["sha256"],
            },
            "wall_seconds": time.perf_counter() - started,
        }
    )


def evaluation_section(
    task: ChildTask, inputs: Inputs, original: dict[str, Any], result: dict[str, Any], scored_name: str
) -> dict[str, Any]:
    spec, lat = task.spec, task.spec.evaluate.latency
    return {
        "samples": sum(next(iter(b.values())).shape[0] for b in inputs.batches),
        "input_shapes": inputs.shapes,
        "inputs": (
            f"dataset {inputs.evaluation.id}"
            if inputs.evaluation is not None
            else f"generated from the input signature, seed {spec.seed}"
        ),
        "dataset_id": inputs.evaluation.id if inputs.evaluation is not None else None,
        "accuracy_output": scored_name if inputs.labels is not None else None,
        "latency": {
            "runs": lat.runs,
            "warmup": lat.warmup,
            "threads": task.threads,
            "device": spec.device,
            "batch_sizes": list(inputs.timing),
            "notes": reporting.latency_notes(spec.device, original["latency"], result["latency"])
            + reuse_notes(original)
            + source_notes(task),
        },
    }


def source_notes(task: ChildTask) -> list[str]:
    """A TensorFlow upload runs as TensorFlow only for its outputs: what was timed is its ONNX conversion."""
    if task.model.format not in ("keras", "savedmodel"):
        return []
    return [
        f"the original ({task.model.format}) was timed as its tf2onnx conversion in onnxruntime; its outputs and "
        "accuracy are TensorFlow's"
    ]


def reuse_notes(original: dict[str, Any]) -> list[str]:
    reused = original.get("reused")
    if not reused:
        return []
    return [
        f"the original's latency rounds were measured by job {reused['from_job']} at {reused['measured_at']} on "
        "this machine and reused; the result was timed now, so the interval does not cover a change in the "
        "machine's load between the two"
    ]


def dataset_section(task: ChildTask, dataset: DatasetRecord) -> dict[str, Any]:
    fields = [f for f, ref in dataset_refs(task.spec.model_dump(mode="json")) if ref == dataset.id]
    return {
        "id": dataset.id,
        "sha256": dataset.sha256,
        "format": dataset.format,
        "filename": dataset.filename,
        "samples": dataset.samples,
        "fields": fields,
    }
