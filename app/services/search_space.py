"""The space a search runs when the client gives none: candidate pipelines that fit the model and the data
the search was given, each with the reason it is there, cut to the budget.

ONNX-side candidates (no training): int8 dynamic and static, per channel and per tensor, the calibration
methods, fp16, int4 block sizes where the graph has MatMul or Gather. With a training dataset, PyTorch-side
candidates: structured pruning with fine-tuning, low-rank factorization with fine-tuning and distillation,
each followed by int8 quantization (the planner adds the conversions). On `device: cuda`, the GPU methods
too: fp8 (static and dynamic scales), weight-only int8 and int4, and 2:4 sparsity in fp8 (fine-tuned when
there is training data), each ending as a .pt2. The order interleaves the families, so a small budget still
tries one of each kind before a second of any.
"""

from collections.abc import Iterator
from typing import Any

from app.schemas.searches import Candidate, SearchSpec

INT4_OPS = ("MatMul", "Gather")


def _static(calibration: str, per_channel: bool, method: str) -> dict[str, Any]:
    return {
        "type": "quantize",
        "method": "static",
        "per_channel": per_channel,
        "calibration": {"dataset_id": calibration, "samples": 128, "method": method},
    }


def _quantize_after(spec: SearchSpec) -> dict[str, Any]:
    """The quantization a PyTorch-side candidate ends with: static int8 when there is calibration data."""
    if spec.calibration_dataset_id:
        return _static(spec.calibration_dataset_id, True, "minmax")
    return {"type": "quantize", "method": "dynamic", "per_channel": True}


def onnx_candidates(spec: SearchSpec, op_types: list[str] | None) -> Iterator[Candidate]:
    """Post-training quantization: cheap, no training."""
    yield Candidate(
        label="int8 dynamic per-channel",
        reason="no data needed; int8 weights shrink the file about 4x and speed up MatMul/Gemm",
        passes=[{"type": "quantize", "method": "dynamic", "per_channel": True}],
    )
    calibration = spec.calibration_dataset_id
    if calibration:
        yield Candidate(
            label="int8 static per-channel minmax",
            reason="int8 activations too (QDQ), calibrated on the calibration dataset: fastest int8 on CPU",
            passes=[_static(calibration, True, "minmax")],
        )
    yield Candidate(
        label="fp16",
        reason="half the size with little fidelity loss; on CPU often not faster, which the front shows",
        passes=[{"type": "quantize", "method": "fp16"}],
    )
    if calibration:
        yield Candidate(
            label="int8 static per-tensor minmax",
            reason="one scale per tensor: the simplest kernels, sometimes faster, usually less faithful",
            passes=[_static(calibration, False, "minmax")],
        )
    if op_types is None or any(op in op_types for op in INT4_OPS):
        for block in (32, 128):
            yield Candidate(
                label=f"int4 block {block}",
                reason=f"4-bit MatMul/Gather weights in blocks of {block}: the smallest file"
                + ("" if block == 32 else "; larger blocks are smaller and less faithful"),
                passes=[{"type": "quantize", "method": "int4", "block_size": block}],
            )
    if calibration:
        for method in ("entropy", "percentile"):
            yield Candidate(
                label=f"int8 static per-channel {method}",
                reason=f"{method} calibration clips outlying activations, which can recover accuracy minmax loses",
                passes=[_static(calibration, True, method)],
            )
    yield Candidate(
        label="int8 dynamic per-tensor",
        reason="per-tensor weight scales: the cheapest dynamic int8",
        passes=[{"type": "quantize", "method": "dynamic", "per_channel": False}],
    )


def torch_candidates(spec: SearchSpec, train: str) -> Iterator[Candidate]:
    """Compression that changes the weights and trains them back, each followed by int8."""
    finetune = {"dataset_id": train, "epochs": 2}
    quantize = _quantize_after(spec)
    for ratio in (0.3, 0.5):
        yield Candidate(
            label=f"prune {int(ratio * 100)}% + finetune + int8",
            reason=f"structured pruning removes {int(ratio * 100)}% of the channels (tensors really shrink), "
            "fine-tuning recovers accuracy, int8 on top",
            passes=[{"type": "prune", "method": "structured", "ratio": ratio, "finetune": finetune}, quantize],
        )
    yield Candidate(
        label="low-rank 50% + finetune + int8",
        reason="Linear layers as products of thin matrices at half the rank, fine-tuned, int8 on top",
        passes=[{"type": "lowrank", "method": "svd", "rank_ratio": 0.5, "finetune": finetune}, quantize],
    )
    yield Candidate(
        label="prune 50% + distill + int8",
        reason="the pruned model trained on the original's soft outputs (distillation), int8 on top",
        passes=[
            {"type": "prune", "method": "structured", "ratio": 0.5},
            {"type": "distill", "dataset_id": train, "epochs": 3, "lr": 1e-3},
            quantize,
        ],
    )


