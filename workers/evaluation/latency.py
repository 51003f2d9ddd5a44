"""The latency protocol: warm-up runs, then timed runs at a fixed thread count, for every batch size
asked, with the peak memory of the measurement.

`compare_latency` is what a report uses: the original and the result are timed in the same process,
interleaved (rounds of a few runs each, in a seeded order that changes every round), so a machine that
slows down mid-measurement slows both alike. The speedup is the ratio of the medians with a bootstrap
95% interval over the rounds; an interval spanning 1 (or a change under MIN_EFFECT) reads "no measurable
difference". When the result runs on onnxruntime and the original on torch, the original is also exported
to fp32 ONNX and timed on onnxruntime beside them, and that like-for-like ratio is the headline.

ONNX models run on onnxruntime's CPU provider, or its CUDA provider for a `cuda` measurement where
onnxruntime has one (session.run blocks, so the wall clock times it); torch modules run on torch, on the CPU
or, for a `cuda` measurement, on the GPU timed with CUDA events after synchronisation, eager and again under
torch.compile (`measure_compiled`, compile time apart). An OpenVINO IR runs on the OpenVINO runtime's CPU
plugin (one infer request, float32 inference precision), a TFLite model on the LiteRT interpreter (XNNPACK),
each at the job's thread count and fed in its own input layout (a TFLite model's channels-last inputs are
transposed before the clock starts). Every row says what ran it (runtime and its version, device, timer) so a
reader knows what a figure means.
"""

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workers.runtime import Feeds, ModelHandle, PassFailed, laid_out, session_for

log = logging.getLogger(__name__)
_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")
ROUNDS = 20
"""interleaved rounds per batch size (fewer when fewer runs are asked): the bootstrap resamples these"""
BOOTSTRAP = 2000
MIN_EFFECT = 0.05
"""a speedup within 5% of 1 reads "no measurable difference" even when its interval excludes 1"""
HIGH_CV = 0.25
"""a coefficient of variation above this gets a note: the machine was busy and the figures are noisy"""

Call = Callable[[], Any]


def latency_stats(samples_ms: list[float] | np.ndarray, batch_size: int) -> dict[str, Any]:
    """Percentiles, mean and spread of per-run times in milliseconds; throughput is samples per second
    at the median latency (one outlier run does not move it), and `cv` is std / mean."""
    ms = np.asarray(samples_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    mean = float(ms.mean())
    std = float(ms.std(ddof=1)) if ms.size > 1 else 0.0
    return {
        "batch_size": batch_size,
        "runs": int(ms.size),
        "p50_ms": float(p50),
        "p90_ms": float(p90),
        "p99_ms": float(p99),
        "mean_ms": mean,
        "std_ms": std,
        "min_ms": float(ms.min()),
        "cv": std / mean if mean > 0 else None,
        "throughput_per_s": float(batch_size * 1000.0 / p50) if p50 > 0 else None,
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


def _timed_cpu(call: Call, runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def _timed_cuda(call: Call, runs: int) -> list[float]:
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)]
    for start, end in events:
        start.record()
        call()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) for start, end in events]


def _warm_cpu(call: Call, warmup: int) -> dict[str, Any]:
    """`warmup` untimed runs (at least one), and the RSS high-water mark they reached."""
    baseline = _status_kib("VmRSS")
    reset = _reset_rss_peak()
    for _ in range(max(1, warmup)):
        call()
    return {
        "peak_memory_bytes": _status_kib("VmHWM"),
        "baseline_memory_bytes": baseline,
        "memory_kind": "rss_high_water" if reset else "rss_high_water_since_process_start",
    }


