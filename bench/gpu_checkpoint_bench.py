"""Sharded checkpoint sizes and times: save (synchronous, and async: the time training waits), load,
and the files per rank, for a model config on this machine's ranks (GPUs under torchrun with
--device cuda; CPU processes with gloo by default).

    torchrun --standalone --nproc_per_node 2 bench/gpu_checkpoint_bench.py --config 20M --out /tmp/ckpt
    python bench/gpu_checkpoint_bench.py --config 20M --out /tmp/ckpt          # one process

Prints one JSON line from rank 0. The state is the trainer's: fp32 weights and AdamW moments after
one optimiser step, written with model.checkpoint.Checkpointer.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import checkpoint  # noqa: E402
from model.llama import CONFIGS  # noqa: E402
from model.train import OptimizerConfig, TrainingConfig, build_model, build_optimizer, pick_device, setup_distributed  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="20M", choices=list(CONFIGS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", required=True)
    opts = parser.parse_args()
    device = pick_device(opts.device)
    rank, world = setup_distributed(device)
    args = CONFIGS[opts.config]
    model = build_model(args, TrainingConfig(dtype="fp32"), device)
    optimizer = build_optimizer(model, OptimizerConfig(), device)
    tokens = torch.randint(0, args.vocab_size, (1, 129), device=device)
    model(tokens[:, :-1], tokens[:, 1:]).backward()
    optimizer.step()
    folder = Path(opts.out) / f"world{world}"
    if rank == 0:
        shutil.rmtree(folder, ignore_errors=True)
    dist.barrier()
    result = {"config": opts.config, "params": sum(p.numel() for p in model.parameters()), "world": world,
              "device": str(device)}
    for mode in ("sync", "async"):
        saver = checkpoint.Checkpointer(folder / mode, async_save=mode == "async", log=lambda _: None)
        dist.barrier()
        started = time.monotonic()
        saver.save(1, model, optimizer, {"step": 1, "data": {}, "schedule": {}}, {"model_args": {}})
        blocked = time.monotonic() - started
        path = saver.finish()
        result[f"{mode}_save_s"] = {"training_blocked": blocked, "complete": time.monotonic() - started}
    files = sorted((folder / "sync" / "step-0000001").glob("*.distcp"))
    result["files_mib"] = {f.name: f.stat().st_size / 2**20 for f in files}
    dist.barrier()
    started = time.monotonic()
    checkpoint.load(path, model, optimizer)
    dist.barrier()
    result["load_s"] = time.monotonic() - started
    if rank == 0:
        print(json.dumps(result))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
