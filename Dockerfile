# Squeeze images. One file, three targets:
#   docker build --target api -t squeeze-api .          the HTTP service: no torch, no onnxruntime
#   docker build --target worker -t squeeze-worker .    a CPU worker (torch CPU wheel)
#   docker build --target worker-gpu -t squeeze-gpu .   a CUDA worker (torch's CUDA wheel from PyPI)
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 SQUEEZE_HOME=/data
WORKDIR /srv/squeeze
RUN useradd --create-home --uid 1000 squeeze && mkdir -p /data && chown squeeze /data
COPY pyproject.toml alembic.ini ./
COPY app ./app
COPY workers ./workers
COPY passes ./passes
COPY migrations ./migrations

FROM base AS api
# bubblewrap only for /readyz, which says whether jobs run isolated; the API itself runs no job.
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*
RUN pip install .
USER squeeze
EXPOSE 8000
# API_PROCESSES uvicorn processes on the port (2 by default: README, status reads).
CMD ["sh", "-c", "squeeze migrate && exec uvicorn --factory app.main:create_app --host 0.0.0.0 --port 8000 --workers ${API_PROCESSES:-2}"]

FROM base AS worker
# bubblewrap isolates each job's child (JOB_ISOLATION); it needs the container's seccomp and AppArmor
# profiles relaxed (docker-compose.yml: security_opt), or it cannot create namespaces.
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*
# torch first and pinned, from the CPU index: the default PyPI wheel is the multi-GB CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu && pip install '.[worker,formats]'
USER squeeze
ENV HF_HUB_OFFLINE=1
CMD ["squeeze", "worker", "--queues", "cpu"]

FROM base AS worker-gpu
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*
# torch's default PyPI wheel is the CUDA build (fp8, packed int4 and cuSPARSELt 2:4 kernels included);
# onnxruntime-gpu replaces onnxruntime (same module), so ONNX results of cuda jobs are timed on the GPU.
RUN pip install torch==2.13.0 && pip install '.[worker,formats]' \
    && pip uninstall -y onnxruntime && pip install '.[gpu]'
USER squeeze
ENV HF_HUB_OFFLINE=1
# One worker process per visible GPU, each with CUDA_VISIBLE_DEVICES set to its own device.
CMD ["squeeze", "worker", "--queues", "gpu", "--gpus", "all", "--name", "gpu@%h"]
