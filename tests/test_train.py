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
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from model import checkpoint
from model.data import PackedWindows, open_shards, write_shards
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
    assert list(shards[1].lengths) == [len(d) for d in docs[200:400]]
    assert shards[1].pointers[0] == 0 and shards[1].pointers[1] == 2 * shards[1].lengths[0]
    assert list(shards[1].tokens[: len(docs[200])]) == docs[200] and shards[1][1].tolist() == docs[201]


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
    optimizer = build_optimizer(model, TrainConfig().optimizer, torch.device("cpu"))
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
    # The paper's recipe (Table 2 and section 2.3) for its four sizes.
    for name, lr in {"7B": 3e-4, "13B": 3e-4, "33B": 1.5e-4, "65B": 1.5e-4}.items():
        paper = TrainConfig.load(repo / "configs" / "train" / f"{name.lower()}.yaml")
        assert paper.model.name == name and paper.optimizer.lr == lr
        assert (paper.data.seq_len, paper.schedule.warmup_steps, paper.training.batch_tokens) == (2048, 2000, 4 * 2**20)
        assert (paper.optimizer.weight_decay, paper.optimizer.grad_clip, paper.schedule.min_lr_ratio) == (0.1, 1.0, 0.1)
        assert paper.training.gradient_sync == "every_micro_step"


def test_mfu_is_model_flops_per_second_over_the_peak():
    from model.metrics import MetricsLogger, PEAK_BF16_FLOPS

    assert dict(PEAK_BF16_FLOPS)["H100"] == 989e12
    now = [100.0]
    logger = MetricsLogger(None, flops_per_token=6e9, device=torch.device("cpu"), world_size=2, enabled=False,
                           peak=989e12, clock=lambda: now[0])
    now[0] += 2.0  # a 2 s interval on the logger's clock, in which both ranks together processed 160,000 tokens
    logger.count_tokens(2 * 80_000)
    record = logger.log_train(step=1, loss=2.0, lr=1e-4, grad_norm=0.5)
    assert record["tokens_per_s"] == 80_000  # 160,000 tokens / 2 s, over all ranks
    # 80,000 tok/s x 6 GFLOP/token = 480 TFLOP/s against 2 GPUs x 989 TFLOP/s: 24.3 %
    assert record["mfu"] == pytest.approx(0.242669, abs=1e-6)
    now[0] += 0.5  # the clock restarts at each log line: the next interval is 0.5 s, not 2.5 s
    logger.count_tokens(1000)
    assert logger.log_train(step=2, loss=2.0, lr=1e-4, grad_norm=0.5)["tokens_per_s"] == 2000
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
    assert (saved / ".metadata").is_file() and saved.name == "step-0000040"


def test_resume_continues_bit_for_bit(manifest, tmp_path):
    """Train 12 steps straight; then, from the step-6 checkpoint that run wrote, a fresh model,
    optimiser and loader continue to step 12: the same losses and weights, exactly."""
    straight = tiny_config(manifest, tmp_path / "straight", max_steps=12)
    straight.checkpoint.interval = 6
    straight.checkpoint.async_save = True  # written in the background: must hold the state of its step
    reference = train(straight, stream=open("/dev/null", "w"))
    assert reference["checkpoint"] == tmp_path / "straight" / "checkpoints" / "step-0000012"

    resumed_cfg = tiny_config(manifest, tmp_path / "resumed", max_steps=12)
    resumed_cfg.checkpoint.resume = str(tmp_path / "straight" / "checkpoints" / "step-0000006")
    torch.manual_seed(12345)  # the RNG states must come from the checkpoint, not from here
    resumed = train(resumed_cfg, stream=open("/dev/null", "w"))

    assert train_losses(resumed) == [(s, loss) for s, loss in train_losses(reference) if s > 6]
    assert len(train_losses(resumed)) == 6
    a, _ = checkpoint.full_weights(tmp_path / "straight" / "checkpoints" / "step-0000012")
    b, _ = checkpoint.full_weights(tmp_path / "resumed" / "checkpoints" / "step-0000012")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    six, _ = checkpoint.full_weights(tmp_path / "straight" / "checkpoints" / "step-0000006")
    assert not torch.equal(six["output.weight"], a["output.weight"])  # the async write kept step 6's weights
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "step-0000012" / "train_state.json").read_text())
    assert state["step"] == 12 and state["data"]["cursor"] == 12 * 16  # 12 steps x 2048 tokens / 128 per window


