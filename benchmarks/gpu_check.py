"""GPU check: what a GPU user gets from sentune, as JSON (`make gpu-check`).

Part (a), one trial without Ray: sentune's trial loop (`run_trial`) on a randomly initialised
BERT-base encoder (BertConfig defaults: 12 layers, hidden 768) over synthetic token ids of
exactly `--max-length` tokens (no padding), at each batch size (32 and 128), precision (fp16,
bf16) and mode (`eager`; `compiled`: `train.compile` without CUDA graphs; `cudagraphs`:
`train.compile` with them, `train.compile_mode: reduce-overhead`, what `auto` picks on CUDA).
Per run: training samples/s and tokens/s of the last epoch (the first warms up, and
compiles), peak GPU memory, and the model FLOPs utilisation: 6 * parameters * tokens/s over the
device's peak dense fp16/bf16 throughput, looked up by device name (`unknown` when not in the
table; attention's own FLOPs left out, as usual).

Part (b), a real Ray Tune search (`search.run`, random sampler, FIFO: every trial trains the
full budget) of `--search-trials` trials of the same encoder shape with the real tokenizer on
`--dataset` (tweets), packed (`budget.gpus_per_trial: auto`, see `gpus.gpu_packing`) and
again at one trial per GPU: wall time, seconds from the search's start to its first training
step, samples/s of all trials together over the training window, MFU, and GPU utilisation
sampled while it runs (pynvml if importable, else `nvidia-smi`; the share of time a kernel ran,
not SM occupancy).

    python benchmarks/gpu_check.py --json gpu.json             # on a CUDA host (with Ray for b)
    python benchmarks/gpu_check.py --no-search                 # part (a) only: no Ray needed
    python benchmarks/gpu_check.py --no-trial                  # part (b) only
    python benchmarks/gpu_check.py --device cpu --tiny         # a tiny model on the CPU (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

#: The checkout's sources: imported from here when sentune is not installed (a GPU host), and
#: put on the search command's PYTHONPATH.
_SRC = Path(__file__).resolve().parents[1] / "src"
try:
    import sentune  # noqa: F401
except ImportError:  # a GPU host with the source checkout but no install
    sys.path.insert(0, str(_SRC))

from sentune import config  # noqa: E402
from sentune.config import TrialSettings  # noqa: E402
from sentune.data import PreparedData, Split  # noqa: E402
from sentune.errors import SentuneError  # noqa: E402
from sentune.train.device import resolve_precision  # noqa: E402
from sentune.train.trial import run_trial  # noqa: E402

#: Peak dense fp16/bf16 tensor TFLOPS by a part of the device name, most specific first.
PEAK_TFLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756),
    ("H100 NVL", 835),
    ("H100", 989),
    ("H200", 989),
    ("GH200", 989),
    ("A100", 312),
)
_LABELS = ("negative", "neutral", "positive")
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
#: The tokenizer of the search part, looked for in this order: the `.gpu/` bundle's copy of
#: the embedded MiniLM's (bert-base-uncased vocabulary), then the installed package.
_BUNDLED_TOKENIZER = Path(__file__).resolve().parents[1] / ".gpu" / "tok"
#: One trial's modes (part a): the trial settings of each.
MODES = {
    "eager": {"train.compile": False},
    "compiled": {"train.compile": True, "train.compile_mode": "default"},
    "cudagraphs": {"train.compile": True, "train.compile_mode": "reduce-overhead"},
}
#: How often GPU utilisation is sampled during a search.
SAMPLE_EVERY_S = 0.5


def peak_tflops(device_name: str) -> float | None:
    """The device's peak dense fp16/bf16 TFLOPS, or None when it is not in `PEAK_TFLOPS`."""
    for part, tflops in PEAK_TFLOPS:
        if part.lower() in device_name.lower():
            return tflops
    return None


