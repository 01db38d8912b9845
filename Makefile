# Two entry points: `make demo` (generate a dataset, then a short dgrpo training run on embedded
# tiny models) and `make test`.
# Both create .venv on first use and install the project with the pinned torch.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= data/demo
DEMO_RUN ?= out/demo-dgrpo

.PHONY: install demo test test-all lint bench schemas

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

demo: install
	$(VENV)/bin/longblocks generate --task multihop --length 2k --num-examples 24 --workers 2 --out $(DEMO_DIR) --overwrite
	rm -rf $(DEMO_RUN)
	$(VENV)/bin/dgrpo train configs/dgrpo.yaml --set data.path=$(DEMO_DIR) run.out_dir=$(DEMO_RUN)

test: install
	$(PY) -m pytest

test-all: install
	$(PY) -m pytest -m ''

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) bench/generate.py

schemas: install
	$(VENV)/bin/longblocks schemas --out schemas
	$(VENV)/bin/dgrpo schema --out schemas/config.schema.json