def _warm_cuda(call: Call, warmup: int) -> dict[str, Any]:
    """`warmup` untimed runs (at least one), and the peak CUDA memory they allocated."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    for _ in range(max(1, warmup)):
        call()
    torch.cuda.synchronize()
    return {
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated()),
        "baseline_memory_bytes": int(baseline),
        "memory_kind": "cuda_max_allocated",
    }


@dataclass
class Runner:
    """One model ready to time: a call per batch size, and what runs it."""

    handle: ModelHandle
    on_cuda: bool
    describe: dict[str, Any]
    session: Any = None
    module: Any = None

    def call(self, feeds: Feeds) -> Call:
        if self.session is not None and self.handle.kind == "onnx":
            inputs = {n: feeds[n] for n in self.handle.input_names}
            session = self.session
            return lambda: session.run(None, inputs)
        if self.session is not None:  # OpenVINO or LiteRT, fed in the model's own layout (transposed untimed)
            laid = laid_out(self.handle, feeds)
            deployed = self.session
            return lambda: deployed(laid)
        where = "cuda" if self.on_cuda else "cpu"
        tensors = [torch.from_numpy(feeds[n]).to(where) for n in self.handle.input_names]
        module = self.module

        def run() -> Any:
            with torch.inference_mode():
                return module(*tensors)

        return run

    def warm(self, call: Call, warmup: int) -> dict[str, Any]:
        return (_warm_cuda if self.on_cuda else _warm_cpu)(call, warmup)

    def timed(self, call: Call, runs: int) -> list[float]:
        return (_timed_cuda if self.on_cuda else _timed_cpu)(call, runs)

    def close(self) -> None:
        if self.on_cuda:
            self.module = None
            torch.cuda.empty_cache()


RUNTIMES = {"onnx": "onnxruntime", "torch": "torch", "openvino": "openvino", "tflite": "litert"}
"""what times each kind of model: onnxruntime, torch, the OpenVINO runtime, the LiteRT interpreter"""


def runtime_version(runtime: str) -> str:
    """The version of the library that timed a row."""
    if runtime == "onnxruntime":
        import onnxruntime

        return str(onnxruntime.__version__)
    if runtime == "openvino":
        import openvino

        return str(openvino.get_version())
    if runtime == "litert":
        from importlib.metadata import version

        return version("ai-edge-litert")
    return str(torch.__version__)


def runner(handle: ModelHandle, threads: int, device: str, warmup: int) -> Runner:
    """onnxruntime (CPU) for ONNX; the OpenVINO runtime (CPU) for an OpenVINO IR; the LiteRT interpreter
    (CPU) for a TFLite model; torch for a torch module, on CUDA when `device` is cuda and a GPU is present,
    else on the CPU."""
    torch.set_num_threads(threads)
    on_cuda = device == "cuda" and handle.kind == "torch" and torch.cuda.is_available()
    session = session_for(handle, threads, device) if handle.kind != "torch" else None
    module = None if session is not None else (copy.deepcopy(handle.module).to("cuda") if on_cuda else handle.module)
    provider = session.get_providers()[0] if handle.kind == "onnx" and session is not None else None
    runtime = RUNTIMES[handle.kind]
    describe = {
        "runtime": runtime,
        "runtime_version": runtime_version(runtime),
        "device": "cuda" if on_cuda or provider == "CUDAExecutionProvider" else "cpu",
        "provider": provider,
        "timer": "cuda_events" if on_cuda else "perf_counter",
        "threads": threads,
        "warmup": warmup,
        "gpu": torch.cuda.get_device_name() if on_cuda else None,
    }
    return Runner(handle, on_cuda, describe, session, module)


def measure(
    handle: ModelHandle, batches: dict[int, Feeds], runs: int, warmup: int, threads: int, device: str = "cpu"
) -> list[dict[str, Any]]:
    """Latency of one model alone for each {batch_size: feeds}: warm-up, then `runs` timed runs."""
    timer = runner(handle, threads, device, warmup)
    rows = []
    try:
        for batch_size, feeds in batches.items():
            call = timer.call(feeds)
            memory = timer.warm(call, warmup)
            rows.append({**timer.describe, **latency_stats(timer.timed(call, runs), batch_size), **memory})
    finally:
        timer.close()
    return rows


def measure_compiled(
    handle: ModelHandle, batches: dict[int, Feeds], runs: int, warmup: int, threads: int
) -> list[dict[str, Any]]:
    """A torch module on CUDA timed under torch.compile: the first call per batch size (compilation) is timed
    apart as `compile_seconds`, then the usual warm-up and timed runs. Empty when it is not a torch module on
    a GPU; a row with `error` when torch.compile refuses the model (its eager rows stand)."""
    timer = runner(handle, threads, "cuda", warmup)
    if not timer.on_cuda:
        return []
    timer.module = torch.compile(timer.module)
    timer.describe = {**timer.describe, "compiled": "torch.compile"}
    rows = []
    try:
        for batch_size, feeds in batches.items():
            call = timer.call(feeds)
            start = time.perf_counter()
            call()
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            memory = timer.warm(call, warmup)
            stats = latency_stats(timer.timed(call, runs), batch_size)
            rows.append({**timer.describe, "compile_seconds": seconds, **stats, **memory})
    except Exception as exc:  # inductor raises many types; a model it cannot compile keeps its eager figures
        log.warning("torch.compile failed on the model: %s", exc)
    finally:
        timer.close()
        torch._dynamo.reset()
    return rows


def interleaved(timers: dict[str, Runner], feeds: Feeds, runs: int, warmup: int, seed: int) -> dict[str, Any]:
    """Each model warmed up (its memory read then), then `runs` timed runs of each, in rounds: every
    round runs every model a few times, in an order shuffled per round. Per model: its samples by round
    and the memory figures."""
    calls = {name: timer.call(feeds) for name, timer in timers.items()}
    memory = {name: timers[name].warm(call, warmup) for name, call in calls.items()}
    rounds = max(1, min(ROUNDS, runs))
    sizes = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[list[float]]] = {name: [] for name in timers}
    names = list(timers)
    for size in sizes:
        for index in rng.permutation(len(names)):
            name = names[index]
            samples[name].append(timers[name].timed(calls[name], size))
    return {"samples": samples, "memory": memory}


def speedup_interval(
    baseline: list[list[float]], candidate: list[list[float]], seed: int
) -> tuple[float, float, float]:
    """median(baseline) / median(candidate) (above 1: the candidate is faster) and its 95% bootstrap
    interval, resampling whole rounds with the pair of models kept together (a paired block bootstrap)."""
    a = [np.asarray(r) for r in baseline]
    b = [np.asarray(r) for r in candidate]
    ratio = float(np.median(np.concatenate(a)) / np.median(np.concatenate(b)))
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(BOOTSTRAP, len(a)))
    replicates = np.array(
        [np.median(np.concatenate([a[i] for i in p])) / np.median(np.concatenate([b[i] for i in p])) for p in picks]
    )
    low, high = np.percentile(replicates, [2.5, 97.5])
    return ratio, float(low), float(high)


def reading(ratio: float, low: float, high: float) -> str:
    """faster, slower, or no measurable difference (an interval spanning 1, or a change under MIN_EFFECT)."""
    if low <= 1.0 <= high or abs(ratio - 1.0) < MIN_EFFECT:
        return "no measurable difference"
    return "faster" if ratio > 1.0 else "slower"


@dataclass
class LatencyComparison:
    """What compare_latency measured: rows per model and one comparison per batch size."""

    original: list[dict[str, Any]] = field(default_factory=list)
    original_as_onnx: list[dict[str, Any]] = field(default_factory=list)
    """the original exported to fp32 ONNX and timed on onnxruntime, when the result is ONNX and the
    original is not"""
    result: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    samples: dict[str, dict[int, list[list[float]]]] = field(default_factory=dict)
    """the per-round samples of the original (and original_as_onnx) by batch size: what a later job on the
    same model reuses (workers.evaluation.original_cache)"""


@dataclass
class KnownTiming:
    """The original's timing from an earlier job on the same model, settings and machine: its rows and
    per-round samples by name (original, original_as_onnx) and batch size."""

    rows: dict[str, list[dict[str, Any]]]
    samples: dict[str, dict[int, list[list[float]]]]


def onnx_baseline(original: ModelHandle, example: Feeds, workdir: Path) -> ModelHandle | None:
    """The original exported to fp32 ONNX with the same exporter the convert pass uses; None (logged)
    when it does not export: the comparison is then only against the original's own runtime."""
    from passes.convert.run import DEFAULT_OPSET, export_to_onnx
    from workers.context import PassContext

    folder = workdir / "latency-baseline"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return export_to_onnx(
            original, PassContext(workdir=folder, step=0, device="cpu", example=example), DEFAULT_OPSET
        )
    except PassFailed as exc:
        log.warning("the original did not export to ONNX for a like-for-like timing: %s", exc.message)
        return None


