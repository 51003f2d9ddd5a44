"""How close a model's outputs are to the original's on the same inputs.

Per float output: cosine similarity per sample (mean and min), max and mean absolute error, SQNR (dB),
and for classifier-shaped outputs ([batch, classes]) top-1 agreement. The first output is the headline.
"""

from typing import Any

import numpy as np

from workers.evaluation.metrics import cosine_per_sample, sqnr_db


def _per_output(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, Any] | None:
    ref = np.concatenate([r.reshape(r.shape[0], -1) for r in reference]).astype(np.float64)
    cand = np.concatenate([c.reshape(c.shape[0], -1) for c in candidate]).astype(np.float64)
    if ref.shape != cand.shape:
        return {"error": f"shape mismatch: original {list(ref.shape)}, result {list(cand.shape)}"}
    cosine = cosine_per_sample(ref, cand)
    result: dict[str, Any] = {
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "max_abs_error": float(np.abs(ref - cand).max()),
        "mean_abs_error": float(np.abs(ref - cand).mean()),
        "sqnr_db": sqnr_db(ref, cand),
        "top1_agreement": None,
        "samples": int(ref.shape[0]),
    }
    if reference[0].ndim == 2 and reference[0].shape[1] > 1:
        result["top1_agreement"] = float((ref.argmax(axis=1) == cand.argmax(axis=1)).mean())
    return result


def fidelity(output_names: list[str], reference: list[list[np.ndarray]],
             candidate: list[list[np.ndarray]]) -> dict[str, Any]:
    """`reference[b][o]` is output o on batch b. Returns the headline output's figures and all outputs'."""
    outputs: dict[str, Any] = {}
    for index, name in enumerate(output_names):
        ref = [batch[index] for batch in reference]
        if not np.issubdtype(ref[0].dtype, np.floating):
            continue
        outputs[name] = _per_output(ref, [batch[index].astype(np.float32) for batch in candidate])
    headline = next(iter(outputs), None)
    return {"output": headline, **(outputs[headline] if headline else {}), "outputs": outputs}
