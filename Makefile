# Every target runs inside ./.venv, which `make install` creates (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ../shared/data/rsscn7
export OMP_NUM_THREADS ?= 2

.PHONY: install test lint format demo bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev,geo]'
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/ruff format --check src tests benchmarks scripts

format: install
	$(VENV)/bin/ruff check --fix src tests benchmarks scripts
	$(VENV)/bin/ruff format src tests benchmarks scripts

demo: install
	DATA=$(DATA) bash scripts/demo.sh

bench: install
	$(PY) benchmarks/data_throughput.py --root $(DATA)
	$(PY) benchmarks/operator_speed.py
	$(PY) benchmarks/api_speed.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache runs
