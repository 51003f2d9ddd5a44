"""How close a model's outputs are to the original's on the same inputs.

Per float output: cosine similarity per sample (mean and min), max and mean absolute error, SQNR (dB),
and for classifier-shaped outputs ([batch, classes]) top-1 agreement. The first output is the headline.
"""

from typing import Any

import numpy as np

from workers.evaluation.metrics import cosine_per_sample, sqnr_db


def _per_output(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, Any] | None:
    """Figures over all batches; batches may differ in their trailing sizes (text padded per batch)."""
    cosines, flat_ref, flat_cand, agree = [], [], [], []
    for ref_batch, cand_batch in zip(reference, candidate, strict=True):
        ref = ref_batch.reshape(ref_batch.shape[0], -1).astype(np.float64)
        cand = cand_batch.reshape(cand_batch.shape[0], -1).astype(np.float64)
        if ref.shape != cand.shape:
            return {"error": f"shape mismatch: original {list(ref_batch.shape)}, result {list(cand_batch.shape)}"}
        cosines.append(cosine_per_sample(ref, cand))
        flat_ref.append(ref.ravel())
        flat_cand.append(cand.ravel())
        if ref_batch.ndim == 2 and ref_batch.shape[1] > 1:
            agree.append(ref.argmax(axis=1) == cand.argmax(axis=1))
    cosine = np.concatenate(cosines)
    ref_all, cand_all = np.concatenate(flat_ref), np.concatenate(flat_cand)
    return {
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "max_abs_error": float(np.abs(ref_all - cand_all).max()),
        "mean_abs_error": float(np.abs(ref_all - cand_all).mean()),
        "sqnr_db": sqnr_db(ref_all, cand_all),
        "top1_agreement": float(np.concatenate(agree).mean()) if agree else None,
        "samples": int(cosine.shape[0]),
    }


def fidelity(
    output_names: list[str], reference: list[list[np.ndarray]], candidate: list[list[np.ndarray]]
) -> dict[str, Any]:
    """`reference[b][o]` is output o on batch b. Returns the headline output's figures and all outputs'."""
    outputs: dict[str, Any] = {}
    for index, name in enumerate(output_names):
        ref = [batch[index] for batch in reference]
        if not np.issubdtype(ref[0].dtype, np.floating):
            continue
        outputs[name] = _per_output(ref, [batch[index].astype(np.float32) for batch in candidate])
    headline = next(iter(outputs), None)
    return {"output": headline, **(outputs[headline] if headline else {}), "outputs": outputs}
