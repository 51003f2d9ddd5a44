"""The report as the API returns it: what a job measured, for the original and the result, with the
constraints' verdict and what it takes to reproduce it. Extra fields the worker adds pass through."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from passes.planner import Plan


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class LatencyRow(_Open):
    batch_size: int
    runtime: str = Field(description="what timed it: onnxruntime, torch, openvino or litert")
    runtime_version: str | None = Field(None, description="that runtime's version, e.g. 1.23.2")
    device: str = Field("cpu", description="cpu or cuda: where it ran")
    timer: str = Field("perf_counter", description="perf_counter (wall clock) or cuda_events")
    threads: int | None = Field(None, description="intra-op threads, fixed for the measurement")
    warmup: int | None = Field(None, description="untimed runs before the timed ones")
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float | None = None
    min_ms: float | None = None
    cv: float | None = Field(None, description="coefficient of variation (std / mean): above 0.25, noisy")
    throughput_per_s: float | None = Field(None, description="samples per second at the median (p50) latency")
    peak_memory_bytes: int | None = Field(None, description="peak memory during the measurement")
    baseline_memory_bytes: int | None = Field(None, description="memory in use when the measurement began")
    memory_kind: str | None = Field(None, description="rss_high_water (process RSS) or cuda_max_allocated")
    gpu: str | None = None
    compiled: str | None = Field(
        None, description="torch.compile for a compiled row, aotinductor for an AOTInductor package's; null when eager"
    )
    compile_seconds: float | None = Field(
        None, description="compiled rows: wall time of the first call (compilation), not in the timed runs"
    )


class OutputFidelity(_Open):
    cosine_mean: float | None = None
    cosine_min: float | None = None
    max_abs_error: float | None = None
    mean_abs_error: float | None = None
    sqnr_db: float | None = Field(
        None, description="signal-to-noise ratio in dB; null when the outputs are identical (infinite)"
    )
    top1_agreement: float | None = Field(None, description="share of samples whose argmax is the original's")
    samples: int | None = None
    error: str | None = None


class Fidelity(OutputFidelity):
    output: str | None = Field(None, description="the output the headline figures are for")
    outputs: dict[str, OutputFidelity | None] = Field(default_factory=dict, description="every float output")


class ModelFigures(_Open):
    format: str
    size_bytes: int | None = Field(None, description="bytes on disk; null for an in-memory torch form")
    sha256: str | None = None
    param_count: int | None = None
    sparsity: float | None = Field(None, description="share of exact zeros among weight tensors of rank >= 2")
    macs_per_sample: int | None = None
    flops_per_sample: int | None = None
    compute_method: str | None = None
    latency: list[LatencyRow] = Field(default_factory=list)
    latency_as_onnx: list[LatencyRow] = Field(
        default_factory=list,
        description="the original exported to fp32 ONNX and timed on onnxruntime beside an ONNX result",
    )
    accuracy: float | None = Field(None, description="top-1 on the labelled evaluation set, when given")
    latency_compiled: list[LatencyRow] = Field(
        default_factory=list,
        description="a cuda job's torch module timed again under torch.compile (compile time apart, per row)",
    )


class Interval(BaseModel):
    low: float
    high: float


class LatencyComparison(_Open):
    batch_size: int
    device: str
    baseline: Literal["original", "original_as_onnx"] = Field(
        description="what the result was timed against: the original on its own runtime, or exported to ONNX"
    )
    baseline_runtime: str
    result_runtime: str
    like_for_like: bool = Field(description="baseline and result ran on the same runtime")
    headline: bool = Field(description="the comparison the verdict, the page and the CLI use for this batch size")
    speedup: float = Field(description="baseline median / result median: above 1, the result is faster")
    speedup_ci95: Interval
    reading: Literal["faster", "slower", "no measurable difference"]
    rounds: int = Field(description="interleaved rounds the interval resamples")
    method: str


class ArtifactLayout(_Open):
    """How a TFLite artifact's tensors are laid out against the original's (onnx2tf moves channels last)."""

    inputs: dict[str, list[int] | None] = Field(
        description="per input, the axes order from the original's layout to the artifact's ([0, 2, 3, 1]: NCHW "
        "-> NHWC), or null where it is the original's"
    )
    outputs_to_original: dict[str, list[int] | None] = Field(
        description="per output, the axes order taking the artifact's output back to the original's layout"
    )
    note: str | None = None


class CompiledPackageFigures(_Open):
    """A .pt2 result compiled ahead of time by AOTInductor (model.aoti.pt2), delivered as a second artifact."""

    device: str = Field(description="cuda or cpu: what its kernels were compiled for")
    error: str | None = Field(
        None, description="why AOTInductor could not compile the program; then no package is delivered"
    )
    compile_seconds: float | None = None
    format: Literal["aoti"] | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    how_to_load: str | None = None
    fidelity: Fidelity | None = Field(
        None, description="the package's outputs, loaded from its file, against the original's"
    )
    latency: list[LatencyRow] = Field(default_factory=list, description="the package timed on the job's device")
    artifact_id: str | None = None


class ResultFigures(ModelFigures):
    size_ratio: float | None = Field(None, description="original size / result size")
    fidelity: Fidelity
    speedup_p50: dict[str, float] = Field(
        default_factory=dict,
        description="original p50 / result p50 per batch size, where both ran on the same device",
    )
    latency_comparison: list[LatencyComparison] = Field(
        default_factory=list, description="the result against the original, timed interleaved, with an interval"
    )
    artifact_id: str | None = None
    accuracy_drop: float | None = None
    input_layout: ArtifactLayout | None = Field(
        None, description="a TFLite result: the inputs (and outputs) laid out otherwise than the original's"
    )
    aoti: CompiledPackageFigures | None = Field(
        None, description="a .pt2 result's AOTInductor package (convert to pt2 with `aoti`; on by default on cuda)"
    )


class KeptNode(_Open):
    node: str
    op_type: str
    reason: Literal["fp16_range", "sensitivity"] = Field(
        description="fp16_range: it writes or reads a value outside float16's range; sensitivity: quantized, it "
        "added the most error of its own (its outputs' error minus its inputs')"
    )
    detail: str


class SensitivityAttempt(_Open):
    attempt: int = Field(description="0: the quantization as asked; then one per retry")
    nodes_in_float: list[str]
    cosine_mean: float | None = Field(description="mean cosine to the float model on the evaluation batches")
    met: bool


class Sensitivity(_Open):
    floor: float
    floor_source: str = Field(description="constraints.min_cosine, or the setting the floor came from")
    budget: int = Field(description="retries allowed after the first attempt (SENSITIVITY_RETRIES)")
    before: float | None = Field(description="cosine of the quantization as asked")
    after: float | None = Field(description="cosine of the attempt kept (the best one)")
    met: bool
    chosen_attempt: int
    kept_in_float: list[KeptNode] = Field(description="nodes the kept attempt left in float, and why")
    attempts: list[SensitivityAttempt]
    stopped: str | None = Field(None, description="why the search ended below the floor; null when met")


class Step(_Open):
    index: int
    type: str
    label: str | None = Field(
        None, description="the step as progress named it, e.g. `quantize static` or `convert (auto)`"
    )
    auto: bool = False
    config: dict[str, Any] = Field(default_factory=dict)
    seconds: float | None = None
    format: str | None = None
    size_bytes: int | None = None
    param_count: int | None = None
    fidelity: Fidelity | None = None
    sensitivity: Sensitivity | None = Field(
        None, description="int8, int4, fp16 on ONNX: the result against its floor, the nodes kept in float to meet it"
    )


class VersionChange(BaseModel):
    before: int
    after: int


class SourceConversion(_Open):
    """A TensorFlow upload's conversion to ONNX as it loaded (workers.conversion.tensorflow)."""

    format: str = Field(description="the upload's format: keras or savedmodel")
    tools: str = Field(description="what loaded and converted it, with versions")
    fidelity: Fidelity = Field(description="the ONNX conversion against TensorFlow's outputs, on the evaluation inputs")


