"""Typed domain errors. Services raise them; one handler in app.main turns them into problem+json."""

from typing import Any


class SqueezeError(Exception):
    """A failure a client can act on: a stable `code`, an HTTP status and a message saying how to fix it."""

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFound(SqueezeError):
    status, code, title = 404, "not_found", "Not found"


class ValidationFailed(SqueezeError):
    status, code, title = 422, "validation_error", "The request is not valid"


class UnsafeModelFormat(SqueezeError):
    status, code, title = 422, "unsafe_model_format", "This model format can execute code when loaded"


class UnsupportedModelFormat(SqueezeError):
    status, code, title = 422, "unsupported_model_format", "The upload is not a model format Squeeze reads"


class UnresolvedInputShape(SqueezeError):
    status, code, title = 422, "unresolved_input_shape", "An input has dimensions the job cannot fix"


class Conflict(SqueezeError):
    status, code, title = 409, "conflict", "Conflict"


class PayloadTooLarge(SqueezeError):
    status, code, title = 413, "payload_too_large", "The upload is larger than this service accepts"


class NotReady(SqueezeError):
    status, code, title = 409, "not_ready", "Not available yet"


class UnsupportedDatasetFormat(SqueezeError):
    status, code, title = 422, "unsupported_dataset_format", "The upload is not a dataset format we read"


class UnsafeDataset(SqueezeError):
    status, code, title = 422, "unsafe_dataset", "This dataset can only be read by running code it carries"


class InvalidDataset(SqueezeError):
    status, code, title = 422, "invalid_dataset", "The dataset file is malformed or inconsistent"


class DatasetMismatch(SqueezeError):
    status, code, title = 422, "dataset_mismatch", "A referenced dataset does not fit the model"