def build_model_folder(folder: Path, bert_config, *, tokenizer: Path | None = None) -> int:
    """Save a random BertModel and a tokenizer (a copy of `tokenizer`'s files, else one over a
    synthetic vocabulary); return the encoder's parameter count."""
    from transformers import BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        for f in tokenizer.iterdir():
            if f.is_file() and f.name != "config.json":
                shutil.copy(f, folder / f.name)
    else:
        words = [f"w{i}" for i in range(bert_config.vocab_size - len(_SPECIAL))]
        (folder / "vocab.txt").write_text("\n".join(_SPECIAL + words) + "\n")
        BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(
            folder
        )
    torch.manual_seed(0)
    model = BertModel(bert_config)
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def synthetic_data(
    folder: Path, *, n_train: int, n_val: int, max_length: int, vocab_size: int, seed: int = 0
) -> PreparedData:
    """Random token ids of exactly `max_length` tokens ([CLS] … [SEP]) with random labels."""
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        body = rng.integers(len(_SPECIAL), vocab_size, size=(n, max_length - 2))
        ids = [np.concatenate(([2], row, [3])).astype(np.int32) for row in body]
        return Split(
            texts=[f"synthetic {i}" for i in range(n)],
            labels=rng.integers(0, len(_LABELS), size=n).astype(np.int64),
            input_ids=ids,
        )

    return PreparedData(
        train=split(n_train),
        validation=split(n_val),
        test=split(1),
        label_names=list(_LABELS),
        stats={"synthetic": True},
        fingerprint="synthetic",
        tokenizer=str(folder),
        pad_id=0,
    )


