"""Typed domain errors. Services raise them; one handler in app.main turns them into problem+json."""

from typing import Any


class SqueezeError(Exception):
    """A failure a client can act on: a stable `code`, an HTTP status and a message saying how to fix it."""

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        self.extra = extra


class NotFound(SqueezeError):
    status, code, title = 404, "not_found", "Not found"


class ValidationFailed(SqueezeError):
    status, code, title = 422, "validation_error", "The request is not valid"


class MalformedRequest(SqueezeError):
    status, code, title = 422, "malformed_request", "The request body cannot be parsed within this service's limits"


class UnsafeModelFormat(SqueezeError):
    status, code, title = 422, "unsafe_model_format", "This model format can execute code when loaded"


class UnsupportedModelFormat(SqueezeError):
    status, code, title = 422, "unsupported_model_format", "The upload is not a model format Squeeze reads"


class ImpossiblePipeline(SqueezeError):
    status, code, title = 422, "impossible_pipeline", "The passes cannot run in this order on this model"


class NeedsGpu(SqueezeError):
    status, code, title = 422, "needs_gpu", "A pass in this job runs only on a GPU worker"


class UnresolvedInputShape(SqueezeError):
    status, code, title = 422, "unresolved_input_shape", "An input has dimensions the job cannot fix"


class Conflict(SqueezeError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(SqueezeError):
    status, code, title = 413, "payload_too_large", "The upload is larger than this service accepts"


class NotReady(SqueezeError):
    status, code, title = 409, "not_ready", "Not available yet"


class Unauthorized(SqueezeError):
    status, code, title = 401, "unauthorized", "A valid API key is required"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": 'Bearer realm="squeeze"'})


class RateLimited(SqueezeError):
    status, code, title = 429, "rate_limited", "Too many requests for this API key"


class TooManyJobs(SqueezeError):
    status, code, title = 429, "too_many_jobs", "Too many queued and running jobs for this tenant"


class ModelLimitsExceeded(SqueezeError):
    status, code, title = 422, "model_limits_exceeded", "The model is larger than this service accepts"


class FormatMismatch(SqueezeError):
    status, code, title = 422, "format_mismatch", "The file's bytes do not match its claimed format"


class WebhookRefused(SqueezeError):
    status, code, title = 422, "webhook_refused", "The webhook URL is not an allowed destination"


class UnsupportedDatasetFormat(SqueezeError):
    status, code, title = 422, "unsupported_dataset_format", "The upload is not a dataset format we read"


class UnsafeDataset(SqueezeError):
    status, code, title = 422, "unsafe_dataset", "This dataset can only be read by running code it carries"


class InvalidDataset(SqueezeError):
    status, code, title = 422, "invalid_dataset", "The dataset file is malformed or inconsistent"


class DatasetMismatch(SqueezeError):
    status, code, title = 422, "dataset_mismatch", "A referenced dataset does not fit the model"
