"""The training loop at 1B on one GPU (bench/gpu_run.sh, step 3): `model.train.train` with the 1B
config (bf16, compile, sequence 2,048, micro-batch 8) for 50 steps with a sharded checkpoint at step
50, then the same run resumed from it to step 60. Prints the loop's own tokens/s and MFU, the
checkpoint's size and write time, and whether the resumed run's first losses continue the first
run's schedule (step numbers, learning rate).

The shards hold uniformly random tokens (vocabulary 32,000), made here: the losses measure nothing
but the loop's health; the throughput is the point. Steps hold 32,768 tokens (accumulation 2), not the
config's 1M, so that 60 steps fit in a minute.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.data import write_shards  # noqa: E402
from model.train import TrainConfig, train  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/gpu/loop")
    opts = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_loop_check: no CUDA GPU here; nothing measured")
        return 0
    out = Path(opts.out)
    rng = np.random.default_rng(0)
    documents = [[1, *rng.integers(3, 32000, 4095).tolist(), 2] for _ in range(640)]  # 2.6M tokens
    manifest = write_shards(out / "shards", documents, vocab_size=32000, bos_id=1, eos_id=2, docs_per_shard=160)

    cfg = TrainConfig.load(Path(__file__).resolve().parents[1] / "configs" / "train" / "1b-h100.yaml")
    cfg.output, cfg.data.manifest, cfg.data.val_tokens = str(out / "run"), str(manifest), 65536
    cfg.training.max_steps, cfg.training.batch_tokens = 50, 8 * 2048 * 2
    cfg.checkpoint.interval, cfg.checkpoint.keep, cfg.checkpoint.resume = 50, 2, "auto"
    cfg.logging.interval, cfg.logging.eval_interval, cfg.logging.eval_batches, cfg.logging.tensorboard = 10, 0, 2, False
    started = time.monotonic()
    first = train(cfg)
    first_s = time.monotonic() - started
    cfg.training.max_steps = 60
    second = train(cfg)  # resumes from step 50 (checkpoint.resume: auto)
    timed = [r for r in first["history"] if "tokens_per_s" in r][1:]  # the first interval holds compilation
    report = {
        "tokens_per_s": sum(r["tokens_per_s"] for r in timed) / len(timed),
        "mfu": sum(r.get("mfu", 0.0) for r in timed) / len(timed),
        "peak_memory_gib": max(r["memory_gib"] for r in timed),
        "first_run_s": first_s,
        "checkpoint": str(first["checkpoint"]),
        "checkpoint_mib": sum(f.stat().st_size for f in Path(first["checkpoint"]).iterdir()) / 2**20,
        "resumed_steps": [r["step"] for r in second["history"] if "loss" in r],
        "losses": {r["step"]: r["loss"] for r in first["history"] + second["history"] if "loss" in r},
    }
    print(json.dumps(report))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    ok = report["resumed_steps"] == [60] or report["resumed_steps"][0] > 50
    print(f"loop: {report['tokens_per_s']:,.0f} tok/s, MFU {100 * report['mfu']:.1f}%; checkpoint "
          f"{report['checkpoint_mib']:,.0f} MiB; resumed at step 50: {'ok' if ok else 'NOT OK'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
