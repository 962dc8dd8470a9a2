# One entry point for people and CI: `make demo` runs the main job, `make test` the checks.
# Both create the virtual environment on first use (CPU torch wheel pinned, then this project).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Where no local CPU wheel is configured for pip, take torch from the CPU-only index
# (an unpinned torch from PyPI is a CUDA build of several GB).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.installed-$(TORCH_VERSION)

.PHONY: install browser go demo test lint typecheck clean-venv

install: $(STAMP)

# '.[dev]' is everything: the core, the owner, verifier and zoo extras (pyproject.toml) and the development tools.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if $(BIN)/python -m pip install --dry-run -q --report - torch==$(TORCH_VERSION) 2>/dev/null | grep -q '%2Bcpu'; then \
	  echo "installing torch==$(TORCH_VERSION) (CPU wheel found by pip)"; \
	  $(BIN)/python -m pip install -q torch==$(TORCH_VERSION); \
	else \
	  echo "installing torch==$(TORCH_VERSION) from the CPU index"; \
	  $(BIN)/python -m pip install -q torch==$(TORCH_VERSION) --index-url $(TORCH_CPU_INDEX); \
	fi
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

demo: install
	$(BIN)/python -m pawprint demo

# lint-imports: the import contracts in pyproject.toml ([tool.importlinter]), the floor plan of the packages.
lint: install
	$(BIN)/ruff check protocol owner verifier zoo pawprint tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

# The dispute report is tested in a real headless browser (Debian's chromium); installed here where missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium (Debian package) for the report's browser test"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Checkpoints and Merkle proofs are checked against an independent implementation, Go's
# golang.org/x/mod/sumdb/note and sumdb/tlog (tests/interop/): Debian's golang-go and its source package
# golang-golang-x-mod-dev (under /usr/share/gocode/src, built offline); installed here where missing.
go:
	@{ command -v go >/dev/null 2>&1 && [ -d /usr/share/gocode/src/golang.org/x/mod/sumdb/note ]; } || { \
	  echo "installing golang-go and golang-golang-x-mod-dev (Debian packages) for the checkpoint interop test"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq golang-go \
	    golang-golang-x-mod-dev >/dev/null; }

test: install browser go lint
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
