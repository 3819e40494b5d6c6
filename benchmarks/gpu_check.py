"""GPU check: sentune's trial loop on a BERT-base-sized encoder, fp16 and bf16, without Ray.

Builds a randomly initialised BERT-base encoder (BertConfig defaults: 12 layers, hidden 768) and
a WordPiece tokenizer over a synthetic vocabulary in a temporary folder, makes synthetic token
ids and labels (every example exactly `--max-length` tokens, so no padding), and calls
`sentune.trial.run_trial` once per precision. Needs torch, transformers, accelerate, pandas and
scikit-learn; no Ray, no hub, no internet. Reports per precision:

- training samples/s and tokens/s of the last epoch (the first one warms up the kernels);
- peak GPU memory (`torch.cuda.max_memory_allocated`);
- model FLOPs utilisation: 6 * parameters * training tokens/s over the device's peak dense
  fp16/bf16 tensor throughput, looked up by device name (`unknown` when not in the table;
  attention's own FLOPs are left out, as usual for this estimate).

    python benchmarks/gpu_check.py                  # on a CUDA host
    python benchmarks/gpu_check.py --cpu-smoke      # a tiny model on the CPU (the tests use it)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
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


def peak_tflops(device_name: str) -> float | None:
    """The device's peak dense fp16/bf16 TFLOPS, or None when it is not in `PEAK_TFLOPS`."""
    for part, tflops in PEAK_TFLOPS:
        if part.lower() in device_name.lower():
            return tflops
    return None


def build_model_folder(folder: Path, bert_config) -> int:
    """Save a random BertModel and a tokenizer over a synthetic vocabulary; return the
    encoder's parameter count."""
    from transformers import BertModel, BertTokenizerFast

    words = [f"w{i}" for i in range(bert_config.vocab_size - len(_SPECIAL))]
    (folder / "vocab.txt").write_text("\n".join(_SPECIAL + words) + "\n")
    BertTokenizerFast(vocab=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
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
) -> dict:
    """One `run_trial` call: last epoch's throughput, peak GPU memory and MFU."""
    trial_config = {
        "train.batch_size": batch_size,
        "train.effective_batch_size": batch_size,
        "train.max_length": max_length,
        "train.learning_rate": 5e-5,
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


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 on success, 2 when there is no CUDA device (and no `--cpu-smoke`)."""
    args = _parse(argv)
    if args.cpu_smoke:
        device, precisions = "cpu", ["fp32"]
        sizes = {"n_train": 64, "n_val": 32, "max_length": 32}
        epochs, batch_size = 1, 16
    else:
        if not torch.cuda.is_available():
            print(
                "gpu_check: no CUDA device visible to torch; run it on a GPU host with a CUDA "
                "build of torch, or pass --cpu-smoke for a tiny CPU run",
                file=sys.stderr,
            )
            return 2
        device, precisions = "cuda", args.precisions.split(",")
        sizes = {"n_train": args.samples, "n_val": args.val_samples, "max_length": args.max_length}
        epochs, batch_size = args.epochs, args.batch_size
    from transformers import BertConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.cpu_smoke:
        bert = BertConfig(
            vocab_size=200,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
        )
    else:
        bert = BertConfig()  # BERT-base: 12 layers, hidden 768, 12 heads, vocab 30522
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        params = build_model_folder(folder, bert)
        data = synthetic_data(folder, vocab_size=bert.vocab_size, **sizes)
        for precision in precisions:
            try:
                resolve_precision(precision, device)
            except SentuneError as err:
                print(f"gpu_check: {precision} skipped: {err}")
                continue
            runs.append(
                run_check(
                    folder,
                    data,
                    precision=precision,
                    device=device,
                    epochs=epochs,
                    batch_size=batch_size,
                    max_length=sizes["max_length"],
                    params=params,
                )
            )
    _print(runs, params=params, batch_size=batch_size, max_length=sizes["max_length"])
    if args.json:
        payload = {"torch": torch.__version__, "cuda": torch.version.cuda, "runs": runs}
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--precisions", default="fp16,bf16", help="comma-separated: fp16,bf16,fp32")
    p.add_argument("--samples", type=int, default=4096, help="training examples per epoch")
    p.add_argument("--val-samples", type=int, default=512)
    p.add_argument("--epochs", type=int, default=2, help="the last epoch is measured")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU (for tests)")
    return p.parse_args(argv)


def _print(runs: list[dict], *, params: int, batch_size: int, max_length: int) -> None:
    print(f"encoder {params / 1e6:.1f} M parameters, batch {batch_size}, length {max_length}")
    print(
        f"{'device':<28}{'precision':>10}{'samples/s':>12}{'tokens/s':>12}"
        f"{'peak MiB':>10}{'TFLOPS':>9}{'MFU':>9}"
    )
    for r in runs:
        memory = f"{r['peak_memory_mib']:.0f}" if r["peak_memory_mib"] is not None else "n/a"
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "unknown"
        print(
            f"{r['device'][:27]:<28}{r['precision']:>10}{r['samples_per_s']:>12.1f}"
            f"{r['tokens_per_s']:>12.0f}{memory:>10}{r['model_tflops']:>9.2f}{mfu:>9}"
        )


if __name__ == "__main__":
    sys.exit(main())