def synthetic_csv(path: Path, *, rows: int, vocab: int, seed: int = 0) -> Path:
    """A labelled CSV of random texts over the synthetic vocabulary (`w0` … `w{vocab-1}`)."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    texts = [
        " ".join(f"w{w}" for w in rng.integers(0, vocab, size=rng.integers(4, 20)))
        for _ in range(rows)
    ]
    labels = [_LABELS[i] for i in rng.integers(0, len(_LABELS), size=rows)]
    pd.DataFrame({"text": texts, "label": labels}).to_csv(path, index=False)
    return path


def run_check(
    folder: Path,
    data: PreparedData,
    *,
    precision: str,
    device: str,
    epochs: int,
    batch_size: int,
    max_length: int,
    params: int,
    mode: str = "eager",
) -> dict:
    """One `run_trial` call in `mode` (`MODES`): last epoch's throughput, peak GPU memory and
    MFU."""
    trial_config = {
        "train.batch_size": batch_size,
        "train.effective_batch_size": batch_size,
        "train.max_length": max_length,
        "train.learning_rate": 5e-5,
        **MODES[mode],
    }
    history: list[dict] = []
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        run_trial(
            trial_config,
            data,
            lambda metrics, _checkpoint: history.append(metrics),
            settings=TrialSettings(
                model=str(folder),
                max_epochs=epochs,
                precision=precision,
                device=device,
                checkpoint_dir=workdir,
            ),
        )
    wall = time.perf_counter() - started
    samples_per_s = history[-1][config.TRAIN_SAMPLES_PER_S]
    tokens_per_s = samples_per_s * max_length
    name = _device_name(device)
    peak = peak_tflops(name)  # None for "cpu"
    achieved = 6 * params * tokens_per_s / 1e12
    return {
        "device": name,
        "precision": precision,
        "batch_size": batch_size,
        "mode": mode,
        "samples_per_s": samples_per_s,
        "tokens_per_s": tokens_per_s,
        "peak_memory_mib": (
            torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
        ),
        "model_tflops": achieved,
        "peak_tflops": peak,
        "mfu": achieved / peak if peak else None,
        "params": params,
        "wall_s": wall,
        "val_macro_f1": history[-1][config.VAL_MACRO_F1],
    }


class GpuSampler:
    """GPU utilisation (percent of time a kernel ran) sampled in a thread while a block runs:
    pynvml if importable, else `nvidia-smi`; no samples without either (or without a GPU)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._read = self._reader() if enabled else None

    def __enter__(self) -> GpuSampler:
        if self._read is not None:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def summary(self) -> dict:
        values = self.samples
        return {
            "gpu_util_mean": float(np.mean(values)) if values else None,
            "gpu_util_max": float(np.max(values)) if values else None,
            "gpu_util_samples": len(values),
        }

    def _loop(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            value = self._read()
            if value is not None:
                self.samples.append(value)

    @staticmethod
    def _reader():
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception:  # noqa: BLE001 - no pynvml, or no driver: try nvidia-smi
            pass
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return None

        def read() -> float | None:
            out = subprocess.run(
                [smi, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            return float(out) if out else None

        return read


def search_check(
    model_dir: Path,
    dataset: str,
    *,
    work: Path,
    gpus_per_trial: float | str,
    trials: int,
    epochs: int,
    train_size: int,
    batch_size: int,
    max_length: int,
    precision: str,
    device: str,
    params: int,
    cpus_per_trial: float,
    mps: bool = False,
    log_dir: Path | None = None,
    timeout_s: float | None = None,
) -> dict:
    """One real search of `trials` trials, every one trained fully, run as a user runs it: the
    `sentune search` command in a fresh process (Ray's start, the workers' imports and the
    post-search leaderboard and report all count); what it took and what the hardware did.

    `first_step_s` is the seconds from the command's start to the first training step of any
    trial; `after_training_s` from the last trial's last report to the command's exit."""
    from sentune import runs

    budget = {
        "trials": trials,
        "max_epochs": epochs,
        "gpus_per_trial": gpus_per_trial,
        "cpus_per_trial": cpus_per_trial,
        "confirm_seeds": 0,
    }
    if gpus_per_trial == 0:
        budget["concurrency"] = 2  # CPU smoke: two at once, as packing would
    text = {
        "description": "gpu_check search",
        "model": str(model_dir),
        "data": {
            "dataset": dataset,
            "train_size": train_size,
            "val_size": max(64, train_size // 8),
        },
        "budget": budget,
        "fixed": {
            "train.batch_size": batch_size,
            "train.effective_batch_size": batch_size,
            "train.max_length": max_length,
        },
        "search": {"train.learning_rate": {"loguniform": [1e-5, 1e-4]}},
    }
    name = f"search-{gpus_per_trial}{'-mps' if mps else ''}".replace(".", "_")
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(text))  # JSON is YAML
    command = [
        sys.executable, "-m", "sentune.cli", "search", str(path),
        "--name", name, "--storage", str(work / "trials"), "--analysis", str(work / "analysis"),
        "--strategy", "random-fifo", "--precision", precision, "--device", device,
        "--no-dashboard", *(["--mps"] if mps else []),
    ]  # fmt: skip
    log_path = (log_dir or work) / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_SRC), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",  # lines as they come, for their timestamps
    }
    started = time.time()
    with GpuSampler(device == "cuda") as sampler, log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        # Each line of the command's output with the seconds since its start: where the time
        # before the first training step goes.
        copier = threading.Thread(target=_copy_timed, args=(process.stdout, log, started))
        copier.start()
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _stop_search(process)
            raise RuntimeError(f"sentune search ran past {timeout_s:.0f}s; stopped it") from None
        finally:
            copier.join(timeout=30)
    wall = time.time() - started
    if code != 0:
        tail = log_path.read_text().splitlines()[-15:]
        raise RuntimeError(f"sentune search exited {code}: " + " | ".join(tail))
    run_dir = work / "trials" / name
    run = runs.open_run(run_dir)
    manifest = runs.read_manifest(run_dir)
    n_train = manifest.data.stats.get("split_sizes", {}).get("train", train_size)
    # Each trial trains from its first step to its last report; the window runs from the first
    # trial's first step to the last trial's end (all in seconds after the command started).
    first_steps, ends, samples, rates, setups = [], [], 0, [], []
    for history in run.histories.values():
        if history.empty or config.FIRST_STEP_S not in history:
            continue
        first = float(history[config.FIRST_STEP_S].iloc[0])
        setup = float(history[config.TRIAL_SETUP_S].iloc[0])
        first_steps.append(first)
        setups.append(setup)
        ends.append(first - setup + float(history["time_total_s"].iloc[-1]))
        samples += n_train * int(history[config.EPOCH].max())
        rates.append(float(history[config.TRAIN_SAMPLES_PER_S].mean()))
    window = max(ends) - min(first_steps) if first_steps else 0.0
    total = samples / window if window > 0 else None
    peak = peak_tflops(_device_name(device))
    achieved = 6 * params * total * max_length / 1e12 if total else None
    return {
        "command": " ".join(command[1:]),
        **_start_phases(log_path, min(first_steps) if first_steps else None),
        "mps": mps,
        "gpus_per_trial": manifest.budget.gpus_per_trial,
        "concurrency": manifest.budget.concurrency,
        "trials": len(run.histories),
        "wall_s": wall,
        "first_step_s": min(first_steps) if first_steps else None,
        "trial_setup_s_mean": float(np.mean(setups)) if setups else None,
        "training_window_s": window,
        "after_training_s": wall - max(ends) if ends else None,
        "samples_per_s_total": total,
        "samples_per_s_per_trial_mean": float(np.mean(rates)) if rates else None,
        # Each trial's own training rate (evaluations and checkpoints left out), summed: what
        # the GPU does while the packed trials train side by side, without the staggered start
        # and end that `samples_per_s_total` counts.
        "samples_per_s_sum_of_trials": float(np.sum(rates)) if rates else None,
        "model_tflops": achieved,
        "mfu": achieved / peak if peak and achieved else None,
        **sampler.summary(),
    }


#: Lines of `sentune search`'s output that mark its start-up phases, by what they end.
_PHASE_LINES = {
    "data_ready_s": re.compile(r"sentune\.search\.driver: search \S+: \d+ trials"),
    "first_trial_started_s": re.compile(r"^trial \S+ started:"),
    # Printed with the first report (`search/progress.py`), so after the step itself; seconds
    # since this benchmark started the process, the interpreter's own start included.
    "first_step_seen_s": re.compile(r"^first training step "),
}


def _start_phases(log_path: Path, first_step_s: float | None) -> dict:
    """Where the time before the first training step went, from the timed output
    (`_copy_timed`): seconds from the command's start until the data was ready (imports,
    checks, tokenizing; Ray starts meanwhile), until the first trial started (the rest of Ray's
    start, Tune), until the first step was printed, and from the trial's start to its first
    step (the worker's imports, CUDA, the model, the step itself)."""
    found: dict[str, float] = {}
    for line in log_path.read_text().splitlines():
        stamp = re.match(r"\[\s*([\d.]+)s\] (.*)", line)
        if stamp is None:
            continue
        for name, pattern in _PHASE_LINES.items():
            if name not in found and pattern.search(stamp.group(2)):
                found[name] = float(stamp.group(1))
    started = found.get("first_trial_started_s")
    if started is not None and first_step_s is not None:
        found["trial_start_to_first_step_s"] = first_step_s - started
    return found


def _copy_timed(lines, log, started: float) -> None:
    for line in lines:
        log.write(f"[{time.time() - started:6.1f}s] {line}")
        log.flush()


def _stop_search(process: subprocess.Popen) -> None:
    """Stop a search that ran too long, and its Ray (whose trials hold GPU memory)."""
    import signal

    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"],
        capture_output=True,
        timeout=60,
        check=False,
    )


