"""The latency protocol: warm-up runs, then N timed runs at a fixed thread count, for every batch size
asked, with the peak memory of the measurement.

ONNX models run on onnxruntime's CPU provider; torch modules run on torch, on the CPU or, for a
`cuda` measurement, on the GPU timed with CUDA events after synchronisation. Every row says what ran it
(runtime, device, timer) so a reader knows what a figure means.
"""

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.runtime import Feeds, ModelHandle, onnx_session

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def latency_stats(samples_ms: list[float] | np.ndarray, batch_size: int) -> dict[str, Any]:
    """Percentiles, mean and spread of per-run times in milliseconds; throughput is samples per second
    at the mean latency (batch_size runs back to back)."""
    ms = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    return {
        "batch_size": batch_size,
        "runs": int(ms.size),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": mean,
        "std_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
        "min_ms": float(ms.min()),
        "throughput_per_s": float(batch_size * 1000.0 / mean) if mean > 0 else None,
    }


def _status_kib(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset this process's RSS high-water mark (Linux: writing 5 to clear_refs), so the peak read after a
    measurement is that measurement's own."""
    try:
        _CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def time_cpu(call: Callable[[], Any], runs: int, warmup: int) -> tuple[list[float], dict[str, Any]]:
    """Per-run wall times (ms, perf_counter) after `warmup` untimed runs, and the RSS of the measurement."""
    baseline = _status_kib("VmRSS")
    reset = _reset_rss_peak()
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000.0)
    peak = _status_kib("VmHWM")
    memory = {
        "peak_memory_bytes": peak,
        "baseline_memory_bytes": baseline,
        "memory_kind": "rss_high_water" if reset else "rss_high_water_since_process_start",
    }
    return samples, memory


def time_cuda(call: Callable[[], Any], runs: int, warmup: int) -> tuple[list[float], dict[str, Any]]:
    """Per-run GPU times (ms) from a pair of CUDA events around each run, read after one synchronisation,
    and the peak CUDA memory allocated by the measurement."""
    for _ in range(warmup):
        call()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
    for start, end in events:
        start.record()
        call()
        end.record()
    torch.cuda.synchronize()
    samples = [start.elapsed_time(end) for start, end in events]
    memory = {
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated()),
        "baseline_memory_bytes": int(baseline),
        "memory_kind": "cuda_max_allocated",
    }
    return samples, memory


def _torch_call(module: Any, feeds: Feeds, names: list[str], device: str) -> Callable[[], Any]:
    tensors = [torch.from_numpy(feeds[n]).to(device) for n in names]

    def call() -> Any:
        with torch.inference_mode():
            return module(*tensors)

    return call


def measure(
    handle: ModelHandle, batches: dict[int, Feeds], runs: int, warmup: int, threads: int, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Latency of `handle` for each {batch_size: feeds}. onnxruntime (CPU) for ONNX; torch for torch modules,
    on CUDA with CUDA events when `device` is cuda and a GPU is present, else on the CPU."""
    torch.set_num_threads(threads)
    on_cuda = device == "cuda" and handle.kind == "torch" and torch.cuda.is_available()
    module: Any = None
    session: Any = None
    if handle.kind == "onnx":
        session = onnx_session(handle.path, threads)
    elif on_cuda:
        module = copy.deepcopy(handle.module).to("cuda")
    else:
        module = handle.module
    where = "cuda" if on_cuda else "cpu"
    base = {
        "runtime": "onnxruntime" if session is not None else "torch",
        "device": where,
        "provider": "CPUExecutionProvider" if session is not None else None,
        "timer": "cuda_events" if on_cuda else "perf_counter",
        "threads": threads,
        "warmup": warmup,
        "gpu": torch.cuda.get_device_name() if on_cuda else None,
    }
    results = []
    try:
        for batch_size, feeds in batches.items():
            call: Callable[[], Any]
            if session is not None:
                inputs = {n: feeds[n] for n in handle.input_names}

                def call(inputs: Feeds = inputs) -> Any:
                    return session.run(None, inputs)
            else:
                call = _torch_call(module, feeds, handle.input_names, where)
            samples, memory = (time_cuda if on_cuda else time_cpu)(call, runs, warmup)
            results.append({**base, **latency_stats(samples, batch_size), **memory})
    finally:
        if on_cuda:
            del module
            torch.cuda.empty_cache()
    return results


def p50_at_first_batch(rows: list[dict[str, Any]]) -> float | None:
    """The headline latency: p50 at the first batch size measured (what `max_latency_ms` is checked on)."""
    return float(rows[0]["p50_ms"]) if rows else None
