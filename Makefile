# kdcore: the README's commands.
#   make setup   create .venv with kdcore, the bundled plugins (editable) and the dev tools
#   make run     the quickstart: train a teacher, distil a student, print the table
#   make test    the whole test suite, tutorials included
#   make bench   the benchmarks; writes BENCHMARKS.md
#   make lab     JupyterLab on the tutorials
#
# The third-party packages (about 6 GB, torch included) live in an environment cached outside the
# checkout, keyed by the hash of constraints.txt, and are built from nothing where none exists;
# .venv itself is small: it sees that environment through a .pth file and holds kdcore and the
# plugins as editable installs.

PYTHON_BASE ?= python3.11
KDCORE_CACHE ?= $(HOME)/.cache/kdcore
DEPS_HASH := $(shell sha256sum constraints.txt | cut -c1-16)
DEPS_ENV := $(KDCORE_CACHE)/deps-$(DEPS_HASH)
VENV := .venv
PY := $(VENV)/bin/python
PLUGINS := plugins/hdrnet plugins/deformable-hdrnet plugins/reldiff plugins/featmatch plugins/spandrel
EDITABLE := -e . $(foreach p,$(wildcard $(PLUGINS)),-e $(p))
STAMP := $(VENV)/.kdcore-setup-$(DEPS_HASH)
PYTEST_ARGS ?=

.PHONY: setup run test bench lab clean

setup: $(STAMP)

# No file prerequisite: the hash of constraints.txt is in the path, and a fresh clone's newer file
# times must not rebuild an environment that other checkouts share.
$(DEPS_ENV)/.complete:
	@echo "building the dependency environment $(DEPS_ENV) (about 2 minutes, 6 GB)"
	rm -rf $(DEPS_ENV).tmp && mkdir -p $(KDCORE_CACHE)
	$(PYTHON_BASE) -m venv $(DEPS_ENV).tmp
	# installed at its final path so that its scripts point there
	rm -rf $(DEPS_ENV) && mv $(DEPS_ENV).tmp $(DEPS_ENV)
	$(DEPS_ENV)/bin/python -m pip install -q --disable-pip-version-check -r constraints.txt -c constraints.txt
	touch $@

$(STAMP): $(DEPS_ENV)/.complete pyproject.toml $(wildcard plugins/*/pyproject.toml)

	$(PYTHON_BASE) -m venv $(VENV)
	$(PY) -c "import sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()['purelib'], '_kdcore_deps.pth').write_text('$(abspath $(DEPS_ENV))/lib/python3.11/site-packages\n')"
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt setuptools
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation $(EDITABLE)
	$(PY) -m pip check >/dev/null || $(PY) -m pip check
	touch $@

run: $(STAMP)
	$(VENV)/bin/kdcore run examples/quickstart-teacher.json --overwrite
	$(VENV)/bin/kdcore run examples/quickstart.json --overwrite

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --nbmake $(PYTEST_ARGS) tests plugins $(wildcard tutorials/*.ipynb)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

lab: $(STAMP)
	$(PY) -m jupyterlab --notebook-dir=tutorials

clean:
	rm -rf $(VENV) runs