def _device_name(device: str) -> str:
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 on success, 2 when there is no CUDA device (and not `--device cpu`).

    The figures the issue's bar names come first (the packed search; one trial in the first
    precision, eager and compiled), so a time limit cuts only the rest; with `--json` the file
    is rewritten after every step, and a step that fails is recorded with its error."""
    args = _parse(argv)
    if args.cpu_smoke:
        args.device, args.tiny = "cpu", True
    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_check: no CUDA device visible to torch; run it on a GPU host with a CUDA "
            "build of torch, or pass --device cpu --tiny for a tiny CPU run",
            file=sys.stderr,
        )
        return 2
    from transformers import BertConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.tiny:
        bert = BertConfig(
            vocab_size=200,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
        sizes = {"n_train": 64, "n_val": 32, "max_length": 32}
        epochs, batch_sizes = 1, [16]
    else:
        bert = BertConfig()  # BERT-base: 12 layers, hidden 768, 12 heads, vocab 30522
        sizes = {"n_train": args.samples, "n_val": args.val_samples, "max_length": args.max_length}
        epochs, batch_sizes = args.epochs, [int(b) for b in args.batch_sizes.split(",")]
    precisions = ["fp32"] if args.tiny else args.precisions.split(",")
    modes = args.modes.split(",")
    payload: dict = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": _device_name(args.device),
        "tiny": args.tiny,
        "trial": [],
        "search": {},
    }

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps(payload, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "trial-model"
        params = build_model_folder(folder, bert)
        data = synthetic_data(folder, vocab_size=bert.vocab_size, **sizes)

        def trials(precision_list: list[str]) -> None:
            for precision in precision_list:
                for batch_size in batch_sizes:
                    for mode in modes:
                        payload["trial"].append(
                            _step(
                                _trial_entry,
                                folder,
                                data,
                                args,
                                precision=precision,
                                batch_size=batch_size,
                                mode=mode,
                                epochs=epochs,
                                max_length=sizes["max_length"],
                                params=params,
                                entry={"precision": precision, "batch_size": batch_size,
                                       "mode": mode},
                            )
                        )  # fmt: skip
                        save()

        def search(name: str) -> None:
            payload["search"][name] = _step(_search_one, Path(tmp), bert, args, name, params=params)
            save()

        layouts = ["packed", "one_per_gpu"] if args.device == "cuda" else ["packed"]
        if args.mps and args.device == "cuda":
            layouts.append("packed_mps")
        if args.search:
            search(layouts[0])
        if args.trial:
            trials(precisions[:1])
        for name in layouts[1:] if args.search else []:
            search(name)
        if args.trial:
            trials(precisions[1:])
        _print(payload["trial"], params=params, max_length=sizes["max_length"])
        if payload["search"]:
            _print_search(payload["search"])
    save()
    return 0


def _step(function, *args, entry: dict | None = None, **kwargs) -> dict:
    """`function(*args, **kwargs)`, or what went wrong: one failed step must not cost the
    others (a GPU session is short)."""
    import traceback

    entry = entry or {}
    try:
        return {**entry, **function(*args, **kwargs)}
    except Exception as exc:  # noqa: BLE001 - recorded in the JSON and printed
        print(f"gpu_check: {entry or function.__name__} failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)  # fmt: skip
        return {**entry, "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:]}  # fmt: skip


def _trial_entry(folder, data, args, *, precision, batch_size, mode, epochs, max_length, params):
    """One trial's figures, or why the combination was skipped."""
    try:
        resolve_precision(precision, args.device)
    except SentuneError as err:
        return {"skipped": str(err)}
    if mode != "eager" and args.device == "cpu":
        # Measured here: a 2-layer, hidden-32 BERT took ~230 s to compile on a 2-core CPU.
        return {"skipped": "torch.compile on the CPU takes minutes; compiled runs on CUDA"}
    return run_check(
        folder,
        data,
        precision=precision,
        device=args.device,
        epochs=epochs,
        batch_size=batch_size,
        max_length=max_length,
        params=params,
        mode=mode,
    )