class Canonical(_Open):
    """What canonicalising an ONNX upload changed before the first step (workers.conversion.canonical)."""

    changed: bool = Field(description="the versions moved, or initializers / Constant weights were rewritten")
    ir_version: VersionChange
    opset: VersionChange = Field(description="the default-domain opset; brought up to 13 when below it")
    initializers_removed_from_inputs: int = Field(description="initializers that were also listed as graph inputs")
    constants_to_initializers: int = Field(description="Constant nodes whose tensors became initializers")
    shape_inference: str = Field(
        description="which inference typed the graph (symbolic (onnxruntime), onnx), or why its types were dropped"
    )
    notes: list[str] = Field(default_factory=list, description="what could not be done, and why")
    tools: list[str] = Field(default_factory=list, description="the libraries that did the work, with versions")
    fidelity: Fidelity = Field(description="the canonical model against the upload, on the evaluation inputs")
    source_conversion: SourceConversion | None = Field(
        None, description="a TensorFlow upload: its tf2onnx conversion, checked against TensorFlow"
    )


class Accuracy(_Open):
    task: Literal["classification", "regression", "embedding"]
    output: str = Field(description="the model output the figures are for")
    samples: int
    original: dict[str, float] = Field(description="top1/top5, or mae/rmse (and cosine for embeddings)")
    result: dict[str, float]
    metric: str = Field(description="what `drop` is the change of: top1, or per-sample squared error")
    drop: float = Field(description="original minus result for top1 (positive: the result is worse)")
    drop_ci95: Interval
    method: str = Field(description="how the interval was computed")


class ConstraintCheck(_Open):
    limit: float
    value: float | None
    met: bool | None = Field(description="null when it could not be checked (see reason)")
    reason: str | None = None


