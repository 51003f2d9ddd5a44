"""Accuracy statistics: figures equal an independent computation on the digits CNN, and the paired
bootstrap interval covers the true drop on resamples of a population (synthetic and real)."""

import copy
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, mean_absolute_error, mean_squared_error, top_k_accuracy_score

from workers.evaluation.fidelity import fidelity
from workers.evaluation.metrics import accuracy_report, paired_bootstrap_drop, sqnr_db, topk_correct
from workers.examples import Digits


def _logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def digits_logits(digits: Digits, digits_cnn: torch.nn.Module) -> dict[str, Any]:
    """The trained CNN's test-set logits, and a copy's with noise in its last layer (a worse result)."""
    damaged = copy.deepcopy(digits_cnn)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        assert isinstance(damaged, torch.nn.Sequential)
        last = damaged[-1]
        assert isinstance(last, torch.nn.Linear)
        last.weight += 0.6 * last.weight.std() * torch.randn(last.weight.shape, generator=generator)
    return {
        "original": _logits(digits_cnn, digits.x_test),
        "result": _logits(damaged, digits.x_test),
        "labels": digits.y_test,
    }


def test_accuracy_report_on_digits_equals_an_independent_computation(digits_logits: dict[str, Any]) -> None:
    ref, res, y = digits_logits["original"], digits_logits["result"], digits_logits["labels"]
    report = accuracy_report(ref, res, y, "logits", seed=3)
    assert report["task"] == "classification" and report["output"] == "logits" and report["samples"] == len(y)
    assert report["original"]["top1"] == pytest.approx(accuracy_score(y, ref.argmax(1)), abs=1e-12)
    assert report["result"]["top1"] == pytest.approx(accuracy_score(y, res.argmax(1)), abs=1e-12)
    assert report["original"]["top5"] == pytest.approx(top_k_accuracy_score(y, ref, k=5), abs=1e-12)
    true_drop = accuracy_score(y, ref.argmax(1)) - accuracy_score(y, res.argmax(1))
    assert report["drop"] == pytest.approx(true_drop, abs=1e-12)
    assert true_drop > 0, "the damaged copy is worse, so the test exercises a real drop"
    assert report["drop_ci95"]["low"] <= report["drop"] <= report["drop_ci95"]["high"]
    assert "bootstrap" in report["method"] and "seed 3" in report["method"], "the report says how"
    again = accuracy_report(ref, res, y, "logits", seed=3)
    assert again["drop_ci95"] == report["drop_ci95"], "seeded: the same interval every time"


def _coverage(ref_correct: np.ndarray, res_correct: np.ndarray, sample_size: int, trials: int) -> float:
    true_drop = ref_correct.mean() - res_correct.mean()
    rng = np.random.default_rng(42)
    hits = 0
    for trial in range(trials):
        idx = rng.integers(0, ref_correct.size, sample_size)
        ci = paired_bootstrap_drop(ref_correct[idx], res_correct[idx], resamples=1000, seed=trial)
        hits += ci["low"] <= true_drop <= ci["high"]
    return hits / trials


def test_interval_covers_the_true_drop_on_a_synthetic_population() -> None:
    rng = np.random.default_rng(0)
    ref = rng.random(100_000) < 0.92
    res = ref & (rng.random(100_000) > 0.04) | (~ref & (rng.random(100_000) < 0.02))
    coverage = _coverage(ref, res, sample_size=400, trials=300)
    assert 0.91 <= coverage <= 0.99, f"a 95% interval covered the true drop in {coverage:.1%} of resamples"


def test_interval_covers_the_true_drop_on_resamples_of_the_digits_test_set(
    digits_logits: dict[str, Any],
) -> None:
    y = digits_logits["labels"]
    ref = topk_correct(digits_logits["original"], y, 1)
    res = topk_correct(digits_logits["result"], y, 1)
    coverage = _coverage(ref, res, sample_size=len(y), trials=200)
    # A percentile bootstrap under-covers a little when the drop rests on a few dozen discordant
    # samples (as here, and the count moves with each training of the CNN); 0.85 is 0.92 less
    # four binomial standard errors of a 200-trial estimate, so a broken interval still fails.
    assert 0.85 <= coverage <= 0.995, f"a 95% interval covered the digits drop in {coverage:.1%} of resamples"


def test_regression_and_embedding_metrics() -> None:
    rng = np.random.default_rng(0)
    target = rng.standard_normal((200, 1)).astype(np.float32)
    ref, res = (
        target + 0.1 * rng.standard_normal(target.shape),
        target + 0.3 * rng.standard_normal(target.shape),
    )
    report = accuracy_report(ref, res, target, "value")
    assert report["task"] == "regression"
    assert report["original"]["mae"] == pytest.approx(mean_absolute_error(target, ref))
    assert report["result"]["rmse"] == pytest.approx(np.sqrt(mean_squared_error(target, res)))
    assert report["drop"] > 0 and report["drop_ci95"]["low"] > 0, "noisier predictions: a clear error increase"

    emb = rng.standard_normal((50, 16)).astype(np.float32)
    embedding = accuracy_report(emb, -emb, emb, "embedding")
    assert embedding["task"] == "embedding"
    assert embedding["original"]["cosine"] == pytest.approx(1.0) and embedding["result"]["cosine"] == pytest.approx(-1)


def test_labels_that_fit_no_task_are_refused() -> None:
    with pytest.raises(ValueError, match="fit neither"):
        accuracy_report(np.zeros((4, 3)), np.zeros((4, 3)), np.zeros((4, 7), dtype=np.float32), "y")


def test_sqnr_and_fidelity_top1_agreement() -> None:
    ones = np.ones((10, 4))
    assert sqnr_db(ones, ones * 1.1) == pytest.approx(20.0)
    assert sqnr_db(ones, ones) is None, "identical outputs: infinite SQNR, reported as null"
    ref = np.eye(4, dtype=np.float32)[[0, 1, 2, 3]]
    cand = np.eye(4, dtype=np.float32)[[0, 1, 2, 0]]
    fid = fidelity(["logits"], [[ref]], [[cand]])
    assert fid["output"] == "logits" and fid["top1_agreement"] == 0.75 and fid["sqnr_db"] is not None


def test_text_fidelity_counts_the_real_tokens_only() -> None:
    """Hidden states [batch, sequence, hidden]: what a model writes at padded positions is read by no one."""
    generator = np.random.default_rng(0)
    ref = generator.standard_normal((2, 6, 8)).astype(np.float32)
    cand = ref.copy()
    cand[:, 4:] = -ref[:, 4:]  # the result differs only where both samples are padding
    mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=np.int64)
    unmasked = fidelity(["hidden"], [[ref]], [[cand]])
    masked = fidelity(["hidden"], [[ref]], [[cand]], [{"input_ids": mask, "attention_mask": mask}])
    assert unmasked["cosine_mean"] < 0.9, "without the mask the padded positions count"
    assert masked["cosine_mean"] == pytest.approx(1.0) and masked["max_abs_error"] == 0.0