def _search_one(tmp: Path, bert, args, layout: str, *, params: int) -> dict:
    """One search of part (b): `packed` (`gpus_per_trial: auto`), `packed_mps` (the same under
    CUDA MPS) or `one_per_gpu` (`--baseline-trials` trials at one GPU each)."""
    model_dir = tmp / "search-model"
    if args.tiny:
        if not model_dir.exists():
            build_model_folder(model_dir, bert)
        dataset = str(synthetic_csv(tmp / "texts.csv", rows=400, vocab=bert.vocab_size - 5))
        train_size, trials, epochs, batch_size, max_length = 128, 2, 1, 16, 32
    else:
        if not model_dir.exists():
            build_model_folder(model_dir, bert, tokenizer=args.tokenizer or _default_tokenizer())
        dataset, train_size = args.dataset, args.search_train_size
        trials, epochs = args.search_trials, args.search_epochs
        batch_size, max_length = args.search_batch_size, args.max_length
    if layout == "one_per_gpu":
        trials = min(trials, args.baseline_trials)
    if args.device == "cuda":
        torch.cuda.empty_cache()  # this process's part (a) must not crowd the search's trials
    return search_check(
        model_dir,
        dataset,
        work=tmp / layout,
        gpus_per_trial=1.0
        if layout == "one_per_gpu"
        else ("auto" if args.device == "cuda" else 0.0),
        trials=trials,
        epochs=epochs,
        train_size=train_size,
        batch_size=batch_size,
        max_length=max_length,
        precision="fp32" if args.tiny else args.search_precision,
        device=args.device,
        params=params,
        cpus_per_trial=args.cpus_per_trial,
        mps=layout == "packed_mps",
        log_dir=args.logs,
        timeout_s=args.search_timeout_s,
    )


