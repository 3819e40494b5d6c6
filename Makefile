# sentune — `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch; on a GPU host install your CUDA torch into .venv first (it is kept).
TORCH  ?= torch==2.13.0
SPACE  ?= heads
ARGS   ?=
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install search leaderboard test lint bench-trial clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install sentune with its dependencies (once)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[export,dev]"
	touch $(STAMP)

search: $(STAMP) ## run search_spaces/$(SPACE).yaml (ARGS="--trials 4 --address auto …")
	$(BIN)/sentune search $(SPACE) $(ARGS)

leaderboard: $(STAMP) ## print and save the leaderboard of the latest run (RUN=trials/<run>)
	$(BIN)/sentune leaderboard $(RUN)

test: $(STAMP) ## run the test suite
	$(BIN)/python -m pytest -q $(ARGS)

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench-trial: $(STAMP) ## trial loop vs the plain Hugging Face Trainer, same configuration
	$(BIN)/python benchmarks/trial_vs_trainer.py $(ARGS)

clean: ## remove the virtualenv and caches (keeps trials/ and analysis/)
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
