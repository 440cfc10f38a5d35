# The README's commands. Each target does its own set-up first, so on a fresh machine with Python 3.11
# `make demo` and `make test` are all there is to it; once installed, the set-up is a no-op.
#
#   make demo              set up, then zero-shot classify examples/images/cat.png with tiny CLIP weights
#   make demo WEIGHTS=real the same with the real Hub checkpoint (needs the Hugging Face Hub)
#   make test              set up, then the default test suite (offline, a few minutes)
#   make test-slow         the slower suites (learning checks, load, browser, notebooks)
#   make test-real         tests that download real Hub weights (GitHub's real-weights job)
#   make lint              ruff check
#   make docs              the course site: mkdocs build --strict, then a check of every internal link

PYTHON ?= python3
VENV ?= .venv
WEIGHTS ?= tiny
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?=

BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# --durations: the 25 slowest tests are printed at the end, so a growing suite shows where its time goes
PYTEST := $(BIN)/python -m pytest --timeout 600 --durations 25 $(PYTEST_ARGS)
STAMP := $(VENV)/.installed
# torch is installed on its own first, at the version constraints.txt pins: an unpinned torch can pull a
# multi-GB CUDA build, and installing it first keeps the resolver from ever replacing it.
TORCH_PIN := $(shell sed -n 's/^\(torch==[^ ]*\).*/\1/p' constraints.txt)

# Gradio otherwise looks up its analytics host and the Hub on every launch.
export GRADIO_ANALYTICS_ENABLED ?= False

ifeq ($(WEIGHTS),tiny)
  DEMO_WEIGHTS := --tiny
else ifeq ($(WEIGHTS),real)
  DEMO_WEIGHTS :=
else
  $(error WEIGHTS must be 'tiny' or 'real', not '$(WEIGHTS)')
endif

.PHONY: demo test test-slow test-real lint setup docs

demo: $(STAMP)
	$(BIN)/lmt predict zero-shot-image-classification --model clip-vit-b32 $(DEMO_WEIGHTS) \
		--image examples/images/cat.png --labels "cat,dog,car"

# Tiny weights are built in code, so the tiny demo never needs the Hub; offline spares it network retries.
ifeq ($(WEIGHTS),tiny)
demo: export HF_HUB_OFFLINE ?= 1
endif

# Tests never reach the Hub: offline they fail fast instead of retrying for ~50 s.
test test-slow: export HF_HUB_OFFLINE = 1

test: $(STAMP)
	$(PYTEST) -n $(PYTEST_WORKERS) -m "not slow and not real_weights"

# "No slow tests collected" (pytest exit 5) is not a failure: the slow suites are added over time.
test-slow: $(STAMP)
	$(PYTEST) -n $(PYTEST_WORKERS) -m "slow and not real_weights" || { rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "make test-slow: no slow tests collected (pytest exit 5), nothing to run."; \
		else exit $$rc; fi; }

test-real: export LMT_REAL_WEIGHTS = 1
test-real: export HF_HUB_OFFLINE = 0
test-real: $(STAMP)
	$(PYTEST) -m real_weights || { rc=$$?; \
		if [ $$rc -eq 5 ]; then echo "make test-real: no real_weights tests collected (pytest exit 5), nothing to run."; \
		else exit $$rc; fi; }

lint: $(STAMP)
	$(BIN)/ruff check .

# NO_MKDOCS_2_WARNING: mkdocs-material prints a banner about its successor on every build.
docs: export NO_MKDOCS_2_WARNING = 1
docs: $(STAMP)
	$(BIN)/mkdocs build --strict
	$(BIN)/python docs/check_links.py build/site

setup: $(STAMP)

# Re-runs only when the dependencies change. The venv is created only if missing.
$(STAMP): pyproject.toml constraints.txt
	@test -n "$(TORCH_PIN)" || { echo "constraints.txt has no 'torch==' line" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH_PIN)"
	$(PIP) install -c constraints.txt -e ".[all]"
	touch $@
