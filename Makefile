# The two commands of the README: `make run` and `make test`. Everything else is a helper.
# Both create the virtualenv at .venv/ when missing and bring the local stack up.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test venv clean-venv

run: $(STAMP)
	@bash deploy/local/run.sh

test: $(STAMP)
	@bash deploy/local/test.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@bash deploy/local/venv.sh "$(PYTHON)" "$(VENV)"
	@touch $@

clean-venv:
	rm -rf $(VENV)

.PHONY: lint
lint: $(STAMP)  ## ruff and mypy (installs the dev extra)
	@$(VENV)/bin/python -m pip install --quiet -e '.[dev,test]'
	$(VENV)/bin/ruff check streamproc tests
	$(VENV)/bin/mypy streamproc

.PHONY: lock
lock:  ## regenerate the image's hashed locks from pyproject.toml (pip-compile; needs PyPI)
	@PYTHON="$(PYTHON)" bash deploy/lock.sh
