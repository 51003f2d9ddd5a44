"""How close a model's outputs are to the original's on the same inputs.

Per float output: cosine similarity per sample (mean and min), max and mean absolute error, SQNR (dB),
and for classifier-shaped outputs ([batch, classes]) top-1 agreement. The first output is the headline.
Token outputs ([batch, sequence, ...]) of a text model are compared on the real tokens only: positions the
batch's `attention_mask` marks as padding are what no user reads, and would otherwise weigh in the cosine.
"""

from typing import Any

import numpy as np

from workers.evaluation.metrics import cosine_per_sample, sqnr_db


def _real_tokens(batch: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The batch with its padded token positions zeroed, where `mask` ([batch, sequence]) fits it."""
    if mask is None or batch.ndim < 2 or batch.shape[:2] != mask.shape:
        return batch
    return batch * (mask != 0).reshape(mask.shape + (1,) * (batch.ndim - 2))


def _per_output(
    reference: list[np.ndarray], candidate: list[np.ndarray], masks: list[np.ndarray | None]
) -> dict[str, Any] | None:
    """Figures over all batches; batches may differ in their trailing sizes (text padded per batch)."""
    cosines, flat_ref, flat_cand, agree = [], [], [], []
    for ref_batch, cand_batch, mask in zip(reference, candidate, masks, strict=True):
        if ref_batch.shape != cand_batch.shape:
            return {"error": f"shape mismatch: original {list(ref_batch.shape)}, result {list(cand_batch.shape)}"}
        ref = _real_tokens(ref_batch, mask).reshape(ref_batch.shape[0], -1).astype(np.float64)
        cand = _real_tokens(cand_batch, mask).reshape(cand_batch.shape[0], -1).astype(np.float64)
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
    output_names: list[str],
    reference: list[list[np.ndarray]],
    candidate: list[list[np.ndarray]],
    batches: list[dict[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """`reference[b][o]` is output o on batch b, computed from the feeds `batches[b]` (whose attention_mask,
    if any, says which token positions are real). Returns the headline output's figures and all outputs'."""
    masks: list[np.ndarray | None] = [None] * len(reference)
    if batches is not None:
        masks = [feeds.get("attention_mask") for feeds in batches]
    outputs: dict[str, Any] = {}
    for index, name in enumerate(output_names):
        ref = [batch[index] for batch in reference]
        if not np.issubdtype(ref[0].dtype, np.floating):
            continue
        outputs[name] = _per_output(ref, [batch[index].astype(np.float32) for batch in candidate], masks)
    headline = next(iter(outputs), None)
    return {"output": headline, **(outputs[headline] if headline else {}), "outputs": outputs}
