"""The Celery side. torch and onnxruntime are imported lazily, inside the sandboxed child process."""
