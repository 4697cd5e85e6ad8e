# VirNucPro toolkit. `make test` and `make report` are all a new user needs; `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
PARAMS ?= demo
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help setup test test-fast report lab kernel clean

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  variables: PARAMS=demo|h200 (report), PYTHON=python3.11 (setup)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[all]"
	$(PY) -m ipykernel install --sys-prefix --name virnucpro --display-name "Python (virnucpro)" >/dev/null
	@touch $(STAMP)

setup: $(STAMP) ## create .venv with the package, its extras and the Jupyter kernel `virnucpro`

test: $(STAMP) ## run the whole suite: unit tests, CLI, distributed runs and every notebook (nbval)
	$(PY) -m pytest tests --nbval-lax notebooks -q

test-fast: $(STAMP) ## unit tests only (about a minute): no notebooks, no whole-command or multi-process runs
	$(PY) -m pytest tests -q -m "not distributed and not slow"

report: $(STAMP) ## demo prediction + every notebook rendered into reports/$(PARAMS)/ (HTML + markdown)
	$(VENV)/bin/virnucpro report --params $(PARAMS)

lab: $(STAMP) ## JupyterLab with the `virnucpro` kernel
	$(VENV)/bin/jupyter lab notebooks/

clean: ## remove generated runs, logs and demo reports (keeps .venv)
	rm -rf runs logs reports/demo
