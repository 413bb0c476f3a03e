# kdcore: the README's commands.
#   make setup   .venv from uv.lock: kdcore, every bundled plugin (editable), the extras, the dev tools
#   make run     the quickstart: train (or reuse) an EDSR teacher, distil it into a Deformable-HDRNet
#                student beside the same student trained alone, print the table
#   make test    the whole test suite, tutorials included
#   make lint    ruff (lint and format) and mypy on kdcore/ and plugins/*/src
#   make bench   the benchmarks; writes BENCHMARKS.md
#   make lab     JupyterLab on the tutorials
#   make lock    re-resolve uv.lock after a change to a pyproject.toml
#   make clean   remove everything the project made (see the target)
#
# The environment is uv's (https://docs.astral.sh/uv/): pyproject.toml declares the dependencies,
# uv.lock pins the one tested set, and `uv sync` links .venv from uv's global cache (hardlinks
# when the cache and the checkout share a filesystem), so a second checkout is set up in seconds.
#
# Adding a bundled plugin: create plugins/NAME with its own pyproject.toml (dist `kdcore-NAME`,
# depending on "kdcore>=0.1"; the workspace takes in every plugins/* folder), run `make lock`
# and commit uv.lock with it. If other plugins depend on it, also list it under
# [tool.uv.sources] in the root pyproject.toml (`kdcore-NAME = { workspace = true }`).

PYTHON_BASE ?= python3.11
UV_VERSION ?= 0.13.9
# uv from PATH, else the one `make setup` installs into the user's Python
UV ?= $(or $(shell command -v uv 2>/dev/null),$(shell $(PYTHON_BASE) -m site --user-base 2>/dev/null)/bin/uv)
KDCORE_CACHE ?= $(HOME)/.cache/kdcore
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kdcore-synced
PYTEST_ARGS ?=

.PHONY: setup run test lint bench lab lock clean

setup: $(STAMP)

$(UV):
	$(PYTHON_BASE) -m pip install --user --quiet --disable-pip-version-check uv==$(UV_VERSION)

# --locked: a pyproject.toml changed without `make lock` is an error, not a silently stale .venv.
$(STAMP): uv.lock pyproject.toml $(wildcard plugins/*/pyproject.toml) | $(UV)
	@# a .venv from before uv (no uv line in pyvenv.cfg) is replaced, not patched
	@if [ -d $(VENV) ] && ! grep -q '^uv = ' $(VENV)/pyvenv.cfg 2>/dev/null; then \
		echo "replacing $(VENV) (not made by uv)"; rm -rf $(VENV); fi
	@cache=$$($(UV) cache dir) && mkdir -p "$$cache" && \
	if [ "$$(stat -c %d "$$cache")" != "$$(stat -c %d .)" ]; then \
		echo "note: the uv cache $$cache is on another filesystem: files are copied, not linked;" \
		     "set UV_CACHE_DIR to a folder on this one for a fast set-up"; fi
	@# --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (common in containers and CI) every
	@# `python -m kdcore` would otherwise recompile torch, timm and torchvision from source (~20 s)
	$(UV) sync --locked --all-packages --all-extras --compile-bytecode --python $(PYTHON_BASE)
	$(PY) -m compileall -q -j 0 kdcore plugins
	touch $@

lock: | $(UV)
	$(UV) lock --python $(PYTHON_BASE)

run: $(STAMP)
	$(VENV)/bin/kdcore run examples/quickstart-teacher.json --reuse --overwrite
	$(VENV)/bin/kdcore run examples/quickstart.json --overwrite

# --nbmake-timeout: a cell's limit guards against a hang, not a speed budget. Tutorial 02's
# distillation cell takes about 25 s on a quiet machine, yet once ran past nbmake's default 300 s
# in a fresh-clone `make test` on a loaded machine (that suite took 11 min instead of 8).
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --nbmake --nbmake-timeout=900 $(PYTEST_ARGS) tests plugins $(wildcard tutorials/*.ipynb)

lint: $(STAMP)
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

lab: $(STAMP)
	$(VENV)/bin/jupyter-lab --notebook-dir=tutorials

# Inside the checkout: .venv, run folders, benchmark runs, build and tool caches. Outside it (said
# when it runs): the teacher-output cache $(KDCORE_CACHE)/teacher-outputs (train.teacher_cache
# "disk"), nothing else there. uv's global cache is shared with other projects and kept
# (`uv cache prune` trims it). Tutorials work in temporary folders the system cleans.
clean:
	rm -rf $(VENV) runs benchmarks/results/runs benchmarks/results/smoke-data \
		build dist .pytest_cache .hypothesis .ruff_cache .mypy_cache
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' -o -name .ipynb_checkpoints \) \
		-type d -prune -exec rm -rf {} +
	@if [ -d "$(KDCORE_CACHE)/teacher-outputs" ]; then \
		echo "rm -rf $(KDCORE_CACHE)/teacher-outputs   (outside the checkout: the teacher-output cache)"; \
		rm -rf "$(KDCORE_CACHE)/teacher-outputs"; fi
