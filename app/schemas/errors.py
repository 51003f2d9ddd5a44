"""The closed catalogue of job error codes: every way a job can end in `failed` or `cancelled`. The worker
raises only these; the OpenAPI shows them as an enum, so a client can switch on them."""

from enum import StrEnum


class JobErrorCode(StrEnum):
    # The model or its data cannot go through the pipeline: the user can change something.
    unsupported_model_format = "unsupported_model_format"
    unsafe_model_format = "unsafe_model_format"
    """a model stored before its format was refused at upload (.pt2, TorchScript without isolation)"""
    unsafe_external_data = "unsafe_external_data"
    conversion_failed = "conversion_failed"
    conversion_unsupported = "conversion_unsupported"
    conversion_mismatch = "conversion_mismatch"
    dataset_mismatch = "dataset_mismatch"
    dataset_missing = "dataset_missing"
    nothing_to_quantize = "nothing_to_quantize"
    quantization_failed = "quantization_failed"
    prune_unsupported = "prune_unsupported"
    lowrank_unsupported = "lowrank_unsupported"
    distill_unsupported = "distill_unsupported"
    training_diverged = "training_diverged"
    constraints_not_met = "constraints_not_met"
    """the pipeline ran, but its result missed a constraint or the fidelity floor: the report and the artifact
    are kept (GET /v1/jobs/{id}/report says which check failed)"""
    pass_failed = "pass_failed"
    """a library refused the model in a way no narrower code names; the message says which step"""
    # Limits and the job's life.
    out_of_memory = "out_of_memory"
    timeout = "timeout"
    cancelled = "cancelled"
    crashed = "crashed"
    worker_lost = "worker_lost"
    isolation_unavailable = "isolation_unavailable"
    """JOB_ISOLATION=bwrap and this worker cannot isolate the job"""
    gpu_unavailable = "gpu_unavailable"
    """a GPU-only pass (fp8, weight-only int8/int4, 2:4 sparsity) reached a worker without a suitable GPU"""
    # Ours: a bug in the service, with the traceback in the worker's log.
    internal_error = "internal_error"
