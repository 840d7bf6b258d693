# The README's two commands. Each creates its venvs on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# verl pins transformers to its own range, below what .venv resolves, so the verl and SkyRL tests run in a
# second venv (docs/integrations.md, "Supported versions").
VERL_VENV ?= .venv-verl
VERL_PY := $(VERL_VENV)/bin/python
# vLLM's CPU build pins its own torch and transformers: tests/test_vllm.py serves the tiny model from a third
# venv (scripts/vllm_env.sh; a second run returns at once).
VLLM_VENV ?= .venv-vllm

.PHONY: demo test test-main test-verl verl-env vllm-env easyr1-check lint bench clean

$(VENV)/.demo-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[render,plot]"
	touch $@

$(VENV)/.dev-installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@ $(VENV)/.demo-installed

# The verl venv resolves the torch stack .venv holds: hard links to it save about 5 GB (scripts/seed_venv.py).
$(VERL_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VERL_VENV)
	$(PYTHON) scripts/seed_venv.py $(VENV) $(VERL_VENV)
	$(VERL_PY) -m pip install -q --upgrade pip
	$(VERL_PY) -m pip install -q -e ".[train,render,test,verl,skyrl]"
	touch $@

demo: $(VENV)/.demo-installed
	$(VENV)/bin/tvr-gym demo

verl-env: $(VERL_VENV)/.installed

vllm-env:
	bash scripts/vllm_env.sh $(VLLM_VENV)

test: test-main test-verl

test-main: $(VENV)/.dev-installed vllm-env
	$(PY) -m ruff check .
	TVR_GYM_VLLM_PYTHON=$(abspath $(VLLM_VENV))/bin/python $(PY) -m pytest -n 2 --ignore=tests/verl

test-verl: $(VERL_VENV)/.installed
	$(VERL_PY) -m pytest -n 2 tests/verl

# EasyR1 is not on the package index: EASYR1 is a git work tree of its source (docs/integrations.md).
easyr1-check:
	@test -n "$(EASYR1)" || { echo "usage: make easyr1-check EASYR1=path/to/EasyR1 (a git work tree)"; exit 2; }
	bash scripts/easyr1_check.sh "$(EASYR1)"

lint: $(VENV)/.dev-installed
	$(PY) -m ruff check .

bench: $(VENV)/.dev-installed
	$(VENV)/bin/tvr-gym bench

clean:
	rm -rf $(VENV) $(VERL_VENV) $(VLLM_VENV) build dist *.egg-info
