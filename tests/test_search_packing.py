"""`budget.gpus_per_trial: auto` (trials packed by GPU memory) and CUDA MPS, without a GPU:
fake card sizes and a fake MPS control program."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sentune import config, search, space
from sentune.errors import ResourceError
from sentune.search import driver
from sentune.search import resources as gpus
from sentune.search.resources import ModelShape, gpu_packing, trial_memory_bytes

GB = 10**9
#: Encoder shapes as `gpus.model_shape` computes them from the configs.
BERT_BASE = ModelShape(params=108_808_704, hidden_size=768, layers=12, heads=12)
MINILM = ModelShape(params=22_532_352, hidden_size=384, layers=6, heads=12)
#: Total memory as nvidia-smi reports it (MiB) for an H100 80GB, an H200 and a T4.
H100, H200, T4 = 81_559 * 2**20, 143_771 * 2**20, 15_360 * 2**20


def _pack(shape, card, batch_size=32, max_length=128, precision="bf16", **kw):
    return gpu_packing(
        shape,
        batch_size=batch_size,
        max_length=max_length,
        precision=precision,
        card_bytes=card,
        **kw,
    )


def test_a_bert_base_trial_at_batch_32_needs_a_few_gigabytes():
    bf16 = trial_memory_bytes(BERT_BASE, batch_size=32, max_length=128, precision="bf16")
    fp32 = trial_memory_bytes(BERT_BASE, batch_size=32, max_length=128, precision="fp32")
    assert 3 * GB < bf16 < 6 * GB
    assert fp32 > bf16  # fp32 activations take twice the room
    assert trial_memory_bytes(MINILM, batch_size=32, max_length=128, precision="bf16") < bf16 / 2


@pytest.mark.parametrize(
    ("shape", "card", "batch_size", "per_gpu"),
    [
        (BERT_BASE, H100, 32, 8),  # far below an 80 GB card: the cap
        (BERT_BASE, H200, 32, 8),
        (MINILM, H100, 32, 8),
        (MINILM, H200, 32, 8),
        (BERT_BASE, T4, 32, 3),
        (MINILM, T4, 32, 7),
        (BERT_BASE, H100, 128, 7),  # bigger batches: memory, not the cap, decides
        (BERT_BASE, T4, 128, 1),
    ],
)
def test_trials_per_gpu_by_card_memory(shape, card, batch_size, per_gpu):
    packing = _pack(shape, card, batch_size=batch_size)
    assert packing.per_gpu == per_gpu
    assert packing.gpus_per_trial * per_gpu <= 1  # Ray fits them on one GPU
    assert packing.gpus_per_trial > 1 / (per_gpu + 1)
    assert packing.concurrency == per_gpu


def test_packing_is_per_gpu_and_never_below_one_trial():
    assert _pack(BERT_BASE, H100, gpus=2).concurrency == 16
    huge = _pack(BERT_BASE, 2 * GB)  # does not even fit one trial: one per GPU all the same
    assert (huge.per_gpu, huge.gpus_per_trial) == (1, 1.0)
    assert _pack(MINILM, H200, max_per_gpu=4).per_gpu == 4
    assert _pack(BERT_BASE, H100, batch_size=32).gpus_per_trial == 0.125


def test_model_shape_reads_the_config(tiny_model_dir):
    shape = gpus.model_shape(str(tiny_model_dir))
    assert (shape.hidden_size, shape.layers, shape.heads) == (32, 2, 2)
    from transformers import AutoModel

    real = sum(p.numel() for p in AutoModel.from_pretrained(tiny_model_dir).parameters())
    assert 0.8 * real < shape.params <= real  # biases and LayerNorms left out


@pytest.fixture
def tiny_spec(write_tiny_space, tiny_model_dir, tiny_csv, tmp_path):
    def load(**budget):
        return space.load(write_tiny_space(tmp_path, tiny_model_dir, tiny_csv, **budget))

    return load


def test_auto_is_the_default_and_means_no_gpu_without_one(tiny_spec, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(gpus, "gpu_cards", lambda: [])
    spec = tiny_spec()
    assert spec.budget.gpus_per_trial == config.GPUS_AUTO
    budget = gpus.resolve_gpus_per_trial(spec, str(tiny_model_dir), search.SearchOptions())
    assert budget.gpus_per_trial == 0.0 and budget.concurrency == spec.budget.concurrency
    assert config.confirm_top(budget) == config.CONFIRM_TOP_CPU


def test_auto_packs_by_the_card_and_explicit_values_win(tiny_spec, tiny_model_dir, monkeypatch):
    monkeypatch.setattr(gpus, "gpu_cards", lambda: [gpus.GpuCard(H100, bf16=True)])
    # The driver decides without CUDA: a CUDA context here would hold GPU memory all search.
    monkeypatch.setattr("torch.cuda.is_bf16_supported", _no_cuda_in_the_driver)
    monkeypatch.setattr("torch.cuda.init", _no_cuda_in_the_driver)
    options = search.SearchOptions(precision="fp16")
    unset = tiny_spec(concurrency=None)
    budget = gpus.resolve_gpus_per_trial(unset, str(tiny_model_dir), options)
    assert (budget.gpus_per_trial, budget.concurrency) == (0.125, 8)
    assert config.confirm_top(budget) == config.CONFIRM_TOP_GPU
    # An explicit concurrency or gpus_per_trial is kept.
    kept = gpus.resolve_gpus_per_trial(tiny_spec(concurrency=2), str(tiny_model_dir), options)
    assert (kept.gpus_per_trial, kept.concurrency) == (0.125, 2)
    explicit = tiny_spec(gpus_per_trial=0.5)
    assert gpus.resolve_gpus_per_trial(explicit, str(tiny_model_dir), options).gpus_per_trial == 0.5
    cpu = search.SearchOptions(precision="fp16", device="cpu")
    assert gpus.resolve_gpus_per_trial(tiny_spec(), str(tiny_model_dir), cpu).gpus_per_trial == 0
    # `auto` packs as 16-bit, which it is on CUDA; fp32 takes more room.
    auto = gpus.resolve_gpus_per_trial(unset, str(tiny_model_dir), search.SearchOptions())
    assert auto.gpus_per_trial == budget.gpus_per_trial


def _no_cuda_in_the_driver(*args, **kwargs):
    raise AssertionError("the search's driver initialised CUDA")


def test_bf16_on_a_card_without_it_is_said_before_the_search(
    tiny_spec, tiny_model_dir, monkeypatch
):
    monkeypatch.setattr(gpus, "gpu_cards", lambda: [gpus.GpuCard(T4, bf16=False)])
    with pytest.raises(ResourceError, match="no bf16; use --precision fp16"):
        gpus.resolve_gpus_per_trial(
            tiny_spec(), str(tiny_model_dir), search.SearchOptions(precision="bf16")
        )
    fp16 = gpus.resolve_gpus_per_trial(
        tiny_spec(), str(tiny_model_dir), search.SearchOptions(precision="fp16")
    )
    assert fp16.gpus_per_trial == 0.125  # the tiny test model: the cap of 8 per card


def _fake_nvidia_smi(folder: Path, output: str, status: int = 0) -> None:
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\nprintf '{output}'\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_gpu_cards_come_from_nvidia_smi_without_cuda(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("torch.cuda.is_available", _no_cuda_in_the_driver)
    _fake_nvidia_smi(tmp_path, "81559, 9.0\n15360, 7.5\n")
    assert gpus.gpu_cards() == [gpus.GpuCard(H100, True), gpus.GpuCard(T4, False)]


def test_gpu_cards_ask_torch_when_nvidia_smi_cannot_say(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    # A driver too old for the compute_cap field fails the whole query.
    _fake_nvidia_smi(tmp_path, 'Field "compute_cap" is not a valid field to query.\n', 2)
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert gpus.gpu_cards() == []


def test_gpus_per_trial_takes_auto_or_a_number_only(tiny_spec):
    from sentune.errors import SpaceError

    assert tiny_spec(gpus_per_trial="auto").budget.gpus_per_trial == "auto"
    with pytest.raises(SpaceError, match="needs a number"):
        tiny_spec(gpus_per_trial="half")


def test_cli_gpus_per_trial_flag(capsys):
    from sentune import cli

    args = cli._parser().parse_args(["search", "smoke", "--gpus-per-trial", "auto", "--compile"])
    assert args.gpus_per_trial == "auto" and args.compile
    assert (
        cli._parser().parse_args(["search", "smoke", "--gpus-per-trial", "0.25"]).gpus_per_trial
        == 0.25
    )
    with pytest.raises(SystemExit) as exit_:
        cli._parser().parse_args(["search", "smoke", "--gpus-per-trial", "half"])
    assert exit_.value.code == 2
    assert "neither a number nor auto" in capsys.readouterr().err


def _fake_mps_control(folder: Path) -> Path:
    """An `nvidia-cuda-mps-control` that logs its arguments, stdin and the pipe folder."""
    log = folder / "calls.log"
    script = folder / "bin" / "nvidia-cuda-mps-control"
    script.parent.mkdir()
    script.write_text(
        "#!/bin/sh\n"
        f'echo "args=$* pipe=$CUDA_MPS_PIPE_DIRECTORY" >> {log}\n'
        f'if [ -z "$1" ]; then cat >> {log}; fi\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return log


def test_mps_starts_the_daemon_for_the_block_and_quits_it(tmp_path, monkeypatch):
    log = _fake_mps_control(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_MPS_PIPE_DIRECTORY", raising=False)
    with gpus.cuda_mps(True):
        pipe = os.environ["CUDA_MPS_PIPE_DIRECTORY"]  # what Ray's workers inherit
        assert Path(pipe).parent.is_dir()
    assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ
    assert not Path(pipe).parent.exists()
    assert log.read_text().splitlines() == [f"args=-d pipe={pipe}", f"args= pipe={pipe}", "quit"]
    with gpus.cuda_mps(False):
        assert "CUDA_MPS_PIPE_DIRECTORY" not in os.environ


def test_mps_without_its_control_program_or_on_a_cluster_is_an_error(
    tiny_spec, tmp_path, monkeypatch
):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ResourceError, match="nvidia-cuda-mps-control"):
        with gpus.cuda_mps(True):
            pass
    with pytest.raises(ResourceError, match="each node"):
        search.run(tiny_spec(), options=search.SearchOptions(mps=True, address="auto"))


# --- CPU trials: as many at once as the host's memory holds ----------------------------------

GIB = 2**30


def test_a_minilm_trial_on_long_texts_is_estimated_near_its_measured_peak():
    """Measured on a CPU (fp32, eager attention): peak RSS 11.2 GiB at batch 32 and max_length
    512, 2.3 GiB at max_length 128; the estimate must stay close enough to plan with."""
    long = trial_memory_bytes(MINILM, batch_size=32, max_length=512, precision="fp32")
    short = trial_memory_bytes(MINILM, batch_size=32, max_length=128, precision="fp32")
    assert 9 * GIB < long < 13 * GIB
    assert 1.8 * GIB < short < 3 * GIB


def _cpu_budget(tiny_spec, tiny_model_dir, memory, monkeypatch, **budget):
    monkeypatch.setattr(gpus, "host_memory_bytes", lambda: memory)
    options = search.SearchOptions(num_cpus=2)
    # One CPU a trial: two trials would run at once on the two CPUs, if memory holds them.
    spec = tiny_spec(gpus_per_trial=0, cpus_per_trial=1, **budget)
    return gpus.resolve_cpu_concurrency(spec, str(tiny_model_dir), options)


def test_cpu_trials_run_as_many_at_once_as_memory_holds(
    tiny_spec, tiny_model_dir, monkeypatch, caplog
):
    # The tiny model's trial is ~1.1 GiB by the estimate (mostly the per-process allowance).
    roomy = _cpu_budget(tiny_spec, tiny_model_dir, 64 * GIB, monkeypatch, concurrency=None)
    assert roomy.concurrency is None  # the CPUs decide, as before
    tight = _cpu_budget(tiny_spec, tiny_model_dir, 1.5 * GIB, monkeypatch, concurrency=None)
    assert tight.concurrency == 1
    assert (
        "budget.concurrency 1, not 2: each trial needs" in caplog.text
        and "lower train.batch_size" in caplog.text
    )
    caplog.clear()
    none_fit = _cpu_budget(tiny_spec, tiny_model_dir, GIB // 2, monkeypatch, concurrency=None)
    assert none_fit.concurrency == 1
    assert "may be killed for memory" in caplog.text


def test_an_explicit_concurrency_is_capped_too(tiny_spec, tiny_model_dir, monkeypatch, caplog):
    """A space's concurrency was chosen for its usual data; on long texts an out-of-memory kill
    would end the whole search."""
    capped = _cpu_budget(tiny_spec, tiny_model_dir, 1.5 * GIB, monkeypatch, concurrency=2)
    assert capped.concurrency == 1
    assert "budget.concurrency 1, not 2" in caplog.text
    kept = _cpu_budget(tiny_spec, tiny_model_dir, 64 * GIB, monkeypatch, concurrency=2)
    assert kept.concurrency == 2


def test_gpu_and_cluster_trials_are_not_capped_by_this_hosts_memory(
    tiny_spec, tiny_model_dir, monkeypatch
):
    monkeypatch.setattr(gpus, "host_memory_bytes", lambda: GIB // 2)
    gpu = tiny_spec(gpus_per_trial=1, concurrency=None)
    options = search.SearchOptions(num_cpus=2)
    assert gpus.resolve_cpu_concurrency(gpu, str(tiny_model_dir), options) == gpu.budget
    cpu = tiny_spec(gpus_per_trial=0, concurrency=None)
    cluster = search.SearchOptions(address="auto")
    assert gpus.resolve_cpu_concurrency(cpu, str(tiny_model_dir), cluster) == cpu.budget


def test_the_search_plans_its_cpu_trials_by_memory(
    tiny_spec, tiny_model_dir, monkeypatch, tmp_path
):
    """`driver._prepare` applies the cap, so the manifest and Tune get it."""
    monkeypatch.setattr(gpus, "gpu_cards", lambda: [])
    monkeypatch.setattr(gpus, "host_memory_bytes", lambda: 1.5 * GIB)
    options = search.SearchOptions(num_cpus=2, cache_dir=tmp_path)
    prepared = driver._prepare(tiny_spec(concurrency=None, cpus_per_trial=1), options)
    assert prepared.spec.budget.concurrency == 1
