"""Perplexity of a causal LM on the evaluation text, from the logits the pipeline already computed on each
evaluation batch: every document's next-token negative log-likelihood (padding excluded), the corpus
perplexity exp(total NLL / tokens), and intervals by resampling documents (the unit the text was drawn in)."""

from dataclasses import dataclass
from typing import Any

import numpy as np

from workers.runtime import Feeds

RESAMPLES = 2000


@dataclass
class DocumentLosses:
    """Per document: the summed next-token NLL (nats) and the number of tokens predicted."""

    nll: np.ndarray
    tokens: np.ndarray


def document_losses(logits: list[np.ndarray], batches: list[Feeds]) -> DocumentLosses:
    """Each document's NLL of tokens 2..n given those before, from its batch's logits [batch, sequence,
    vocab] and `input_ids` / `attention_mask`."""
    nll, tokens = [], []
    for scores, feeds in zip(logits, batches, strict=True):
        ids, mask = feeds["input_ids"], feeds.get("attention_mask", np.ones_like(feeds["input_ids"]))
        shifted = scores[:, :-1].astype(np.float64)
        top = shifted.max(axis=-1, keepdims=True)
        log_z = np.log(np.exp(shifted - top).sum(axis=-1)) + top[..., 0]
        target = np.take_along_axis(shifted, ids[:, 1:, None], axis=-1)[..., 0]
        keep = (mask[:, 1:] * mask[:, :-1]).astype(bool)
        nll.extend(((log_z - target) * keep).sum(axis=1))
        tokens.extend(keep.sum(axis=1))
    return DocumentLosses(np.asarray(nll), np.asarray(tokens))


def _resampled(losses: DocumentLosses, picks: np.ndarray) -> np.ndarray:
    return np.exp(losses.nll[picks].sum(axis=1) / np.maximum(losses.tokens[picks].sum(axis=1), 1))


def _picks(documents: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, documents, (RESAMPLES, documents))


def perplexity(losses: DocumentLosses, seed: int) -> dict[str, Any]:
    """exp(total NLL / total tokens) with a 95% bootstrap interval over documents."""
    value = float(np.exp(losses.nll.sum() / max(int(losses.tokens.sum()), 1)))
    low, high = np.percentile(_resampled(losses, _picks(len(losses.nll), seed)), [2.5, 97.5])
    return {
        "perplexity": value,
        "ci95": {"low": float(low), "high": float(high)},
        "documents": len(losses.nll),
        "tokens": int(losses.tokens.sum()),
        "method": f"bootstrap over documents, {RESAMPLES} resamples",
    }


def perplexity_change(original: DocumentLosses, result: DocumentLosses, seed: int) -> dict[str, Any]:
    """result perplexity / original - 1, with a paired 95% bootstrap interval (the same documents resampled
    for both, so the shared difficulty of a document cancels)."""
    picks = _picks(len(original.nll), seed)
    ratios = _resampled(result, picks) / _resampled(original, picks) - 1
    point = float(np.exp((result.nll.sum() - original.nll.sum()) / max(int(original.tokens.sum()), 1)) - 1)
    low, high = np.percentile(ratios, [2.5, 97.5])
    return {"relative": point, "ci95": {"low": float(low), "high": float(high)}}
