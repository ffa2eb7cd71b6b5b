"""The multi-GPU path on the CPU: two FSDP2 ranks (torchrun, gloo).

- gradient accumulation memory, measured on each rank (model.memory.LiveTensorMeter): reduce-scatter
  every micro-step keeps only the rank's gradient shard, no-sync accumulation the whole model's;
- sharded (DCP) checkpoints: a one-process run's checkpoint resumed on two ranks, and the two ranks'
  checkpoint resumed on one process, continue with the losses of the uninterrupted one-process run.

    torchrun --nproc_per_node 2 tests/test_trainer_dist.py measure-accumulation OUT.json   # what the first test runs
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

from model import checkpoint
from model.train import train
from tests.test_train import make_sample_shards, tiny_config, train_losses

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return done


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return make_sample_shards(tmp_path_factory.mktemp("shards"))


# ---------------------------------------------------------------------------------------------- memory

ACCUMULATION_MODEL = dict(dim=256, n_layers=4, n_heads=4, vocab_size=512, multiple_of=64, max_seq_len=128)


def measure_accumulation(out: Path) -> None:
    """On each rank: three micro-batches of forward and backward in each gradient_sync mode; the
    bytes of live tensors after each backward (the gradients held between micro-steps)."""
    import torch.distributed as dist

    from model.llama import ModelArgs
    from model.memory import LiveTensorMeter
    from model.train import TrainingConfig, build_model, setup_distributed

    torch.set_num_threads(1)
    rank, world = setup_distributed(torch.device("cpu"))
    args = ModelArgs(**ACCUMULATION_MODEL)
    tokens = torch.randint(0, args.vocab_size, (2, 129), generator=torch.Generator().manual_seed(rank))
    result = {"world": world}
    for mode in ("every_micro_step", "last_micro_step"):
        model = build_model(args, TrainingConfig(gradient_sync=mode), torch.device("cpu"))
        meter, held = LiveTensorMeter(), []
        with meter:
            for micro_step in range(3):
                model.set_requires_gradient_sync(mode == "every_micro_step" or micro_step == 2)
                model(tokens[:, :-1], tokens[:, 1:]).backward()
                gc.collect()  # tensors in reference cycles are garbage, not held memory
                held.append(meter.live)
        result[mode] = {"held_after_backward": held, "peak": meter.peak,
                        "grad_shard_bytes": sum(p.grad.to_local().nbytes for p in model.parameters())}
        del model
    if rank == 0:
        out.write_text(json.dumps(result))
    dist.destroy_process_group()


def test_reduce_scatter_every_micro_step_keeps_only_the_gradient_shard(tmp_path):
    from model.llama import ModelArgs, count_params
    from model.memory import estimate

    out = tmp_path / "accumulation.json"
    torchrun(str(Path(__file__).resolve()), "measure-accumulation", str(out))
    result = json.loads(out.read_text())
    n = count_params(ModelArgs(**ACCUMULATION_MODEL))
    full, shard = 4 * n, 4 * n / 2  # fp32 gradients of the whole model, and of one rank's half
    sync, nosync = result["every_micro_step"], result["last_micro_step"]
    held_sync, held_nosync = sync["held_after_backward"], nosync["held_after_backward"]
    # On top of the gradients a rank may still hold the input of its last reduce-scatter, the root
    # unit's unsharded fp32 gradient (FSDP2 frees it at the next backward), and small tensors (the loss).
    args = ModelArgs(**ACCUMULATION_MODEL)
    extra = 4 * (2 * args.vocab_size * args.dim + args.dim) + 65536
    # Reduce-scatter after every backward: between micro-steps a rank holds its shard only.
    assert all(shard <= h <= shard + extra for h in held_sync), result
    # No-sync: the unsharded fp32 gradient of the whole model on each rank until the last micro-step,
    # which reduce-scatters it into the same shard.
    assert all(full <= h <= full + extra for h in held_nosync[:2]), result
    assert shard <= held_nosync[2] <= shard + extra, result
    assert sync["grad_shard_bytes"] == nosync["grad_shard_bytes"] == pytest.approx(shard, rel=0.01)
    # The dry run's estimate of the gradients' memory, for both modes.
    for mode, held in (("every_micro_step", shard), ("last_micro_step", full + shard)):
        assert estimate(args, 2, 2, 128, torch.float32, mode)["bytes"]["gradients"] == pytest.approx(held)
    assert nosync["peak"] > sync["peak"], result  # the unsharded gradient is live while activations are


# ---------------------------------------------------------------------------------------------- checkpoints


def test_sharded_checkpoints_resume_on_two_ranks_and_back_on_one(manifest, tmp_path):
    """One process trains 9 steps straight, checkpointing every 3. Two ranks resume its step-3
    checkpoint and train to step 6, writing a checkpoint sharded over both ranks; one process resumes
    that and trains to step 9. All losses equal the straight run's (to rounding: two ranks sum
    gradients in another order), and so do the final weights."""
    single_cfg = tiny_config(manifest, tmp_path / "single", max_steps=9)
    single_cfg.checkpoint.interval = 3
    single = dict(train_losses(train(single_cfg, stream=open("/dev/null", "w"))))

    two_cfg = tiny_config(manifest, tmp_path / "two", max_steps=6)
    raw = asdict(two_cfg)
    raw["model"] = {"name": "tiny", **raw["model"]["overrides"]}
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(raw))
    done = torchrun("-m", "model.train", "--config", str(tmp_path / "two.yaml"), "--device", "cpu",
                    "--resume", str(tmp_path / "single" / "checkpoints" / "step-0000003"))
    assert "resumed from" in done.stdout and "2,048 tokens/step = 8 x 128 x 2 ranks x 1 accumulation" in done.stdout
    records = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    two = {r["step"]: r["loss"] for r in records if "loss" in r}
    assert sorted(two) == [4, 5, 6]
    assert [two[s] for s in (4, 5, 6)] == pytest.approx([single[s] for s in (4, 5, 6)], rel=1e-5)

    sharded = tmp_path / "two" / "checkpoints" / "step-0000006"
    files = {f.name: f.stat().st_size for f in sharded.glob("*.distcp")}
    assert sorted(files) == ["__0_0.distcp", "__1_0.distcp"]  # each rank wrote its own shards
    # Weights and both AdamW moments, fp32, are 12 bytes a parameter, plus DCP's framing of each
    # tensor (about 1.8 kB: 14 % of this tiny model's 1.7 MB, nothing at scale); each rank about half.
    n_params = sum(v.numel() for v in checkpoint.full_weights(sharded)[0].values())
    assert 12 * n_params < sum(files.values()) < 1.2 * 12 * n_params
    assert all(size < 0.6 * sum(files.values()) for size in files.values())

    back_cfg = tiny_config(manifest, tmp_path / "back", max_steps=9)
    back_cfg.checkpoint.resume = str(sharded)
    back = dict(train_losses(train(back_cfg, stream=open("/dev/null", "w"))))
    assert sorted(back) == [7, 8, 9]
    assert [back[s] for s in (7, 8, 9)] == pytest.approx([single[s] for s in (7, 8, 9)], rel=1e-5)
    ours, _ = checkpoint.full_weights(tmp_path / "back" / "checkpoints")
    reference, _ = checkpoint.full_weights(tmp_path / "single" / "checkpoints")
    assert ours.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(ours[name], reference[name], rtol=1e-4, atol=1e-5)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "measure-accumulation":
        sys.exit("usage: torchrun --nproc_per_node 2 tests/test_trainer_dist.py measure-accumulation OUT.json")
    measure_accumulation(Path(sys.argv[2]))