def _comparison(
    batch_size: int, baseline: str, rows: dict[str, dict[str, Any]], samples: dict[str, list[list[float]]], seed: int
) -> dict[str, Any]:
    """One batch size's speedup of the result over `baseline`; the headline is the like-for-like one."""
    ratio, low, high = speedup_interval(samples[baseline], samples["result"], seed)
    return {
        "batch_size": batch_size,
        "device": rows["result"]["device"],
        "baseline": baseline,
        "baseline_runtime": rows[baseline]["runtime"],
        "result_runtime": rows["result"]["runtime"],
        "like_for_like": rows[baseline]["runtime"] == rows["result"]["runtime"],
        "headline": baseline == ("original_as_onnx" if "original_as_onnx" in rows else "original"),
        "speedup": ratio,
        "speedup_ci95": {"low": low, "high": high},
        "reading": reading(ratio, low, high),
        "rounds": len(samples["result"]),
        "method": f"ratio of medians, {BOOTSTRAP}-resample paired bootstrap over interleaved rounds",
    }


def original_timers(
    original: ModelHandle, result: ModelHandle, example: Feeds, threads: int, device: str, warmup: int, workdir: Path
) -> dict[str, Runner]:
    """The original on its own runtime and, with a torch original and a result that is not (ONNX, OpenVINO,
    TFLite), exported to ONNX."""
    timers = {"original": runner(original, threads, device, warmup)}
    if result.kind != "torch" and original.kind == "torch":
        exported = onnx_baseline(original, example, workdir)
        if exported is not None:
            timers["original_as_onnx"] = runner(exported, threads, device, warmup)
    return timers


