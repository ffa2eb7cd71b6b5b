"""The trainer: shard reading and packing, the schedule, a tiny model learning real text, exact resume,
and the `corpusmill train` command.

Shards are written here in the layout of docs/token-shards.md from the bundled Wikipedia sample
(tests/data/trainer/), tokenised as bytes: BOS 256, the UTF-8 bytes, EOS 257, a vocabulary of 258.

    python tests/test_train.py make-shards DIR   # the same shards, for trying `corpusmill train` by hand
"""
from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from model import checkpoint
from model.data import PackedWindows, open_shards, read_index, write_shards
from model.train import TrainConfig, WarmupCosineSchedule, build_optimizer, train

SAMPLE = Path(__file__).parent / "data" / "trainer" / "wiki-summaries-en-500.jsonl.gz"
BOS, EOS, VOCAB = 256, 257, 258


def sample_documents() -> list[list[int]]:
    docs = []
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            docs.append([BOS, *(record["title"] + "\n" + record["text"]).encode("utf-8"), EOS])
    return docs


def make_sample_shards(folder: Path) -> Path:
    return write_shards(folder, sample_documents(), VOCAB, BOS, EOS, docs_per_shard=200)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return make_sample_shards(tmp_path_factory.mktemp("shards"))


def tiny_config(manifest: Path, output: Path, **training) -> TrainConfig:
    cfg = TrainConfig.from_dict({
        "output": str(output),
        "model": {"name": "tiny", "dim": 64, "n_layers": 2, "n_heads": 4, "multiple_of": 32},
        "data": {"manifest": str(manifest), "seq_len": 128, "val_tokens": 4096, "seed": 7},
        "optimizer": {"lr": 3e-3},
        "schedule": {"warmup_steps": 5},
        "training": {"max_steps": 40, "batch_tokens": 2048, "micro_batch_size": 8, "deterministic": True,
                     **training},
        "checkpoint": {"interval": 0, "keep": 0, "resume": "none"},
        "logging": {"interval": 1, "eval_interval": 0, "eval_batches": 4, "tensorboard": False},
    })
    return cfg


def train_losses(result: dict) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in result["history"] if "loss" in r]


# ---------------------------------------------------------------------------------------------- data


def test_written_shards_follow_the_documented_layout(manifest):
    docs = sample_documents()
    meta, shards = open_shards(manifest)
    assert meta["format"] == "megatron-mmidx-v1" and meta["tokenizer"]["vocab_size"] == VOCAB
    assert [s["prefix"] for s in meta["shards"]] == ["mixed-00000", "mixed-00001", "mixed-00002"]
    idx = (manifest.parent / "mixed-00001.idx").read_bytes()
    assert idx[:9] == b"MMIDIDX\x00\x00" and idx[17] == 8  # magic, then version (8 bytes), dtype code uint16
    lengths, offsets = read_index(manifest.parent / "mixed-00001.idx")
    assert list(lengths) == [len(d) for d in docs[200:400]]
    assert offsets[0] == 0 and offsets[1] == 2 * lengths[0]
    assert list(shards[1].tokens[: len(docs[200])]) == docs[200]


def test_windows_are_shifted_pairs_from_the_stream_and_cover_an_epoch_once(manifest):
    data = PackedWindows(manifest, seq_len=64, val_tokens=1024, seed=3)
    stream = np.concatenate([np.asarray(d) for d in sample_documents()])
    inputs, targets = data.next_batch(4)
    assert inputs.shape == (4, 64) and inputs.dtype == torch.int64
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    first = data._order[0]
    assert inputs[0].tolist() == stream[first * 64:first * 64 + 64].tolist()
    # One epoch visits each training window once, then a new order begins.
    seen = set(data._order[:4].tolist())
    while data.epoch == 0:
        data.next_batch(1)
        seen.add(int(data._order[data.cursor - 1]) if data.epoch == 0 else -1)
    assert seen - {-1} == set(range(data.n_train_windows))
    assert data.n_val_windows == 16 and data.n_train_windows + 16 == (len(stream) - 1) // 64


