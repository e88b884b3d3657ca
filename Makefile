# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   creates .venv on first use, installs, runs the main job (scripts/run.py)
#   make test   creates .venv on first use, installs the test extras, runs ruff and pytest
#   make test-fast   the same without the tests marked slow (pyproject.toml): minutes
# VENV and CONSTRAINTS select another environment, e.g. AlgoPerf 0.6's pinned versions:
#   make test VENV=.venv-algoperf06 CONSTRAINTS=.ci/constraints-algoperf-0.6.txt

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
CONSTRAINTS ?=
PIP_FLAGS = $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)
BIN = $(VENV)/bin

.PHONY: demo test test-fast lint format benchmark evidence package mutation algoperf-checks slurm-study clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-demo: pyproject.toml $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]' $(PIP_FLAGS)
	touch $@

$(VENV)/.installed-test: pyproject.toml $(BIN)/python $(CONSTRAINTS)
	$(BIN)/python -m pip install --quiet -e '.[test]' $(PIP_FLAGS)
	touch $@

$(VENV)/.installed-mutation: $(VENV)/.installed-test
	$(BIN)/python -m pip install --quiet -e '.[mutation]' $(PIP_FLAGS)
	touch $@

demo: $(VENV)/.installed-demo
	$(BIN)/python -m scripts.run $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

benchmark: $(VENV)/.installed-test
	$(BIN)/python -m scripts.benchmark_step

evidence: $(VENV)/.installed-demo
	$(BIN)/python -m scripts.experiments.evidence $(ARGS)

package: $(VENV)/.installed-test
	$(BIN)/python -m scripts.package_submission $(ARGS)

# Mutation testing of the core (mutmut; slow, not in CI): stages build/mutation/<module>/,
# runs each core module's fast tests on its mutants, writes docs/mutation.md.
# ARGS: `run MODULE...` or `report` (docs/contributing.md says how to read it).
mutation: $(VENV)/.installed-mutation
	$(BIN)/python -m scripts.mutation $(ARGS)

# AlgoPerf's conformance test and official runner on the submission (what CI runs).
# ALGOPERF_HOME=DIR reuses an install (DIR/venv, DIR/algoperf); else one is made in
# ../.algoperf-ci from ../shared/algoperf/. Needs only python3 (the checks run in its venv).
algoperf-checks:
	$(PYTHON) -m scripts.algoperf_checks $(ARGS)

# A small study on a real single-node SLURM started here (scripts/study/single_node_slurm.sh:
# installs munge/slurmctld/slurmd with apt-get when missing, root only; stops them on every
# exit path): AlgoPerf's runner on mock MNIST, ours and AlgoPerf's baseline, 2 studies each,
# one task requeued and resumed, scored by AlgoPerf (python -m scripts.study smoke).
# Uses the AlgoPerf install of algoperf-checks (ALGOPERF_HOME, default ../.algoperf-ci).
ALGOPERF_HOME ?= $(abspath ../.algoperf-ci)
slurm-study:
	ALGOPERF_HOME=$(ALGOPERF_HOME) bash scripts/study/single_node_slurm.sh run -- \
		$(ALGOPERF_HOME)/venv/bin/python -m scripts.study smoke $(ARGS)

clean:
	rm -rf .venv .venv-* .pytest_cache .ruff_cache .hypothesis runs build *.egg-info
