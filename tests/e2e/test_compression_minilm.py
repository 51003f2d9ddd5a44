"""PyTorch-side compression through the API on all-MiniLM-L6-v2 (the zipped Hugging Face folder): SVD at
half rank on its Linear layers, and distillation into a 3-layer student on 2,000 generated sentences. The
downloaded ONNX artifacts are run here on held-out sentences and compared with the original's mean-pooled
sentence embeddings. Figures are printed (pytest -s) for the README table."""

import itertools
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tests.conftest import Stack, upload
from tests.e2e.test_compression_cnn import run_job, upload_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.numerics]
SUBJECTS = [
    "The committee",
    "A small robot",
    "My grandmother",
    "The new compiler",
    "Heavy rain",
    "The orchestra",
    "A tired engineer",
    "The city council",
    "An old lighthouse",
    "The football team",
    "Our neighbour",
    "The startup",
    "A young doctor",
    "The old train",
    "The museum",
]
VERBS = [
    "approved",
    "cleaned",
    "baked",
    "reduced",
    "flooded",
    "painted",
    "repaired",
    "visited",
    "described",
    "ignored",
    "celebrated",
    "measured",
]
OBJECTS = [
    "the budget",
    "the kitchen floor",
    "fresh bread",
    "the build time",
    "the harbour",
    "a bright mural",
    "the broken bridge",
    "the quiet village",
    "a strange dream",
    "the final report",
    "the results",
]
ENDINGS = [
    "after a long debate.",
    "on Sunday morning.",
    "without any help.",
    "for the first time.",
    "in the rain.",
    "before lunch.",
]
SEQUENCE = 24
LR = 2e-4
MIN_DISTILLED_COSINE = 0.9
"""the issue's target; the student starts at 0.61 (every other layer dropped) and reached 0.976"""


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


class Corpus:
    """2,000 training and 64 held-out sentences, tokenized by MiniLM's own tokenizer to SEQUENCE tokens, and
    the original model's mean-pooled embeddings of the held-out ones."""

    def __init__(self, minilm_dir: Path) -> None:
        sentences = [" ".join(parts) for parts in itertools.product(SUBJECTS, VERBS, OBJECTS, ENDINGS)]
        order = np.random.default_rng(0).permutation(len(sentences))
        tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))

        def encode(items: list[str]) -> dict[str, np.ndarray]:
            encoded = tokenizer(items, padding="max_length", max_length=SEQUENCE, truncation=True, return_tensors="np")
            return {k: v.astype(np.int64) for k, v in encoded.items()}

        self.train = encode([sentences[i] for i in order[:2000]])
        self.held_out = encode([sentences[i] for i in order[2000:2064]])
        model = AutoModel.from_pretrained(str(minilm_dir), use_safetensors=True).eval()
        with torch.inference_mode():
            hidden = model(**{k: torch.from_numpy(v) for k, v in self.held_out.items()}).last_hidden_state
        self.expected = _mean_pool(hidden.numpy(), self.held_out["attention_mask"])

    def cosine(self, artifact: bytes) -> float:
        session = ort.InferenceSession(artifact)
        feeds = {i.name: self.held_out[i.name] for i in session.get_inputs()}
        return _cosine(_mean_pool(session.run(None, feeds)[0], self.held_out["attention_mask"]), self.expected)


@pytest.fixture(scope="module")
def corpus(minilm_dir: Path) -> Corpus:
    return Corpus(minilm_dir)


@pytest.fixture(scope="module")
def ids(stack: Stack, minilm_zip: Path, corpus: Corpus) -> dict[str, str]:
    with stack.client() as client:
        return {
            "model": upload(client, minilm_zip)["id"],
            "train": upload_dataset(client, corpus.train, "train.npz"),
            "held_out": upload_dataset(client, corpus.held_out, "held_out.npz"),
        }


def test_svd_half_rank(client: httpx.Client, stack: Stack, ids: dict[str, str], corpus: Corpus) -> None:
    spec = {
        "model_id": ids["model"],
        "evaluate": {"dataset_id": ids["held_out"], "latency": {"runs": 5}},
        "passes": [{"type": "lowrank", "method": "svd", "rank_ratio": 0.5}],
    }
    report, _, artifact = run_job(client, stack, spec)
    metrics = report["steps"][0]["metrics"]
    assert len(metrics["factorized"]) == 12, "the 12 feed-forward Linear layers are factorized"
    assert all("attention" in name or "pooler" in name for name in metrics["skipped_no_gain"]), (
        "square 384x384 projections gain nothing at half rank and are left alone"
    )
    params = report["original"]["param_count"], report["result"]["param_count"]
    assert params[1] < params[0]
    cosine = corpus.cosine(artifact)
    assert cosine > 0.5, f"sentence embeddings after SVD: cosine {cosine:.4f}"
    print(
        f"\nMiniLM SVD half rank: params {params[0]} -> {params[1]}, sentence-embedding cosine {cosine:.4f}, "
        f"report hidden-state cosine {report['result']['fidelity']['cosine_mean']:.4f}"
    )


def test_distill_into_three_layers(client: httpx.Client, stack: Stack, ids: dict[str, str], corpus: Corpus) -> None:
    spec = {
        "model_id": ids["model"],
        "evaluate": {"dataset_id": ids["held_out"], "latency": {"runs": 5}},
        "passes": [
            {
                "type": "distill",
                "student": "drop_layers",
                "dataset_id": ids["train"],
                "epochs": 2,
                "lr": LR,
                "batch_size": 32,
            }
        ],
    }
    report, _, artifact = run_job(client, stack, spec)
    metrics = report["steps"][0]["metrics"]
    assert metrics["layers_kept"] == [1, 3, 5] and metrics["loss"] == "mse"
    cosine = corpus.cosine(artifact)
    assert cosine >= MIN_DISTILLED_COSINE, f"3-layer student: sentence-embedding cosine {cosine:.4f}"
    params = report["original"]["param_count"], report["result"]["param_count"]
    print(
        f"\nMiniLM distilled 6 -> 3 layers, 2 epochs on 2,000 sentences: params {params[0]} -> {params[1]}, "
        f"sentence-embedding cosine {cosine:.4f}, hidden-state cosine "
        f"{report['result']['fidelity']['cosine_mean']:.4f}, losses {metrics['epoch_losses']}"
    )
