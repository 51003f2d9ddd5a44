"""Greedy generation from a causal LM in whichever form the pipeline holds it, and how fast it generates.

The Hugging Face module and an ONNX graph with a KV cache (passes.convert.causal_lm_export) run the prompt
once and then one token a step on their cache; any other form (a .pt2 or TorchScript program of the
logits) re-reads the whole sequence each step, which the report says."""

import copy
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workers.runtime import HuggingFaceModule, ModelHandle, device_of, onnx_session, run

SPEED_ROUNDS = 3


@dataclass
class Stepper:
    """One model generating: `start` reads the prompt, `step` one more token per row; both give the logits
    of the next token [batch, vocab]."""

    handle: ModelHandle
    threads: int
    device: str
    state: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.handle.kind == "onnx":
            self.session = onnx_session(self.handle.path, self.threads, self.device)
        self.lm = causal_lm_of(self.handle.module)
        on_cpu = self.lm is not None and device_of(self.lm).type == "cpu"
        if on_cpu and self.device == "cuda" and torch.cuda.is_available():  # a cuda job's original on the GPU too
            self.lm = copy.deepcopy(self.lm).to("cuda")

    @property
    def cached(self) -> bool:
        return self.handle.kv_cache is not None or self.lm is not None

    def start(self, ids: np.ndarray) -> np.ndarray:
        self.state = {"ids": ids, "mask": np.ones_like(ids)}
        if self.handle.kv_cache is not None:
            return self._onnx(ids, self.handle.kv_cache.empty(len(ids)))
        if self.lm is not None:
            return self._torch(ids, None)
        return self._whole()

    def step(self, token: np.ndarray) -> np.ndarray:
        column = token[:, None].astype(np.int64)
        self.state["ids"] = np.concatenate([self.state["ids"], column], axis=1)
        self.state["mask"] = np.ones_like(self.state["ids"])
        if self.handle.kv_cache is not None:
            return self._onnx(column, self.state["past"])
        if self.lm is not None:
            return self._torch(column, self.state["past"])
        return self._whole()

    def _onnx(self, ids: np.ndarray, past: dict[str, np.ndarray]) -> np.ndarray:
        cache = self.handle.kv_cache
        assert cache is not None
        outputs = self.session.run(None, {"input_ids": ids, "attention_mask": self.state["mask"], **past})
        self.state["past"] = dict(zip(cache.past(), outputs[1:], strict=True))
        return np.asarray(outputs[0][:, -1])

    def _torch(self, ids: np.ndarray, past: Any) -> np.ndarray:
        model = self.lm
        where = device_of(model)
        mask = torch.from_numpy(self.state["mask"]).to(where)
        with torch.inference_mode():
            out = model(
                input_ids=torch.from_numpy(ids).to(where),
                attention_mask=mask,
                past_key_values=past,
                use_cache=True,
                return_dict=True,
            )
        self.state["past"] = out.past_key_values
        return out.logits[:, -1].float().cpu().numpy()

    def _whole(self) -> np.ndarray:
        feeds = {"input_ids": self.state["ids"], "attention_mask": self.state["mask"]}
        return run(self.handle, {n: feeds[n] for n in self.handle.input_names})[0][:, -1]


def causal_lm_of(module: Any) -> Any:
    """The transformers causal LM inside a pipeline module: the Hugging Face module's, or that of one a GPU or
    half-precision method wrapped (workers.gpu.OnGpu, ReducedPrecision), so it generates on its own cache;
    None for anything else."""
    inner = module if isinstance(module, HuggingFaceModule) else getattr(module, "module", None)
    return inner.model if isinstance(inner, HuggingFaceModule) and inner.causal_lm else None


def greedy(stepper: Stepper, prompt: list[int], new_tokens: int) -> list[int]:
    """The `new_tokens` most likely next tokens after `prompt`, one at a time (batch 1, no padding)."""
    logits = stepper.start(np.asarray([prompt], dtype=np.int64))
    tokens: list[int] = []
    for _ in range(new_tokens):
        token = np.argmax(logits, axis=-1)
        tokens.append(int(token[0]))
        if len(tokens) < new_tokens:
            logits = stepper.step(token)
    return tokens


def agreement(original: list[list[int]], result: list[list[int]], first: int) -> dict[str, Any]:
    """How many prompts the result continues with exactly the original's first `first` greedy tokens, and
    the mean length of the common prefix."""
    same = [a[:first] == b[:first] for a, b in zip(original, result, strict=True)]
    prefix = [
        next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
        for a, b in zip(original, result, strict=True)
    ]
    return {
        "first_tokens": first,
        "prompts": len(same),
        "identical": sum(same),
        "share": sum(same) / len(same) if same else None,
        "mean_common_prefix": statistics.fmean(prefix) if prefix else None,
    }


def generation_speed(
    stepper: Stepper, prompt_length: int, batch: int, new_tokens: int, vocab: int, seed: int
) -> dict[str, Any]:
    """Time to first token (the prompt read and its first token chosen) and decode tokens per second over
    `new_tokens` further steps, at `batch` prompts of `prompt_length` random tokens; the median of
    SPEED_ROUNDS rounds after one untimed round."""
    ids = np.random.default_rng(seed).integers(3, vocab, (batch, prompt_length)).astype(np.int64)
    first, decode = [], []
    for round_ in range(SPEED_ROUNDS + 1):
        t0 = time.perf_counter()
        token = np.argmax(stepper.start(ids), axis=-1)
        t1 = time.perf_counter()
        for _ in range(new_tokens):
            token = np.argmax(stepper.step(token), axis=-1)
        t2 = time.perf_counter()
        if round_:
            first.append(t1 - t0)
            decode.append(t2 - t1)
    return {
        "prompt_length": prompt_length,
        "batch_size": batch,
        "new_tokens": new_tokens,
        "time_to_first_token_ms": 1000 * statistics.median(first),
        "decode_tokens_per_s": batch * new_tokens / statistics.median(decode),
        "kv_cache": stepper.cached,
        "rounds": SPEED_ROUNDS,
        "threads": stepper.threads,
        "runtime": "onnxruntime" if stepper.handle.kind == "onnx" else "torch",
    }
