# Squeeze: `make run` installs and starts the service; `make test` runs every test.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
PORT ?= 8000

.PHONY: install browser bwrap examples run test test-unit test-faults test-gpu lint bench soak upload-rss search-fanout job-overhead status-load bench-llm clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[worker,formats,test]'
	touch $@

install: $(BIN)/.installed

# The report page and /docs are tested in a real headless browser: Debian's chromium and its driver,
# installed here when missing so that `make test` alone works on a fresh machine.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	echo "make test: chromium and chromedriver are missing; installing them with apt-get (browser tests)"; \
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null ) \
	  || { echo "make test: could not install them; run: apt-get install chromium chromium-driver" >&2; exit 1; }

# The README walk-through's files: a trained digits CNN (ONNX and .pt2), datasets, an MLP, a zipped MiniLM.
EXAMPLES ?= examples
examples: install
	$(BIN)/squeeze examples $(EXAMPLES)

run: install
	PORT=$(PORT) $(BIN)/squeeze serve --port $(PORT)

# The tests run every job under bubblewrap (JOB_ISOLATION=bwrap) and fail, never skip, without it.
bwrap:
	@command -v bwrap >/dev/null || { \
	  echo "bubblewrap (bwrap) is missing: the tests prove job isolation with it; installing the Debian package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; } \
	  || { echo "could not install bubblewrap: run 'apt-get install bubblewrap' as root" >&2; exit 1; }

# Everything, on the embedded default (SQLite + filesystem broker + local folder), then the integration,
# end-to-end and security suites again on PostgreSQL + Redis + S3 (moto's S3 server, started by the fixtures),
# less the e2e tests marked `numerics`: their figures do not depend on the backend, and every other e2e test
# walks the same upload -> database -> broker -> worker -> store path on it.
test: install browser bwrap
	$(BIN)/pytest tests
	SQUEEZE_TEST_BACKEND=postgres-redis-s3 $(BIN)/pytest -m 'not gpu and not numerics' tests/integration tests/e2e tests/security

test-unit: install
	$(BIN)/pytest tests/unit

# Fault injection (kills, restarts, pauses): starts its own PostgreSQL cluster and Redis, so `make test`
# runs it once, in its first line, whatever the backend.
test-faults: install bwrap
	$(BIN)/pytest tests/faults

lint: install
	$(BIN)/ruff check app workers passes tests bench migrations
	$(BIN)/ruff format --check app workers passes tests bench migrations
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.minilm

bench-llm: install
	$(BIN)/python -m bench.llm

soak: install
	$(BIN)/python -m bench.soak

upload-rss: install
	$(BIN)/python -m bench.upload_rss

job-overhead: install
	$(BIN)/python -m bench.job_overhead

search-fanout: install
	$(BIN)/python -m bench.search_fanout

status-load: install
	$(BIN)/python -m bench.status_load

# On a CUDA machine with the worker extra installed: distillation, fine-tuning and latency on the GPU.
test-gpu: install
	$(BIN)/pytest -m gpu tests/gpu -s

clean:
	rm -rf $(VENV) var
