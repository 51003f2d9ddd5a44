"""Accuracy statistics on a labelled evaluation set, as pure functions of numpy arrays.

Classification: top-1/top-5 of original and result, and the paired accuracy drop with a 95% interval
from a seeded paired bootstrap over samples (both models are scored on the same resampled samples, so
their correlation is kept). Regression: MAE and RMSE against the labels. Embeddings: mean cosine to
the label vectors. `accuracy_report` picks what applies from the labels' and outputs' shapes.
"""

from typing import Any

import numpy as np

BOOTSTRAP_METHOD = "paired percentile bootstrap over samples"


def topk_correct(logits: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per sample: is the label among the k highest scores (ties broken by index)."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return (top == labels.reshape(-1, 1)).any(axis=1)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int = 1) -> float:
    return float(topk_correct(logits, labels, k).mean())


def top1(outputs: list[list[np.ndarray]], index: int, labels: np.ndarray) -> float | None:
    """Top-1 of a pipeline step: `outputs[b][index]` is the scored output on batch b, one row of class scores
    per label; None when the output does not have one score row per label."""
    if len({batch[index].shape[1:] for batch in outputs}) != 1:
        return None
    scores = np.concatenate([batch[index] for batch in outputs])
    if scores.ndim < 2 or scores.shape[0] != labels.shape[0]:
        return None
    rows = scores.reshape(scores.shape[0], -1, scores.shape[-1])
    if rows.shape[1] != 1:
        return None
    return topk_accuracy(rows[:, 0], labels, 1)


def paired_bootstrap_drop(
    reference_correct: np.ndarray,
    result_correct: np.ndarray,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy drop (reference minus result; positive = the result is worse) and its confidence interval
    from resampling the samples with replacement, both models scored on the same resample."""
    ref = np.asarray(reference_correct, dtype=np.float64)
    res = np.asarray(result_correct, dtype=np.float64)
    diff = ref - res
    rng = np.random.default_rng(seed)
    drops = np.empty(resamples)
    rows = max(1, min(256, 4_000_000 // diff.size))  # resamples drawn at once, bounded to ~32 MB of indices
    for start in range(0, resamples, rows):
        block = rng.integers(0, diff.size, size=(min(rows, resamples - start), diff.size))
        drops[start : start + block.shape[0]] = diff[block].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(drops, [tail, 100 - tail])
    return {
        "drop": float(diff.mean()),
        "low": float(low),
        "high": float(high),
        "confidence": confidence,
        "method": BOOTSTRAP_METHOD,
        "resamples": resamples,
        "seed": seed,
    }


def mae(prediction: np.ndarray, target: np.ndarray) -> float:
    return float(np.abs(prediction.astype(np.float64) - target).mean())


def rmse(prediction: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(((prediction.astype(np.float64) - target) ** 2).mean()))


def cosine_per_sample(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of a and b (samples on axis 0, everything else flattened); 1 where
    both rows are zero."""
    x = a.reshape(a.shape[0], -1).astype(np.float64)
    y = b.reshape(b.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)
    return np.where(norms > 0, (x * y).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float | None:
    """Signal-to-quantisation-noise ratio in dB: signal power of the reference over the power of the
    difference. None when it is undefined: identical outputs (infinite) or an all-zero reference."""
    ref = reference.astype(np.float64)
    noise = float(((ref - candidate.astype(np.float64)) ** 2).sum())
    if noise == 0:
        return None
    signal = float((ref**2).sum())
    return float(10 * np.log10(signal / noise)) if signal > 0 else None


def accuracy_report(
    reference_outputs: np.ndarray,
    result_outputs: np.ndarray,
    labels: np.ndarray,
    output_name: str,
    *,
    seed: int = 0,
    resamples: int = 2000,
) -> dict[str, Any]:
    """Accuracy of original and result on labelled samples for one output (samples on axis 0).

    Integer labels against [samples, classes] scores: classification (top-1, top-5, drop with a 95%
    paired-bootstrap interval). Float labels of the output's shape: regression (MAE, RMSE; the drop is
    the RMSE increase) and, with more than one feature, embeddings (mean cosine to the labels)."""
    ref, res, y = np.asarray(reference_outputs), np.asarray(result_outputs), np.asarray(labels)
    samples = int(y.shape[0])
    if ref.shape[0] != samples or res.shape[0] != samples:
        raise ValueError(f"{samples} labels but {ref.shape[0]} original and {res.shape[0]} result outputs")
    if np.issubdtype(y.dtype, np.integer) and ref.ndim == 2 and ref.shape[1] > 1:
        ref_top1, res_top1 = topk_correct(ref, y, 1), topk_correct(res, y, 1)
        interval = paired_bootstrap_drop(ref_top1, res_top1, resamples=resamples, seed=seed)
        return {
            "task": "classification",
            "output": output_name,
            "samples": samples,
            "original": {"top1": float(ref_top1.mean()), "top5": topk_accuracy(ref, y, 5)},
            "result": {"top1": float(res_top1.mean()), "top5": topk_accuracy(res, y, 5)},
            "metric": "top1",
            "drop": interval["drop"],
            "drop_ci95": {"low": interval["low"], "high": interval["high"]},
            "method": f"{BOOTSTRAP_METHOD} ({resamples} resamples, seed {seed})",
        }
    target = y.reshape(ref.shape) if y.size == ref.size else None
    if target is None or not np.issubdtype(y.dtype, np.floating):
        raise ValueError(
            f"labels of shape {list(y.shape)} and dtype {y.dtype} fit neither class ids for "
            f"output {output_name!r} of shape {list(ref.shape)} nor regression targets of its shape"
        )
    features = int(np.prod(ref.shape[1:])) if ref.ndim > 1 else 1
    stats = {}
    for key, out in (("original", ref), ("result", res)):
        stats[key] = {"mae": mae(out, target), "rmse": rmse(out, target)}
        if features > 1:
            stats[key]["cosine"] = float(cosine_per_sample(out, target).mean())
    ref_sq = ((ref.astype(np.float64) - target) ** 2).reshape(samples, -1).mean(axis=1)
    res_sq = ((res.astype(np.float64) - target) ** 2).reshape(samples, -1).mean(axis=1)
    interval = paired_bootstrap_drop(res_sq, ref_sq, resamples=resamples, seed=seed)
    return {
        "task": "embedding" if features > 1 else "regression",
        "output": output_name,
        "samples": samples,
        "original": stats["original"],
        "result": stats["result"],
        "metric": "mse",
        "drop": interval["drop"],
        "drop_ci95": {"low": interval["low"], "high": interval["high"]},
        "method": f"{BOOTSTRAP_METHOD} of the per-sample squared-error increase ({resamples} resamples, seed {seed})",
    }
