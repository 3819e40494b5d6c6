# sentune — `make help` lists the targets.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch: on Linux x86_64 the default index's torch is the CUDA build (gigabytes
# of nvidia-* wheels), so the CPU build comes from PyTorch's CPU index; elsewhere PyPI's wheel is
# the CPU one. On a GPU host install your CUDA torch into .venv first (it is kept).
ifeq ($(shell uname -sm),Linux x86_64)
TORCH       ?= torch==2.13.0+cpu
TORCH_INDEX ?= --extra-index-url https://download.pytorch.org/whl/cpu
else
TORCH       ?= torch==2.13.0
TORCH_INDEX ?=
endif
SPACE  ?= heads
ARGS   ?=
# Test processes (pytest-xdist): the slow tests are real searches that wait on Ray as much as they
# compute, and each test file runs whole in one worker (test_cluster's nodes own fixed addresses).
TEST_WORKERS ?= 2
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install search leaderboard report dashboard export keys docs-keys test test-fast lint bench-trial bench-latency bench bench-binary gpu-check clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

install: $(STAMP) ## create .venv and install sentune with its dependencies (once)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_INDEX) "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[export,dashboard,dev,mlflow,wandb]"
	@$(BIN)/python -c "import torch; v = torch.version.cuda; \
	print('torch', torch.__version__, f'(CUDA {v} build)' if v else '(CPU build)', 'in $(VENV)')"
	touch $(STAMP)

search: $(STAMP) ## run search_spaces/$(SPACE).yaml (ARGS="--trials 4 --address auto …")
	$(BIN)/sentune search $(SPACE) $(ARGS)

leaderboard: $(STAMP) ## print and save the leaderboard of the latest finished run (RUN=<run>)
	$(BIN)/sentune leaderboard $(RUN)

report: $(STAMP) ## write analysis/<run>/report.html of the latest finished run (RUN=<run>)
	$(BIN)/sentune report $(RUN)

dashboard: $(STAMP) ## optuna-dashboard on a run's study, live (RUN=<run>, default latest; ARGS="--port 8081")
	$(BIN)/sentune dashboard $(RUN) $(ARGS)

export: $(STAMP) ## export the winner of the latest finished run (RUN=<run> ARGS="--trial ID --force")
	$(BIN)/sentune export $(RUN) $(ARGS)

keys: $(STAMP) ## list every dotted key (type, default, allowed values, meaning)
	$(BIN)/sentune keys

# docs/keys.md's table of dotted keys sits between two markers; a test keeps it equal to `sentune keys`.
docs-keys: $(STAMP) ## rewrite the table of dotted keys in docs/keys.md from config.py
	$(BIN)/python -c "import pathlib, re, sentune.config as c; p = pathlib.Path('docs/keys.md'); \
	p.write_text(re.sub(r'(<!-- keys:start -->\n).*?(\n<!-- keys:end -->)', \
	lambda m: m.group(1) + c.keys_table() + m.group(2), p.read_text(), flags=re.S))"

test: $(STAMP) ## run the test suite
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(ARGS)

test-fast: $(STAMP) ## the suite without the real searches (marked slow): the inner loop
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow" $(ARGS)

lint: $(STAMP) ## ruff check and format check
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench-trial: $(STAMP) ## trial loop vs the plain Hugging Face Trainer, same configuration
	$(BIN)/python benchmarks/trial_vs_trainer.py $(ARGS)

bench-latency: $(STAMP) ## what a trial pays to time its model; latency by encoder layers and int8
	$(BIN)/python benchmarks/latency_per_trial.py $(ARGS)

bench: $(STAMP) ## strategies vs each other and vs Trainer.hyperparameter_search (CPU default ~40 min)
	$(BIN)/sentune bench $(ARGS)

bench-binary: $(STAMP) ## make bench on the second data set: the tweets without neutral (binary)
	$(BIN)/python benchmarks/binary_tweets.py
	$(BIN)/sentune bench --dataset .cache/sentune/binary-tweets.csv $(ARGS)

# No install step: a GPU host may have no internet. Part (a) needs torch, transformers,
# accelerate, pandas and scikit-learn only; the search part needs Ray and Optuna too
# (`source .gpu/setup.sh`, see ../shared/gpu/bundle.sh), or ARGS="--no-search".
gpu-check: ## one trial (batch 32/128, fp16/bf16, eager/compiled) and a packed Ray search on BERT-base, as JSON
	PYTHONPATH=src $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) benchmarks/gpu_check.py $(ARGS)

clean: ## remove the virtualenv and caches (keeps trials/ and analysis/)
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