class Verdict(_Open):
    verdict: Literal["pass", "warn", "fail"] = Field(
        description="fail: a constraint or the fidelity floor missed; warn: met, but slower or larger than the original"
    )
    reason: str
    warnings: list[str] = Field(default_factory=list, description="what makes a met result a warning")
    checks: dict[str, ConstraintCheck] = Field(default_factory=dict)


class Machine(_Open):
    cpu: str | None = None
    cores: int | None = None
    memory_bytes: int | None = None
    gpu: str | None = None
    cuda: str | None = None
    platform: str | None = None


class Startup(_Open):
    """How the job's pipeline process started (workers.sandbox.Prestart)."""

    prestarted: bool = Field(
        description="the process was started before the job arrived, so the job did not wait for its libraries"
    )
    imports_s: float | None = Field(
        None, description="seconds the process spent importing its libraries (torch, onnxruntime, the passes)"
    )


class Reproducibility(_Open):
    seeds: dict[str, int] = Field(default_factory=dict)
    input_sha256: str | None = None
    output_sha256: str | None = None


class Perplexity(_Open):
    perplexity: float = Field(description="exp(total next-token NLL / tokens) on the evaluation text")
    ci95: Interval = Field(description="bootstrap over documents")
    documents: int
    tokens: int
    method: str


class GenerationSpeed(_Open):
    prompt_length: int
    batch_size: int
    new_tokens: int
    time_to_first_token_ms: float = Field(description="the prompt read and its first token chosen (median)")
    decode_tokens_per_s: float = Field(description="batch x new tokens / decode seconds (median)")
    kv_cache: bool = Field(description="generated on a KV cache; false: the whole sequence re-read each step")
    runtime: str


class LlmFigures(_Open):
    perplexity: Perplexity | None = Field(None, description="null without a text evaluation dataset")
    weight_memory_bytes: int = Field(description="bytes of the weight tensors as stored (packed int4 counts 4 bits)")
    generation: GenerationSpeed


class Sample(_Open):
    prompt: str
    original: str
    result: str
    identical_first_tokens: bool


class CausalLm(_Open):
    """A decoder-only language model's figures, original beside result."""

    original: LlmFigures
    result: LlmFigures
    perplexity_change: dict[str, Any] | None = Field(
        None, description="result / original perplexity - 1 and its paired bootstrap interval"
    )
    greedy_agreement: dict[str, Any] = Field(
        description="prompts whose first greedy tokens the result generates exactly as the original"
    )
    samples: list[Sample] = Field(default_factory=list, description="greedy continuations of the fixed prompts")


class Report(_Open):
    job_id: str | None = None
    attempt: int | None = Field(None, description="the attempt whose result this is")
    model_id: str
    spec: dict[str, Any]
    plan: Plan | None = Field(None, description="the steps planned at submit, which the worker ran")
    evaluation: dict[str, Any] = Field(default_factory=dict)
    original: ModelFigures
    canonical: Canonical | None = Field(None, description="an ONNX upload: what canonicalising it changed")
    steps: list[Step] = Field(default_factory=list)
    result: ResultFigures
    accuracy: Accuracy | None = Field(None, description="on the labelled evaluation set, when labels are given")
    causal_lm: CausalLm | None = Field(None, description="a decoder-only LLM: perplexity, generation speed, samples")
    constraints: Verdict
    versions: dict[str, str | None] = Field(default_factory=dict)
    machine: Machine = Field(default_factory=Machine)
    startup: Startup | None = None
    reproducibility: Reproducibility = Field(default_factory=Reproducibility)
    wall_seconds: float | None = None


class JobSummary(BaseModel):
    job_id: str
    model_id: str
    passes: list[str]
    device: str
    verdict: str
    warnings: list[str] = Field(default_factory=list)
    speedup: float | None = Field(None, description="the headline speedup over the original at the first batch size")
    speedup_reading: str | None = Field(None, description="faster, slower or no measurable difference")
    size_bytes: int | None
    size_ratio: float | None
    p50_ms: float | None = Field(description="result p50 at the first batch size")
    original_p50_ms: float | None
    cosine_mean: float | None
    accuracy: float | None = Field(description="result top-1 when labels were given")
    accuracy_drop: float | None


class PairedLatency(BaseModel):
    batch_size: int
    device: str
    base_p50_ms: float
    other_p50_ms: float
    ratio: float = Field(description="base p50 / other p50: above 1, `other` is faster")


class Comparison(BaseModel):
    base: JobSummary
    other: JobSummary
    same_model: bool
    same_machine: bool = Field(description="latencies compare fairly only on the same machine")
    latency: list[PairedLatency] = Field(description="the results' p50 paired by batch size and device")
    latency_ratio: float | None = Field(
        description="base p50 / other p50 at the first batch size and device both measured: above 1, `other` is "
        "faster; null when they share none"
    )
    notes: list[str] = Field(description="where the two jobs measured different things")
    size_ratio: float | None = Field(description="base size / other size: above 1, `other` is smaller")