def test_windows_crossing_shard_boundaries_read_both_shards(tmp_path):
    docs = [[BOS, *range(10), EOS], [BOS, *range(20, 25), EOS], [BOS, 1, 2, EOS]]
    manifest = write_shards(tmp_path, docs, VOCAB, BOS, EOS, docs_per_shard=1)
    data = PackedWindows(manifest, seq_len=8, val_tokens=0, seed=0)
    stream = [t for d in docs for t in d]
    assert data.stream.read(5, 15).tolist() == stream[5:20]


def test_data_position_round_trips_and_validation_is_held_out(manifest):
    data = PackedWindows(manifest, seq_len=64, val_tokens=1024, seed=3)
    for _ in range(5):
        data.next_batch(8)
    state = data.state_dict()
    expected = data.next_batch(8)
    resumed = PackedWindows(manifest, seq_len=64, val_tokens=1024, seed=3)
    resumed.load_state_dict(state)
    assert torch.equal(resumed.next_batch(8)[0], expected[0])
    with pytest.raises(ValueError, match="seq_len"):
        PackedWindows(manifest, seq_len=32, val_tokens=1024, seed=3).load_state_dict(state)
    val = list(data.validation_batches(4, 100))
    assert len(val) == 4 and torch.equal(val[0][0], list(data.validation_batches(4, 1))[0][0])
    assert set(data._order.tolist()).isdisjoint(range(data.n_train_windows, data.n_train_windows + data.n_val_windows))


def test_ranks_take_disjoint_slices_of_the_same_global_batch(manifest):
    one = PackedWindows(manifest, seq_len=64, val_tokens=0, seed=5)
    ranks = [PackedWindows(manifest, seq_len=64, val_tokens=0, seed=5, rank=r, world_size=2) for r in (0, 1)]
    whole = one.next_batch(8)[0]
    halves = [r.next_batch(4)[0] for r in ranks]
    assert torch.equal(torch.cat(halves), whole)


# ---------------------------------------------------------------------------------------------- recipe


def test_schedule_warms_up_linearly_then_decays_to_ten_percent():
    schedule = WarmupCosineSchedule(peak=1.0, warmup=10, total=110, min_ratio=0.1)
    assert schedule.lr(0) == pytest.approx(0.1) and schedule.lr(9) == pytest.approx(1.0)
    assert schedule.lr(60) == pytest.approx(0.55)
    assert schedule.lr(110) == pytest.approx(0.1) and schedule.lr(500) == pytest.approx(0.1)


def test_adamw_is_the_papers_and_spares_the_norms(manifest, tmp_path):
    from model.llama import CONFIGS, Transformer

    model = Transformer(CONFIGS["tiny"].with_overrides(vocab_size=VOCAB))
    optimizer = build_optimizer(model, TrainConfig().optimizer, torch.device("cpu"), sharded=False)
    decay, no_decay = optimizer.param_groups
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    assert decay["betas"] == (0.9, 0.95) and decay["eps"] == 1e-8
    assert all(p.dim() == 1 for p in no_decay["params"]) and len(no_decay["params"]) == 2 * 4 + 1


def test_batch_tokens_must_split_into_micro_batches(manifest, tmp_path):
    cfg = tiny_config(manifest, tmp_path, batch_tokens=3000)
    with pytest.raises(ValueError, match="batch_tokens"):
        train(cfg)


