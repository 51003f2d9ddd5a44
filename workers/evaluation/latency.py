"""CPU latency: warm-up runs, then N timed runs at a fixed thread count, per batch size."""

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from workers.runtime import Feeds, ModelHandle, onnx_session


def _stats(samples_s: list[float], batch_size: int) -> dict[str, Any]:
    ms = np.array(samples_s) * 1000.0
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"batch_size": batch_size, "runs": len(ms), "p50_ms": float(p50), "p90_ms": float(p90),
            "p99_ms": float(p99), "mean_ms": float(ms.mean()), "throughput_per_s": float(batch_size / (p50 / 1000))}


def measure(handle: ModelHandle, batches: dict[int, Feeds], runs: int, warmup: int, threads: int) -> list[dict[str, Any]]:
    """Latency of `handle` for each {batch_size: feeds}; onnxruntime for ONNX, torch for torch modules."""
    call: Callable[[Feeds], Any]
    if handle.kind == "onnx":
        session = onnx_session(handle.path, threads)
        runtime = "onnxruntime"

        def call(feeds: Feeds) -> Any:
            return session.run(None, feeds)
    else:
        torch.set_num_threads(threads)
        runtime = "torch"

        def call(feeds: Feeds) -> Any:
            with torch.inference_mode():
                return handle.module(*[torch.from_numpy(feeds[n]) for n in handle.input_names])

    results = []
    for batch_size, feeds in batches.items():
        feeds = {n: feeds[n] for n in handle.input_names}
        for _ in range(warmup):
            call(feeds)
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            call(feeds)
            samples.append(time.perf_counter() - start)
        results.append({"runtime": runtime, "threads": threads, **_stats(samples, batch_size)})
    return results
