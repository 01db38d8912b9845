# Entry points: `make demo` (generate a dataset and train dgrpo on it briefly, then a dgrpo run that
# visibly learns the toy task of dgrpo/study/toy.py and plots its reward), `make test`, `make study` (docs/results.md).
# Each creates .venv on first use and installs the project with the pinned torch.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= data/demo
DEMO_RUN ?= out/demo-dgrpo

.PHONY: install demo test test-all lint bench schemas study study-quick

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

demo: install
	$(VENV)/bin/longblocks generate --task multihop --length 2k --num-examples 24 --workers 2 --out $(DEMO_DIR) --overwrite
	rm -rf $(DEMO_RUN)
	$(VENV)/bin/dgrpo train dgrpo --set data.path=$(DEMO_DIR) run.out_dir=$(DEMO_RUN)/longblocks
	$(PY) -m dgrpo.study.demo $(DEMO_RUN)/toy

# The method comparison (docs/results.md and its plots); stages are cached under out/study.
study: install
	$(PY) -m dgrpo.study configs/study/full.yaml

# The same pipeline at the smallest scale (~1 minute): writes out/study-quick/report/results.md.
study-quick: install
	$(PY) -m dgrpo.study configs/study/quick.yaml

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