def test_both_gradient_sync_modes_accumulate_the_same_gradients(manifest, tmp_path):
    """Two micro-batches a step: reduce-scattering each one (the default) or only the sum of both
    (no-sync) are the same sum, so the same losses to rounding; and the same as one micro-batch of
    twice the size."""
    runs = {}
    for name, micro_batch, sync in (("every", 8, "every_micro_step"), ("last", 8, "last_micro_step"),
                                    ("whole", 16, "every_micro_step")):
        # 2,048 tokens a step = 16 windows of 128: two micro-batches of 8, or one of 16.
        cfg = tiny_config(manifest, tmp_path / name, max_steps=5, micro_batch_size=micro_batch, gradient_sync=sync)
        runs[name] = [loss for _, loss in train_losses(train(cfg, stream=open("/dev/null", "w")))]
    assert runs["every"] == pytest.approx(runs["last"], rel=1e-6)
    assert runs["every"] == pytest.approx(runs["whole"], rel=1e-5)
    assert runs["every"][-1] < runs["every"][0]


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
    from beam_jobs.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / "train" / "tiny.yaml"
    out = tmp_path / "run"
    code = main(["train", "--config", str(config), "--data", str(manifest), "--output", str(out), "--max-steps", "3",
                 "--set", "data.seq_len=64", "--set", "data.val_tokens=512", "--set", "training.micro_batch_size=4",
                 "--set", "training.batch_tokens=256", "--set", "logging.interval=1"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "step       3  loss" in printed and "tok/s" in printed
    assert (out / "checkpoints" / "step-0000003" / ".metadata").is_file()
    assert (out / "config.yaml").is_file() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3
    assert list((out / "tensorboard").iterdir())
    assert main(["train", "--config", str(config), "--runner", "DirectRunner"]) == 2
    assert "takes no pipeline options" in capsys.readouterr().err


def test_bf16_mixed_precision_is_fsdp2s_policy_with_fp32_rotary_tables():
    """torchtitan's mixed precision, here on one CPU process: fp32 master weights, blocks computing in
    bf16 while the rotary tables reach them in fp32 (cast_forward_inputs=False), the loss in fp32,
    fp32 gradients."""
    import torch.distributed as dist

    from model.llama import ModelArgs
    from model.train import TrainingConfig, build_model, setup_distributed

    setup_distributed(torch.device("cpu"))
    try:
        args = ModelArgs(dim=64, n_layers=2, n_heads=4, vocab_size=VOCAB, multiple_of=32, max_seq_len=64)
        model = build_model(args, TrainingConfig(dtype="bf16"), torch.device("cpu"))
        seen = {}
        model.layers[0].register_forward_pre_hook(lambda _, inputs: seen.update(zip(("h", "cos", "sin"), inputs)))
        tokens = torch.randint(0, VOCAB, (2, 33), generator=torch.Generator().manual_seed(0))
        loss = model(tokens[:, :-1], tokens[:, 1:])
        assert (seen["h"].dtype, seen["cos"].dtype, seen["sin"].dtype) == (torch.bfloat16, torch.float32, torch.float32)
        assert loss.dtype == torch.float32
        loss.backward()
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    finally:
        dist.destroy_process_group()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_compiled_training_on_gpu_learns(manifest, tmp_path):
    cfg = tiny_config(manifest, tmp_path, max_steps=30, device="cuda", compile=True,
                      activation_checkpointing="selective", deterministic=False)
    losses = [loss for _, loss in train_losses(train(cfg, stream=open("/dev/null", "w")))]
    assert losses[-1] < losses[0] - 1.5


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "make-shards":
        sys.exit("usage: python tests/test_train.py make-shards DIR")
    print(make_sample_shards(Path(sys.argv[2])))