def _default_tokenizer() -> Path:
    if _BUNDLED_TOKENIZER.is_dir():
        return _BUNDLED_TOKENIZER
    from sentune.train.model import resolve_model

    return Path(resolve_model("minilm"))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="a tiny model and data (smoke test)")
    p.add_argument("--cpu-smoke", action="store_true", help="the same as --device cpu --tiny")
    p.add_argument("--precisions", default="fp16,bf16", help="comma-separated: fp16,bf16,fp32")
    p.add_argument("--batch-sizes", default="32,128", help="comma-separated")
    p.add_argument(
        "--modes", default="eager,compiled,cudagraphs", help=f"comma-separated: {','.join(MODES)}"
    )
    p.add_argument("--samples", type=int, default=4096, help="training examples per epoch")
    p.add_argument("--val-samples", type=int, default=512)
    p.add_argument("--epochs", type=int, default=2, help="the last epoch is measured")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--no-trial", dest="trial", action="store_false", help="skip part (a)")
    p.add_argument("--no-search", dest="search", action="store_false", help="skip part (b)")
    p.add_argument("--dataset", default="tweets", help="the search's data")
    p.add_argument("--tokenizer", type=Path, help="tokenizer folder (default: .gpu/tok, minilm)")
    p.add_argument("--search-trials", type=int, default=8)
    p.add_argument("--search-epochs", type=int, default=2)
    p.add_argument("--search-train-size", type=int, default=8000)
    p.add_argument("--search-batch-size", type=int, default=32)
    p.add_argument("--search-precision", default="auto", choices=config.PRECISIONS)
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument(
        "--baseline-trials",
        type=int,
        default=2,
        help="trials of the one-trial-per-GPU search (they run one after another)",
    )
    p.add_argument("--mps", action="store_true", help="also the packed search under CUDA MPS")
    p.add_argument(
        "--search-timeout-s", type=float, default=300, help="stop a search that runs longer"
    )
    p.add_argument("--logs", type=Path, help="keep the searches' output in this folder")
    p.add_argument("--json", help="also write the results to this JSON file")
    return p.parse_args(argv)


def _print(rows: list[dict], *, params: int, max_length: int) -> None:
    print(f"encoder {params / 1e6:.1f} M parameters, length {max_length}")
    print(
        f"{'device':<24}{'precision':>10}{'batch':>7}{'mode':>10}{'samples/s':>11}"
        f"{'peak MiB':>10}{'TFLOPS':>9}{'MFU':>9}"
    )
    for r in rows:
        if "error" in r:
            print(f"{'':<24}{r['precision']:>10}{r['batch_size']:>7}{r['mode']:>10}  failed: "
                  f"{r['error'][:60]}")  # fmt: skip
            continue
        if "skipped" in r:
            print(f"{'':<24}{r['precision']:>10}{r['batch_size']:>7}{r['mode']:>10}  skipped: "
                  f"{r['skipped'][:60]}")  # fmt: skip
            continue
        memory = f"{r['peak_memory_mib']:.0f}" if r["peak_memory_mib"] is not None else "n/a"
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "unknown"
        print(
            f"{r['device'][:23]:<24}{r['precision']:>10}{r['batch_size']:>7}{r['mode']:>10}"
            f"{r['samples_per_s']:>11.1f}{memory:>10}{r['model_tflops']:>9.2f}{mfu:>9}"
        )


def _print_search(results: dict) -> None:
    print(
        f"\n{'search':<14}{'GPU/trial':>10}{'at once':>8}{'wall s':>8}{'1st step s':>11}"
        f"{'samples/s':>11}{'MFU':>8}{'GPU busy':>9}"
    )
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<14}failed: {r['error'][:100]}")
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        busy = f"{r['gpu_util_mean']:.0f}%" if r["gpu_util_mean"] is not None else "n/a"
        total = f"{r['samples_per_s_total']:.0f}" if r["samples_per_s_total"] else "n/a"
        first = f"{r['first_step_s']:.1f}" if r["first_step_s"] is not None else "n/a"
        print(
            f"{name:<14}{r['gpus_per_trial']:>10}{str(r['concurrency']):>8}{r['wall_s']:>8.1f}"
            f"{first:>11}{total:>11}{mfu:>8}{busy:>9}"
        )


if __name__ == "__main__":
    sys.exit(main())
