"""GPU check: what a GPU user gets from sentune, as JSON (`make gpu-check`).

Part (a), one trial without Ray: sentune's trial loop (`run_trial`) on a randomly initialised
BERT-base encoder (BertConfig defaults: 12 layers, hidden 768) over synthetic token ids of
exactly `--max-length` tokens (no padding), at each batch size (32 and 128), precision (fp16,
bf16) and mode (eager, compiled with `train.compile`). Per run: training samples/s and tokens/s
of the last epoch (the first warms up, and compiles), peak GPU memory, and the model FLOPs
utilisation: 6 * parameters * tokens/s over the device's peak dense fp16/bf16 throughput, looked
up by device name (`unknown` when not in the table; attention's own FLOPs left out, as usual).

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
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

try:
    import sentune  # noqa: F401
except ImportError:  # a GPU host with the source checkout but no install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sentune import config  # noqa: E402
from sentune.config import TrialSettings  # noqa: E402
from sentune.data import PreparedData, Split  # noqa: E402
from sentune.errors import SentuneError  # noqa: E402
from sentune.trial import resolve_precision, run_trial  # noqa: E402

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
    compile: bool = False,
) -> dict:
    """One `run_trial` call: last epoch's throughput, peak GPU memory and MFU."""
    trial_config = {
        "train.batch_size": batch_size,
        "train.effective_batch_size": batch_size,
        "train.max_length": max_length,
        "train.learning_rate": 5e-5,
        "train.compile": compile,
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
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    peak = peak_tflops(name) if device == "cuda" else None
    achieved = 6 * params * tokens_per_s / 1e12
    return {
        "device": name,
        "precision": precision,
        "batch_size": batch_size,
        "mode": "compiled" if compile else "eager",
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
        "val_macro_f1": history[-1][config.OBJECTIVE],
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
) -> dict:
    """One real search (`search.run`) of `trials` trials, every one trained fully; what it
    took and what the hardware did meanwhile."""
    from sentune import runs, search, space

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
    name = f"search-{gpus_per_trial}".replace(".", "_")
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(text))  # JSON is YAML
    spec = space.load(path)
    started = time.time()
    options = search.SearchOptions(
        storage=work / "trials",
        cache_dir=work / "cache",
        precision=precision,
        device=device,
        dashboard=False,
        strategy="random-fifo",
        name=name,
        started_at=started,
    )
    with GpuSampler(device == "cuda") as sampler:
        run_dir = search.run(spec, options=options)
    wall = time.time() - started
    run = runs.open_run(run_dir)
    manifest = runs.read_manifest(run_dir)
    n_train = manifest.data.stats.get("split_sizes", {}).get("train", train_size)
    # Each trial trains from its first step to its last report; the window runs from the first
    # trial's first step to the last trial's end (all in seconds after `started`).
    first_steps, ends, samples, rates = [], [], 0, []
    for history in run.histories.values():
        if history.empty or config.FIRST_STEP_S not in history:
            continue
        first = float(history[config.FIRST_STEP_S].iloc[0])
        trial_start = first - float(history[config.TRIAL_SETUP_S].iloc[0])
        first_steps.append(first)
        ends.append(trial_start + float(history["time_total_s"].iloc[-1]))
        samples += n_train * int(history[config.EPOCH].max())
        rates.append(float(history[config.TRAIN_SAMPLES_PER_S].mean()))
    window = max(ends) - min(first_steps) if first_steps else 0.0
    total = samples / window if window > 0 else None
    peak = peak_tflops(torch.cuda.get_device_name()) if device == "cuda" else None
    achieved = 6 * params * total * max_length / 1e12 if total else None
    return {
        "gpus_per_trial": manifest.budget.gpus_per_trial,
        "concurrency": manifest.budget.concurrency,
        "trials": len(run.histories),
        "wall_s": wall,
        "first_step_s": min(first_steps) if first_steps else None,
        "training_window_s": window,
        "samples_per_s_total": total,
        "samples_per_s_per_trial_mean": float(np.mean(rates)) if rates else None,
        "model_tflops": achieved,
        "mfu": achieved / peak if peak and achieved else None,
        **sampler.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 on success, 2 when there is no CUDA device (and not `--device cpu`)."""
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
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "tiny": args.tiny,
        "trial": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "trial-model"
        params = build_model_folder(folder, bert)
        data = synthetic_data(folder, vocab_size=bert.vocab_size, **sizes)
        for batch_size in batch_sizes if args.trial else []:
            for precision in precisions:
                for mode in modes:
                    payload["trial"].append(
                        _trial_entry(
                            folder,
                            data,
                            args,
                            precision=precision,
                            batch_size=batch_size,
                            mode=mode,
                            epochs=epochs,
                            max_length=sizes["max_length"],
                            params=params,
                        )
                    )
        _print(payload["trial"], params=params, max_length=sizes["max_length"])
        if args.search:
            payload["search"] = _search_part(Path(tmp), bert, args, params=params)
            _print_search(payload["search"])
    if args.json:
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


def _trial_entry(folder, data, args, *, precision, batch_size, mode, epochs, max_length, params):
    """One trial's figures, or why the combination was skipped."""
    entry = {"precision": precision, "batch_size": batch_size, "mode": mode}
    try:
        resolve_precision(precision, args.device)
    except SentuneError as err:
        return {**entry, "skipped": str(err)}
    if mode == "compiled" and args.device == "cpu":
        # Measured here: a 2-layer, hidden-32 BERT took ~230 s to compile on a 2-core CPU.
        return {**entry, "skipped": "torch.compile on the CPU takes minutes; compiled runs on CUDA"}
    return run_check(
        folder,
        data,
        precision=precision,
        device=args.device,
        epochs=epochs,
        batch_size=batch_size,
        max_length=max_length,
        params=params,
        compile=mode == "compiled",
    )


def _search_part(tmp: Path, bert, args, *, params: int) -> dict:
    """The packed search and the one-trial-per-GPU search, beside each other."""
    if args.tiny:
        model_dir = tmp / "search-model"
        build_model_folder(model_dir, bert)
        dataset = str(synthetic_csv(tmp / "texts.csv", rows=400, vocab=bert.vocab_size - 5))
        train_size, trials, epochs, batch_size, max_length = 128, 2, 1, 16, 32
    else:
        model_dir = tmp / "search-model"
        tokenizer = args.tokenizer or _default_tokenizer()
        build_model_folder(model_dir, bert, tokenizer=tokenizer)
        dataset, train_size = args.dataset, args.search_train_size
        trials, epochs = args.search_trials, args.search_epochs
        batch_size, max_length = args.search_batch_size, args.max_length
    precision = "fp32" if args.tiny else args.search_precision
    layouts = {"packed": "auto", "one_per_gpu": 1.0} if args.device == "cuda" else {"packed": 0.0}
    results = {}
    for name, gpus in layouts.items():
        results[name] = search_check(
            model_dir,
            dataset,
            work=tmp / name,
            gpus_per_trial=gpus,
            trials=trials,
            epochs=epochs,
            train_size=train_size,
            batch_size=batch_size,
            max_length=max_length,
            precision=precision,
            device=args.device,
            params=params,
            cpus_per_trial=args.cpus_per_trial,
        )
    return results


def _default_tokenizer() -> Path:
    if _BUNDLED_TOKENIZER.is_dir():
        return _BUNDLED_TOKENIZER
    from sentune.model import resolve_model

    return Path(resolve_model("minilm"))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--tiny", action="store_true", help="a tiny model and data (smoke test)")
    p.add_argument("--cpu-smoke", action="store_true", help="the same as --device cpu --tiny")
    p.add_argument("--precisions", default="fp16,bf16", help="comma-separated: fp16,bf16,fp32")
    p.add_argument("--batch-sizes", default="32,128", help="comma-separated")
    p.add_argument("--modes", default="eager,compiled", help="comma-separated: eager,compiled")
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
    p.add_argument("--json", help="also write the results to this JSON file")
    return p.parse_args(argv)


def _print(rows: list[dict], *, params: int, max_length: int) -> None:
    print(f"encoder {params / 1e6:.1f} M parameters, length {max_length}")
    print(
        f"{'device':<24}{'precision':>10}{'batch':>7}{'mode':>10}{'samples/s':>11}"
        f"{'peak MiB':>10}{'TFLOPS':>9}{'MFU':>9}"
    )
    for r in rows:
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