def test_config_rejects_unknown_keys_and_loads_the_tiny_config():
    with pytest.raises(ValueError, match="unknown key"):
        TrainConfig.from_dict({"training": {"max_step": 3}})
    repo = Path(__file__).resolve().parents[1]
    cfg = TrainConfig.load(repo / "configs" / "train" / "tiny.yaml")
    assert cfg.model.name == "tiny" and cfg.data.manifest == "runs/demo/mix/manifest.json"
    assert cfg.training.batch_tokens % (cfg.training.micro_batch_size * cfg.data.seq_len) == 0
    big = TrainConfig.load(repo / "configs" / "train" / "1b-h100.yaml")
    assert big.model.name == "1B" and big.data.seq_len == 2048 and big.schedule.warmup_steps == 2000


def test_mfu_is_model_flops_per_second_over_the_peak():
    from model.metrics import MetricsLogger, PEAK_BF16_FLOPS

    assert dict(PEAK_BF16_FLOPS)["H100"] == 989e12
    logger = MetricsLogger(None, flops_per_token=6e9, device=torch.device("cpu"), world_size=2, enabled=False, peak=989e12)
    logger._since -= 2.0  # as if the interval had lasted 2 s (plus the few microseconds this test takes)
    logger.count_tokens(2 * 80_000)
    record = logger.log_train(step=1, loss=2.0, lr=1e-4, grad_norm=0.5)
    assert record["tokens_per_s"] == pytest.approx(80_000, rel=1e-3)
    assert record["mfu"] == pytest.approx(80_000 * 6e9 / (989e12 * 2), rel=1e-3)
    assert "mfu" not in MetricsLogger(None, 6e9, torch.device("cpu"), 1, enabled=False).log_train(1, 2.0, 1e-4, 0.5)


# ---------------------------------------------------------------------------------------------- training


def test_tiny_model_learns_the_sample_text(manifest, tmp_path):
    cfg = tiny_config(manifest, tmp_path, max_steps=40)
    cfg.logging.eval_interval = 40
    result = train(cfg, stream=open("/dev/null", "w"))
    losses = [loss for _, loss in train_losses(result)]
    assert len(losses) == 40 and all(math.isfinite(x) for x in losses)
    assert losses[0] > 5.0  # ln(258) = 5.55: near uniform at the start
    assert sum(losses[-5:]) / 5 < losses[0] - 2.0  # byte statistics learnt: ~3 nats/byte or better
    assert result["val_loss"] < 3.2
    saved = result["checkpoint"]
    assert (saved / "model.safetensors").is_file() and saved.name == "step-0000040"


