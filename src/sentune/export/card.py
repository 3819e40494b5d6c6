"""The export's text: the model card (Hub YAML header, recipe, scores, latency) and the tables
the CLI prints."""

from __future__ import annotations

import logging
from dataclasses import asdict
from typing import Any

import yaml

from sentune import config, runs
from sentune.export.common import (
    BENCHMARK_FILE,
    BOOTSTRAP_RESAMPLES,
    BOOTSTRAP_SEED,
    INTERVAL_METRICS,
    METRICS_FILE,
    ONNX_OPSET,
    PARITY_ATOL,
    PT2_FILE,
    Winner,
    base_model_id,
    macro_f1_of,
    portable_text,
)
from sentune.export.models import MODELING_FILE
from sentune.runs import Manifest, Run
from sentune.serve.onnx import (
    EXPORT_MANIFEST,
    INT8_FILE,
    ONNX_FILE,
    ONNX_INPUTS,
)
from sentune.train.encoders import LICENSES

log = logging.getLogger(__name__)


def format_benchmark(benchmark: dict[str, Any]) -> str:
    """The benchmark as a Markdown table (also readable as plain text)."""
    lines = [
        "| format | batch 1 p50 (ms) | batch 1 p95 (ms) | batch 32 (texts/s) | vs PyTorch |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in benchmark["results"].items():
        lines.append(
            f"| {name} | {row['b1_p50_ms']:.2f} | {row['b1_p95_ms']:.2f} | "
            f"{row['b32_texts_per_s']:.1f} | {row['b32_speedup_vs_pytorch']:.2f}x |"
        )
    return "\n".join(lines)


def format_scores(metrics: dict[str, Any]) -> str:
    """Validation and test scores of each format as a Markdown table."""
    lines = [
        "| format | val macro-F1 | test macro-F1 | test weighted F1 | test accuracy | val→test |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    weighted = config.metric_name(config.TEST, config.F1_WEIGHTED)
    accuracy = config.metric_name(config.TEST, config.ACCURACY)
    for name, splits in metrics["formats"].items():
        val_f1, test_f1 = macro_f1_of(splits, "validation"), macro_f1_of(splits, "test")
        test = splits["test"]
        lines.append(
            f"| {name} | {val_f1:.4f} | {test_f1:.4f} | {test[weighted]:.4f} | "
            f"{test[accuracy]:.4f} | {test_f1 - val_f1:+.4f} |"
        )
    return "\n".join(lines)


def format_intervals(metrics: dict[str, Any]) -> str:
    """The winner's and the TF-IDF floor's test scores with their 95 % intervals (Markdown)."""
    keys = [config.metric_name(config.TEST, m) for m in INTERVAL_METRICS]
    pytorch, floor = metrics["formats"]["pytorch"]["test"], metrics["floor"]

    def cell(value: float, interval: dict[str, Any]) -> str:
        return f"{value:.4f} [{interval['low']:.4f}, {interval['high']:.4f}]"

    rows = [
        ("this model (PyTorch)", pytorch, metrics["test_intervals"]),
        (
            f"TF-IDF floor (trained on the same {floor['train_size']} examples)",
            floor,
            floor["intervals"],
        ),
    ]
    lines = [
        "| model | " + " | ".join(f"{k} [95 % CI]" for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for name, scores, intervals in rows:
        lines.append(
            f"| {name} | " + " | ".join(cell(scores[k], intervals[k]) for k in keys) + " |"
        )
    return "\n".join(lines)


# --- the model card --------------------------------------------------------------------------


def model_card(
    run: Run,
    winner: Winner,
    metrics: dict[str, Any],
    benchmark: dict[str, Any],
    formats: tuple[str, ...],
) -> str:
    manifest = run.manifest
    names = metrics["labels"]
    test = metrics["formats"]["pytorch"]["test"]
    space = manifest.space
    lines = [
        "---",
        yaml.safe_dump(
            _card_metadata(run, winner, metrics, formats), sort_keys=False, allow_unicode=True
        ).rstrip(),
        "---",
        "",
        f"# Sentiment classifier — {run.path.name}, trial {winner.trial_id}",
        "",
        f"Fine-tuned with sentune from `{base_model_id(manifest)}` to classify text as "
        f"{', '.join(names)}.",
        f"Winner of the `{space.name}` search (rank {winner.rank} by best-epoch validation "
        f"macro-F1, epoch {winner.best_epoch:g}); run commit `{manifest.git_commit}`.",
        *_confirmed_lines(winner),
        "",
        "## Files",
        "",
        *_files_lines(formats),
        "",
        "## Data",
        "",
        *_data_lines(manifest),
        "",
        "## Search",
        "",
        space.description.strip(),
        "",
        f"Strategy `{manifest.strategy}`, budget: "
        + ", ".join(f"{k} {v}" for k, v in asdict(manifest.budget).items() if v is not None)
        + ".",
        "",
        "```yaml",
        portable_text(space.text).rstrip(),
        "```",
        "",
        "## Training recipe",
        "",
        "The chosen configuration and the defaults it ran with (`searched`: chosen by the "
        "search; `fixed`: set by the space; `default`: sentune's `config.py`).",
        "",
        "| key | value | from |",
        "|---|---|---|",
        *(f"| `{key}` | {_fmt(value)} | {origin} |" for key, value, origin in _recipe(run, winner)),
        "",
        "## Scores",
        "",
        "Each format scored on the validation split (used by the search to pick this trial) and "
        "on the held-out test split, which the search never saw.",
        "",
        format_scores(metrics),
        "",
        f"Test scores with 95 % bootstrap intervals ({BOOTSTRAP_RESAMPLES} resamples of the "
        f"{test['n']} test examples, seed {BOOTSTRAP_SEED}), beside the reference floor "
        f"({metrics['floor']['method']}) trained on the same training split:",
        "",
        format_intervals(metrics),
        "",
        f"Validation macro-F1 reported during the search: {winner.val_macro_f1:.4f} (training "
        "precision); the scores above are recomputed in fp32.",
        "",
        *_training_lines(metrics),
    ]
    if "int8_test_macro_f1_drop" in metrics:
        lines.append(
            "int8 quantization changes test macro-F1 by "
            f"{0.0 - metrics['int8_test_macro_f1_drop']:+.4f}."
        )
    test_precision = config.metric_name(config.TEST, config.PRECISION)
    test_recall = config.metric_name(config.TEST, config.RECALL)
    lines += [
        "",
        "Per class on the test split (PyTorch):",
        "",
        "| class | support | precision | recall |",
        "|---|---:|---:|---:|",
        *(
            f"| {n} | {test['support'][n]} | {test[f'{test_precision}/{n}']:.4f} | "
            f"{test[f'{test_recall}/{n}']:.4f} |"
            for n in names
        ),
        "",
        "Confusion matrix on the test split (rows: true, columns: predicted; "
        + ", ".join(names)
        + "):",
        "",
        "```",
        *(
            f"{n:>12} " + " ".join(f"{c:6d}" for c in row)
            for n, row in zip(names, test["confusion_matrix"], strict=True)
        ),
        "```",
        "",
        *_calibration_lines(metrics),
        "## Latency and throughput",
        "",
        f"{benchmark['cpu']} ({benchmark['cpu_count']} CPUs), {benchmark['threads']} intra-op "
        f"threads, real test texts (mean {benchmark['mean_tokens_batch1']:.1f} tokens at batch 1, "
        f"{benchmark['mean_tokens_batch32']:.1f} at batch 32), "
        f"{benchmark['warmup_calls']} warm-up calls; tokenization {benchmark['tokenization']}.",
        "",
        format_benchmark(benchmark),
        "",
        *_budget_lines(benchmark),
        "## How to use it",
        "",
        *_transformers_usage_lines(winner, formats),
        *_sentune_usage_lines(formats),
    ]
    return "\n".join(lines)


def _transformers_usage_lines(winner: Winner, formats: tuple[str, ...]) -> list[str]:
    """Loading the Hugging Face folder with transformers alone, and what it does not do as
    `sentune predict` does (cleaning, and `head_tail` truncation)."""
    if "hf" not in formats:
        return []
    n = winner.max_length
    return [
        "With transformers (sentune not needed): `trust_remote_code=True` runs this folder's "
        f"`{MODELING_FILE}` (torch and transformers only), which `auto_map` in `config.json` "
        "names.",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'classify = pipeline("text-classification", model="EXPORT_DIR", trust_remote_code=True,',
        "                    truncation=True, top_k=None)",
        'classify(["the battery died after a day", "best purchase this year"])',
        "```",
        "",
        "or",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "",
        "model = AutoModelForSequenceClassification.from_pretrained(",
        '    "EXPORT_DIR", trust_remote_code=True',
        ").eval()",
        "# trust_remote_code here too: the tokenizer reads config.json, which names the code",
        'tokenizer = AutoTokenizer.from_pretrained("EXPORT_DIR", trust_remote_code=True)',
        'batch = tokenizer(["what a day"], truncation=True, padding=True, return_tensors="pt")',
        "with torch.inference_mode():",
        "    probabilities = model(**batch).logits.softmax(-1)",
        "label = model.config.id2label[int(probabilities[0].argmax())]",
        "```",
        "",
        f"`truncation=True` cuts a longer text to the {n} tokens this model was trained on "
        "(the tokenizer's `model_max_length`), "
        + (
            "keeping its end as training did"
            if winner.truncation == "tail"
            else "keeping its start as training did"
            if winner.truncation == "head"
            else "keeping its start"
        )
        + "; without it a longer text is classified whole, which training never saw (and one "
        "longer than the encoder's positions fails). The logits are already divided by the "
        "model's `temperature` (`config.json`). `sentune predict` also cleans each text as "
        "training did (HTML tags and entities, broken encodings, runs of whitespace: "
        "`sentune.data.text.clean_text`); give transformers clean text.",
        "",
        "Where sentune is installed, `import sentune.train.model` registers the model class with "
        "transformers, and `from_pretrained` needs no `trust_remote_code`.",
        "",
        *_head_tail_lines(winner),
    ]


def _head_tail_lines(winner: Winner) -> list[str]:
    if winner.truncation != "head_tail":
        return []
    return [
        f"This model was trained on `head_tail` truncation (`sentune.data.batching`: of a text "
        f"over {winner.max_length} tokens, a quarter of the room from its start and the rest from "
        "its end), which a transformers tokenizer cannot do: `truncation=True` keeps the start "
        "only, so such texts can get other labels than from `sentune predict`. For them, use "
        "`sentune predict`, or tokenize without truncation and cut the ids with "
        f'`sentune.data.batching.truncate(ids, {winner.max_length}, "head_tail")` as it does.',
        "",
    ]


def _sentune_usage_lines(formats: tuple[str, ...]) -> list[str]:
    """`sentune predict`, on onnxruntime: the texts cleaned and cut exactly as in training."""
    if "onnx" not in formats:
        return []
    return [
        "With sentune on onnxruntime (no torch; `pip install 'sentune[export]'`), texts cleaned "
        "and cut exactly as in training:",
        "",
        "```",
        'sentune predict EXPORT_DIR "the battery died after a day" "best purchase this year"',
        "sentune predict EXPORT_DIR --file reviews.csv --column text > predictions.csv",
        "sentune predict EXPORT_DIR --file reviews.jsonl --format json   # every column kept",
        "sentune predict EXPORT_DIR --int8 ...   # the int8 model",
        "```",
        "",
        'or in Python: `sentune.serve.predict.Predictor("EXPORT_DIR").predict(texts)` (labels '
        "and probabilities).",
        "",
    ]


def _files_lines(formats: tuple[str, ...]) -> list[str]:
    described = {
        "hf": "`config.json`, `model.safetensors`, tokenizer files: the Hugging Face model",
        "onnx": f"`{ONNX_FILE}`: ONNX (opset {ONNX_OPSET}), dynamic batch and sequence axes, "
        f"inputs {', '.join(ONNX_INPUTS)}, output logits; within {PARITY_ATOL:g} of PyTorch",
        "int8": f"`{INT8_FILE}`: the ONNX model with dynamic int8 (QInt8) weight quantization",
        "pt2": f"`{PT2_FILE}`: a `torch.export` program (`torch.export.load`)",
    }
    return [f"- {described[f]}" for f in formats] + [
        f"- `{METRICS_FILE}`, `{BENCHMARK_FILE}`: scores and timings; `{EXPORT_MANIFEST}`: what "
        "`sentune predict` reads"
    ]


def _data_lines(manifest: Manifest) -> list[str]:
    cfg, stats, label_names = manifest.data.config, manifest.data.stats, manifest.data.label_names
    source = stats.get("source", {})
    where = portable_text(str(source.get("hub_id") or source.get("path") or cfg.dataset))
    lines = [
        f"Dataset `{portable_text(cfg.dataset)}` ({source.get('kind', 'unknown')}: `{where}`), "
        f"fingerprint `{manifest.data.fingerprint}`; {stats.get('rows_read', '?')} rows read.",
        "Cleaning: HTML tags and entities, broken encodings and control characters repaired or "
        f"removed; texts under {cfg.min_words} words, empty texts, duplicates and texts with "
        "conflicting labels dropped; dropped rows: "
        + ", ".join(f"{k} {v}" for k, v in stats.get("dropped", {}).items())
        + ".",
        f"Stratified split (seed {cfg.seed}; validation {cfg.val_fraction}, test "
        f"{cfg.test_fraction} of the source's train split where it has none"
        + (f"; train subsampled to {cfg.train_size}" if cfg.train_size else "")
        + (f"; validation subsampled to {cfg.val_size}" if cfg.val_size else "")
        + ").",
        "",
        "| split | examples | " + " | ".join(label_names) + " |",
        "|---|---:|" + "---:|" * len(label_names),
    ]
    for split, size in stats.get("split_sizes", {}).items():
        counts = stats.get("class_counts", {}).get(split, {})
        lines.append(
            f"| {split} | {size} | "
            + " | ".join(str(counts.get(n, "")) for n in label_names)
            + " |"
        )
    return lines


def _confirmed_lines(winner: Winner) -> list[str]:
    """The model card's account of the confirmation over seeds (none when there was none)."""
    if not winner.confirmed:
        return []
    return [
        "",
        "Confirmed over seeds: the best configurations were retrained to the full epoch budget "
        "with other `train.seed` values, and this one has the best mean validation macro-F1: "
        f"{winner.confirmed_line}."
        + (
            " The exported weights are its refit on the whole training split (below)."
            if winner.refit
            else f" The exported weights are those of seed {winner.params[runs.SEED_KEY]} "
            f"({winner.val_macro_f1:.4f})."
        ),
    ]


def _training_lines(metrics: dict[str, Any]) -> list[str]:
    """What the shipped model was trained on, with the search's figures beside."""
    refit = metrics.get("refit")
    floor_key = config.metric_name(config.TEST, config.MACRO_F1)
    against = metrics["vs_floor"]
    verdict = (
        f"beats the floor by {against['test_macro_f1_gain']:+.4f} test macro-F1"
        if against["beats_floor"]
        else f"does not beat the floor ({against['test_macro_f1_gain']:+.4f} test macro-F1)"
    ) + (" (their 95 % intervals overlap)" if against["intervals_overlap"] else "")
    if not refit:
        return [
            f"Trained on {metrics['train_size']} training examples (the search trial's "
            f"checkpoint, exported with `--no-refit` or from a search on all the data); the "
            f"floor, trained on the same examples, scores {metrics['floor'][floor_key]:.4f}: "
            f"this model {verdict}.",
            "",
        ]
    epochs = ", ".join(f"epoch {e}: {v:.4f}" for e, v in refit["val_macro_f1_by_epoch"].items())
    return [
        f"Trained on all {metrics['train_size']} training examples: the search chose this "
        f"configuration on a sample of {refit['search_train_size']} ({search_score(metrics)} "
        "there), then it was refit on the whole training "
        f"split for {refit['max_epochs']} epochs with seed {refit['seed']} "
        f"({refit['seed_rule']}), keeping the best evaluation on the same validation split "
        f"({epochs}; {refit['wall_s'] / 60:.1f} min). The floor, trained on the same "
        f"{metrics['train_size']} examples, scores {metrics['floor'][floor_key]:.4f}: this "
        f"model {verdict}.",
        "",
    ]


def search_score(metrics: dict[str, Any]) -> str:
    """The configuration's validation macro-F1 in the search: its mean over the confirmation
    seeds where there was one, else the trial's."""
    seeds = metrics.get("confirmed_val_macro_f1") or {}
    if seeds:
        mean = sum(seeds.values()) / len(seeds)
        return f"mean validation macro-F1 {mean:.4f} over {len(seeds)} seeds"
    return f"validation macro-F1 {metrics['search_val_macro_f1']:.4f}"


def _calibration_lines(metrics: dict[str, Any]) -> list[str]:
    """The temperature, ECE and NLL before and after, and the test reliability table."""
    cal = metrics.get("calibration")
    if not cal:
        return []
    lines = [
        "## Calibration",
        "",
        f"Probabilities are calibrated by temperature scaling: T = {cal['temperature']:.3f}, "
        f"fitted on the validation split; {cal['where']}. Expected calibration error "
        f"({cal['bins']} bins) and negative log-likelihood:",
        "",
        "| split | ECE before | ECE after | NLL before | NLL after |",
        "|---|---:|---:|---:|---:|",
    ]
    for split in ("validation", "test"):
        row = cal[split]
        lines.append(
            f"| {split} | {row['ece_before']:.4f} | {row['ece_after']:.4f} | "
            f"{row['nll_before']:.4f} | {row['nll_after']:.4f} |"
        )
    lines += [
        "",
        "Reliability on the test split (confidence of the predicted class against how often it "
        "is right, per bin; a calibrated model has the two equal):",
        "",
        "| confidence bin | texts | mean confidence (after) | accuracy (after) | before |",
        "|---|---:|---:|---:|---:|",
    ]
    test = cal["test"]
    for after, before in zip(test["reliability_after"], test["reliability_before"], strict=True):
        if not after["count"] and not before["count"]:
            continue
        confidence = f"{after['confidence']:.3f}" if after["count"] else "–"
        accuracy = f"{after['accuracy']:.3f}" if after["count"] else "–"
        earlier = (
            f"{before['count']} texts, {before['confidence']:.3f} / {before['accuracy']:.3f}"
            if before["count"]
            else "–"
        )
        lines.append(
            f"| {after['low']:.2f}–{after['high']:.2f} | {after['count']} | {confidence} | "
            f"{accuracy} | {earlier} |"
        )
    return [*lines, ""]


def _recipe(run: Run, winner: Winner) -> list[tuple[str, Any, str]]:
    """(dotted key, value, origin) of the trial's head and training settings, then its epochs
    and precision; origin is `searched`, `fixed`, `default`, the seed's own (the search's, or
    the confirmation's that is exported), or `inactive (…)` for a searched key the
    configuration did not use (its value is then no part of the recipe)."""
    from sentune.analysis import search_params
    from sentune.errors import SentuneError

    space = run.manifest.space
    # A searched key the winner did not use: its `when:` parents' values say why.
    unused = [key for key in space.searched if key not in winner.params]
    try:
        params = search_params(run.manifest) if unused else {}
    except SentuneError:
        params = {}
    inactive = {
        key: ", ".join(
            f"{parent} {winner.params.get(parent, 'unset')}"
            for parent, _ in (params[key].when if key in params else ())
        )
        or "not used by this configuration"
        for key in unused
    }
    rows = []
    for section in config.TUNABLE_SECTIONS:
        built = config.to_dotted(config.build_section(section, winner.params), section)
        for key, value in built.items():
            if key in inactive:
                rows.append((key, "—", f"inactive ({inactive[key]})"))
                continue
            origin = (
                "searched"
                if key in space.searched
                else ("confirmation seed" if winner.confirmed else "the search's seed")
                if key == runs.SEED_KEY
                else "fixed"
                if key in space.fixed or key in winner.params
                else "default"
            )
            rows.append((key, value, origin))
    budget = run.manifest.budget
    rows.append(
        ("epochs", f"best epoch {winner.best_epoch:g} of at most {budget.max_epochs}", "budget")
    )
    rows.append(("precision", _precision(run.manifest), "search setting"))
    return rows


def _precision(manifest: Manifest) -> str:
    """The trials' precision; `auto` resolved as the trial resolved it on the run's device."""
    chosen = manifest.settings.precision
    if chosen != "auto":
        return chosen
    if config.uses_gpus(manifest.budget):
        return "auto (fp16 or bf16 on the GPU)"
    return "auto → bf16 (native on the CPU)" if manifest.device.get("cpu_bf16") else "auto → fp32"


def _card_metadata(
    run: Run, winner: Winner, metrics: dict[str, Any], formats: tuple[str, ...]
) -> dict[str, Any]:
    """The model card's YAML header, as the Hugging Face Hub reads it."""
    manifest = run.manifest
    dataset = portable_text(manifest.data.config.dataset)
    test = metrics["formats"]["pytorch"]["test"]
    f1_key = config.metric_name(config.TEST, config.MACRO_F1)
    accuracy_key = config.metric_name(config.TEST, config.ACCURACY)
    tags = ["sentune", "sentiment-analysis", "text-classification"]
    tags += [f for f in ("onnx",) if f in formats]
    # The Hub's tag for a model whose loading runs its own code (`trust_remote_code=True`).
    tags += ["custom_code"] if "hf" in formats else []
    return {
        "license": LICENSES.get(manifest.model, "other"),
        "base_model": base_model_id(manifest),
        # transformers loads it (`pipeline(..., trust_remote_code=True)`, `modeling_sentune.py`).
        "library_name": "transformers",
        "pipeline_tag": "text-classification",
        "tags": tags,
        "model-index": [
            {
                "name": f"{run.path.name}-{winner.trial_id}",
                "results": [
                    {
                        "task": {"type": "text-classification", "name": "Sentiment analysis"},
                        "dataset": {"name": dataset, "type": dataset, "split": "test"},
                        "metrics": [
                            {
                                "type": "f1",
                                "name": "macro-F1",
                                "value": round(test[f1_key], 4),
                                "args": {"average": "macro"},
                            },
                            {
                                "type": "accuracy",
                                "name": "accuracy",
                                "value": round(test[accuracy_key], 4),
                            },
                        ],
                    }
                ],
            }
        ],
    }


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else f"`{value}`"


def _budget_lines(benchmark: dict[str, Any]) -> list[str]:
    """What the export under `--max-latency-ms` promised and measured (none without one)."""
    met = benchmark.get("budget")
    if not met:
        return []
    before = met["search_p95_ms"]
    return [
        f"Chosen as the best macro-F1 on the search's Pareto front of macro-F1 against p95 "
        f"latency within a budget of {met['max_latency_ms']:g} ms: {met['engine']} p95 "
        f"{met['p95_ms']:.2f} ms re-measured here"
        + (f" ({before:.2f} ms during the search)." if before is not None else "."),
        "",
    ]
