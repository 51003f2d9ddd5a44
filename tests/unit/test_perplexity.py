"""Perplexity from logits as the report computes it: uniform logits give the vocabulary size, padding is not
counted, and the paired change of a model against itself is zero."""

import numpy as np

from workers.evaluation.perplexity import document_losses, perplexity, perplexity_change


def batch(vocab: int, lengths: list[int], width: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, (len(lengths), width))
    mask = np.array([[1] * n + [0] * (width - n) for n in lengths])
    return np.zeros((len(lengths), width, vocab), np.float32), {"input_ids": ids, "attention_mask": mask}


def test_uniform_logits_have_the_vocabulary_as_perplexity() -> None:
    logits, feeds = batch(50, [5, 9, 3], 9)
    losses = document_losses([logits], [feeds])
    assert losses.tokens.tolist() == [4, 8, 2], "tokens 2..n of each document, padding excluded"
    figures = perplexity(losses, seed=0)
    assert abs(figures["perplexity"] - 50) < 1e-6
    assert abs(figures["ci95"]["low"] - 50) < 1e-6 and abs(figures["ci95"]["high"] - 50) < 1e-6, "no spread"


def test_a_model_against_itself_changes_nothing() -> None:
    logits, feeds = batch(20, [6, 7, 8, 4], 8)
    logits += np.random.default_rng(1).standard_normal(logits.shape).astype(np.float32)
    losses = document_losses([logits], [feeds])
    change = perplexity_change(losses, losses, seed=0)
    assert abs(change["relative"]) < 1e-12 and change["ci95"] == {"low": 0.0, "high": 0.0}