def test_resume_continues_bit_for_bit(manifest, tmp_path):
    """Train 12 steps straight; then, from the step-6 checkpoint that run wrote, a fresh model,
    optimiser and loader continue to step 12: the same losses and weights, exactly."""
    straight = tiny_config(manifest, tmp_path / "straight", max_steps=12)
    straight.checkpoint.interval = 6
    reference = train(straight, stream=open("/dev/null", "w"))
    assert reference["checkpoint"] == tmp_path / "straight" / "checkpoints" / "step-0000012"

    resumed_cfg = tiny_config(manifest, tmp_path / "resumed", max_steps=12)
    resumed_cfg.checkpoint.resume = str(tmp_path / "straight" / "checkpoints" / "step-0000006")
    torch.manual_seed(12345)  # the RNG states must come from the checkpoint, not from here
    resumed = train(resumed_cfg, stream=open("/dev/null", "w"))

    assert train_losses(resumed) == [(s, loss) for s, loss in train_losses(reference) if s > 6]
    assert len(train_losses(resumed)) == 6
    a = load_file(tmp_path / "straight" / "checkpoints" / "step-0000012" / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "checkpoints" / "step-0000012" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # Only tensors and plain values: loadable without unpickling arbitrary objects.
    state = torch.load(tmp_path / "resumed" / "checkpoints" / "step-0000012" / "train_state.pt", weights_only=True)
    assert state["step"] == 12 and state["data"]["cursor"] == 12 * 16


def test_auto_resume_and_time_limit(manifest, tmp_path):
    cfg = tiny_config(manifest, tmp_path, max_steps=4)
    cfg.checkpoint.resume = "auto"
    assert train(cfg, stream=open("/dev/null", "w"))["step"] == 4
    cfg.training.max_steps = 6
    again = train(cfg, stream=open("/dev/null", "w"))
    assert [s for s, _ in train_losses(again)] == [5, 6]
    assert checkpoint.latest(tmp_path / "checkpoints").name == "step-0000006"
    cfg.training.max_steps, cfg.training.max_minutes = 100, 1e-6
    assert train(cfg, stream=open("/dev/null", "w"))["step"] == 6  # out of time before the first step


def test_cli_trains_and_rejects_beam_options(manifest, tmp_path, capsys):
    from pipeline.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "train" / "tiny.yaml"
    out = tmp_path / "run"
    code = main(["train", "--config", str(config), "--data", str(manifest), "--output", str(out), "--max-steps", "3",
                 "--set", "data.seq_len=64", "--set", "data.val_tokens=512", "--set", "training.micro_batch_size=4",
                 "--set", "training.batch_tokens=256", "--set", "logging.interval=1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "step       3  loss" in printed and "tok/s" in printed
    assert (out / "checkpoints" / "step-0000003" / "model.safetensors").is_file()
    assert (out / "config.yaml").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3
    assert list((out / "tensorboard").iterdir())
    assert main(["train", "--config", str(config), "--runner", "DirectRunner"]) == 2
    assert "takes no pipeline options" in capsys.readouterr().err


def test_fsdp2_on_two_cpu_ranks_resumes_a_one_process_run_and_trains_like_it(manifest, tmp_path):
    """The multi-GPU path (torchrun, FSDP2, each rank half of every batch), run as two CPU processes
    (gloo), resumes a one-process run's step-3 checkpoint and continues to the same losses and weights
    as that run (equal to rounding: two ranks sum the gradients in another order)."""
    cfg = tiny_config(manifest, tmp_path / "single", max_steps=6)
    cfg.checkpoint.interval = 3
    single = train_losses(train(cfg, stream=open("/dev/null", "w")))

    raw = asdict(cfg)
    raw["model"] = {"name": "tiny", **raw["model"]["overrides"]}
    (tmp_path / "fsdp.yaml").write_text(yaml.safe_dump(raw))
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "pipeline.cli", "train", "--config", str(tmp_path / "fsdp.yaml"), "--device", "cpu",
               "--output", str(tmp_path / "fsdp"), "--resume", str(tmp_path / "single" / "checkpoints" / "step-0000003")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resumed from" in done.stdout and "2,048 tokens/step = 8 x 128 x 2 ranks x 1 accumulation" in done.stdout

    records = [json.loads(line) for line in (tmp_path / "fsdp" / "metrics.jsonl").read_text().splitlines()]
    sharded = [(r["step"], r["loss"]) for r in records if "loss" in r]
    assert [s for s, _ in sharded] == [4, 5, 6]
    assert [loss for _, loss in sharded] == pytest.approx([loss for s, loss in single if s > 3], rel=1e-5)
    ours = load_file(tmp_path / "fsdp" / "checkpoints" / "step-0000006" / "model.safetensors")
    reference = load_file(tmp_path / "single" / "checkpoints" / "step-0000006" / "model.safetensors")
    assert ours.keys() == reference.keys()
    for name in reference:  # gathered from the shards by rank 0: whole tensors, same names
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_compiled_training_on_gpu_learns(manifest, tmp_path):
    cfg = tiny_config(manifest, tmp_path, max_steps=30, device="cuda", compile=True, activation_checkpointing=True,
                      deterministic=False)
    losses = [loss for _, loss in train_losses(train(cfg, stream=open("/dev/null", "w")))]
    assert losses[-1] < losses[0] - 1.5


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "make-shards":
        sys.exit("usage: python tests/test_train.py make-shards DIR")
    print(make_sample_shards(Path(sys.argv[2])))
