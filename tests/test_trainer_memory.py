"""The dry run's memory estimate (model/memory.py) against the memory tensors really hold on the CPU
(model.memory.LiveTensorMeter), for small configs in fp32 and bf16 with each activation-checkpointing
mode; the modes' gradients; and `--dry-run` at the paper's sizes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from model.llama import CONFIGS, ModelArgs, count_params
from model.memory import LiveTensorMeter, estimate
from model.train import TrainConfig, TrainingConfig, build_model, dry_run, setup_distributed

pytestmark = pytest.mark.usefixtures("torch_one_thread")
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs" / "train"

SMALL = ModelArgs(dim=128, n_layers=3, n_heads=4, vocab_size=1024, multiple_of=64, max_seq_len=128)
BATCH, SEQ = 4, 128


@pytest.fixture
def one_rank():
    setup_distributed(torch.device("cpu"))  # an FSDP2 world of one, as `train` runs on one process
    yield
    dist.destroy_process_group()


def measure(args: ModelArgs, dtype: str, checkpointing: str, tokens: torch.Tensor) -> dict:
    model = build_model(args, TrainingConfig(dtype=dtype, activation_checkpointing=checkpointing), torch.device("cpu"))
    meter = LiveTensorMeter()
    with meter:
        loss = model(tokens[:, :-1], tokens[:, 1:])
        after_forward = meter.live
        meter.reset_peak()
        loss.backward()
    grads = {name.replace("_checkpoint_wrapped_module.", ""): p.grad.full_tensor().clone()
             for name, p in model.named_parameters()}
    return {"forward": after_forward, "peak": meter.peak, "after_backward": meter.live, "grads": grads}


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_estimate_matches_measured_memory_of_small_configs(one_rank, dtype):
    tokens = torch.randint(0, SMALL.vocab_size, (BATCH, SEQ + 1), generator=torch.Generator().manual_seed(0))
    param_bytes = 4 if dtype == "fp32" else 2
    root = param_bytes * (2 * SMALL.vocab_size * SMALL.dim + SMALL.dim)  # the root unit stays gathered after forward
    measured = {mode: measure(SMALL, dtype, mode, tokens) for mode in ("none", "full", "selective")}
    for mode, m in measured.items():
        parts = estimate(SMALL, 1, BATCH, SEQ, torch.float32 if dtype == "fp32" else torch.bfloat16,
                         checkpointing=mode)["bytes"]
        # After forward: what autograd saved, plus the gathered root unit.
        assert m["forward"] == pytest.approx(parts["activations"] + root, rel=0.02), mode
        # After backward: the fp32 gradients (one rank: all of them).
        assert m["after_backward"] == pytest.approx(parts["gradients"], rel=0.01), mode
        # The backward peak: the estimate adds all parts at once, an upper bound within 2x.
        during_backward = parts["activations"] + parts["backward_transient"] + parts["gathered"] + parts["gradients"]
        assert 0.5 * during_backward < m["peak"] <= during_backward, mode
    assert measured["full"]["forward"] < measured["selective"]["forward"] < measured["none"]["forward"]
    # Recomputing gives the same gradients (fp32: to rounding; bf16: recomputed in the same dtype).
    for mode in ("full", "selective"):
        for name, grad in measured["none"]["grads"].items():
            torch.testing.assert_close(measured[mode]["grads"][name], grad, rtol=1e-5, atol=1e-6)


def test_dry_run_at_the_papers_sizes(capsys):
    cfg = TrainConfig.load(CONFIGS_DIR / "65b.yaml")
    report = dry_run(cfg, world_size=2048, vocab_size=32000)
    printed = capsys.readouterr().out
    assert report["params"] == 65_285_660_672 and report["accumulation"] == 1  # 4M tokens = 2048 x 2048 x 1
    assert "65,285,660,672 parameters" in printed and "4,194,304 tokens/step = 1 x 2048 x 2048 ranks x 1 accumulation" in printed
    n = count_params(CONFIGS["65B"])
    assert report["bytes"]["optimizer"] == 8 * n / 2048
    # No-sync accumulation on 64 ranks: every rank holds the whole model's fp32 gradient, 261 GB.
    cfg.training.gradient_sync = "last_micro_step"
    nosync = dry_run(cfg, world_size=64, vocab_size=32000, stream=open("/dev/null", "w"))
    assert nosync["accumulation"] == 32
    assert nosync["bytes"]["gradients"] - 4 * n / 64 == 4 * n == pytest.approx(261e9, rel=0.001)
    seven = dry_run(TrainConfig.load(CONFIGS_DIR / "7b.yaml"), world_size=64, vocab_size=32000,
                    stream=open("/dev/null", "w"))
    assert seven["accumulation"] == 16 and seven["peak_bytes"] < 80e9  # fits an 80 GB GPU
