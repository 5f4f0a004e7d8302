# The Makefile only creates .venv, installs, and calls the `mlops` console script.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# PROFILE=scale: Prefect and MLflow on PostgreSQL, CT's candidate search on Dask (docs/scaling.md).
PROFILE ?=
ifneq ($(PROFILE),)
export MLOPS_PROFILE := $(PROFILE)
endif

.PHONY: install demo test up down status hooks clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/mlops demo

test: install
	$(BIN)/mlops test

up: install
	$(BIN)/mlops up

down: install
	$(BIN)/mlops down

status: install
	$(BIN)/mlops status

hooks: install
	$(BIN)/mlops hooks

clean:
	-$(BIN)/mlops down
	rm -rf .mlops