def gpu_candidates(spec: SearchSpec, train: str | None) -> Iterator[Candidate]:
    """The GPU methods, for a search run by GPU workers; the figures are the H200's (README, bench.gpu_methods)."""
    calibration = {"calibration": {"dataset_id": spec.calibration_dataset_id, "samples": 128}}
    yield Candidate(
        label="fp8 static",
        reason="fp8 e4m3 products on the tensor cores with activation scales calibrated once: 1.22x to 1.37x "
        "bf16's speed on an H200 as layers widen from 1024 to 2048 (compute capability 8.9+)",
        passes=[
            {
                "type": "quantize",
                "method": "fp8",
                "activations": "static",
                "scaling": "per_tensor",
                **(calibration if spec.calibration_dataset_id else {}),
            }
        ],
    )
    yield Candidate(
        label="int8 weight-only",
        reason="int8 weights and bf16 activations: 1.7x less weight memory, for batch-1 and memory-bound serving",
        passes=[{"type": "quantize", "method": "int8_weight_only"}],
    )
    sparse: dict[str, Any] = {"type": "prune", "method": "semi_structured_2_4", "dtype": "fp8", "importance": "wanda"}
    if train:
        sparse["finetune"] = {"dataset_id": train, "epochs": 2, "lr": 1e-4}
    yield Candidate(
        label="2:4 fp8" + (" + finetune" if train else ""),
        reason="half of every Linear's weights zeroed in a 2:4 pattern and the rest in fp8, on Hopper's sparse "
        "tensor cores: 1.30x to 1.61x bf16's speed on an H200"
        + ("; the fine-tune recovers what pruning loses" if train else "; without a fine-tune, fidelity drops"),
        passes=[sparse],
    )
    yield Candidate(
        label="fp8 dynamic",
        reason="fp8 with each activation scaled by its own max at run time: no calibration, closer outputs, "
        "less speed than static scales",
        passes=[{"type": "quantize", "method": "fp8"}],
    )
    yield Candidate(
        label="int4 weight-only g128",
        reason="4-bit weights in groups of 128: 2.5x less weight memory than bf16",
        passes=[{"type": "quantize", "method": "int4_weight_only", "group_size": 128}],
    )


def _interleave(*families: Iterator[Candidate]) -> Iterator[Candidate]:
    pending = [iter(f) for f in families]
    while pending:
        for family in list(pending):
            candidate = next(family, None)
            if candidate is None:
                pending.remove(family)
            else:
                yield candidate


def propose(spec: SearchSpec, model_details: dict[str, Any]) -> tuple[list[Candidate], list[str]]:
    """The candidates (at most the budget's) and notes on what was left out and why."""
    op_types = model_details.get("op_types")
    families = [onnx_candidates(spec, op_types)]
    if spec.device == "cuda":
        families.append(gpu_candidates(spec, spec.train_dataset_id))
    notes = []
    if spec.train_dataset_id:
        families.append(torch_candidates(spec, spec.train_dataset_id))
    else:
        notes.append("no train_dataset_id: pruning, low-rank and distillation candidates need training data")
    if not spec.calibration_dataset_id:
        notes.append("no calibration_dataset_id: static int8 candidates need calibration data")
    if op_types is not None and not any(op in op_types for op in INT4_OPS):
        notes.append("no int4 candidates: the graph has no MatMul or Gather for 4-bit weights")
    proposed = list(_interleave(*families))
    limit = spec.budget.max_candidates
    if len(proposed) > limit:
        left = ", ".join(c.label for c in proposed[limit:])
        notes.append(f"beyond the budget of {limit} candidates: {left}")
    return proposed[:limit], notes