def compare_latency(
    original: ModelHandle,
    result: ModelHandle,
    batches: dict[int, Feeds],
    runs: int,
    warmup: int,
    threads: int,
    device: str,
    seed: int,
    workdir: Path,
    known: KnownTiming | None = None,
) -> LatencyComparison:
    """The original and the result timed interleaved at every batch size; with a torch original and an
    ONNX result, the original exported to ONNX too, and its comparison first (the headline). With `known`
    (the original timed by an earlier job on this machine) only the result is timed, against those rounds."""
    timers = {"result": runner(result, threads, device, warmup)}
    if known is None:
        timers |= original_timers(original, result, next(iter(batches.values())), threads, device, warmup, workdir)
    found = LatencyComparison()
    try:
        for index, (batch_size, feeds) in enumerate(batches.items()):
            measured = interleaved(timers, feeds, runs, warmup, seed + batch_size)
            rows = {
                name: {
                    **timer.describe,
                    **latency_stats(np.concatenate(measured["samples"][name]), batch_size),
                    **measured["memory"][name],
                }
                for name, timer in timers.items()
            }
            samples = measured["samples"]
            if known is not None:
                rows |= {name: known.rows[name][index] for name in known.rows}
                samples = {**{name: known.samples[name][batch_size] for name in known.rows}, **samples}
            for name in set(rows) - {"result"}:
                found.samples.setdefault(name, {})[batch_size] = samples[name]
            found.original.append(rows["original"])
            found.result.append(rows["result"])
            if "original_as_onnx" in rows:
                found.original_as_onnx.append(rows["original_as_onnx"])
            for baseline in sorted(set(rows) - {"result"}, key=lambda n: n != "original_as_onnx"):
                found.comparisons.append(_comparison(batch_size, baseline, rows, samples, seed))
    finally:
        for timer in timers.values():
            timer.close()
    return found


def p50_at_first_batch(rows: list[dict[str, Any]]) -> float | None:
    """The headline latency: p50 at the first batch size measured (what `max_latency_ms` is checked on)."""
    return float(rows[0]["p50_ms"]) if rows else None
