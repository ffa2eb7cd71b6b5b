"""Checkpoints: everything needed to continue a run exactly, written and read by every rank in shards.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` holding
- a `torch.distributed.checkpoint` (DCP) checkpoint of the model's weights and the optimiser's state
  (fp32; `__R_0.distcp`, one file per rank with that rank's shards, and `.metadata`, written last);
  only tensors, so reading it back unpickles nothing;
- `train_state.json`: step, data position, schedule and RNG state (the same on every rank);
- `config.json`: the model args and the run's config, for export and for reading by people.

Each rank writes its own shards and, on resume, reads only the pieces its shards need: no rank ever
holds the whole model, and a run may resume on another number of ranks (DCP reshards; the data
position is global). A checkpoint is written under `.tmp-step-N/`, renamed to `step-N/` when complete,
and only then named in `checkpoints/latest`: a run killed during a write resumes from the previous one.

Full weights as one safetensors file, and the Hugging Face export, are separate steps that read a
checkpoint on one process: `python -m model.checkpoint to-safetensors CKPT OUT` and
`corpusmill export-hf CKPT OUT`.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
)

POINTER = "latest"


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))


def _sharded_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """The DCP state (this rank's shards: DTensors keyed by parameter name) and the optimiser's full
    state dict, whose `state` part it shares. `param_groups` (learning rate, betas, ...) are not saved:
    they come from the config, and the learning rate is set from the schedule every step."""
    optim_state = get_optimizer_state_dict(model, optimizer)  # on a fresh optimiser: zero-initialised states
    return {"model": get_model_state_dict(model), "optimizer": optim_state["state"]}, optim_state


class Checkpointer:
    """Writes `checkpoints/step-N/` (collective: every rank calls `save`). With `async_save` the
    shards are copied to host memory and written by a background thread while training continues;
    the next `save` (or `finish`) waits for that write and completes it."""

    def __init__(self, folder: Path, keep: int = 0, async_save: bool = False, log: Callable[[str], None] = print):
        self.folder, self.keep, self.log = Path(folder), keep, log
        self.rank = dist.get_rank()
        # Async writes synchronise over their own gloo group, so they never wait behind NCCL kernels.
        self.group = dist.new_group(backend="gloo") if async_save else None
        self.pending = None  # (future, completion) of a write in flight
        self.last: Path | None = None

    def save(self, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_state: dict,
             config: dict) -> None:
        self.wait()
        path, tmp = self.folder / f"step-{step:07d}", self.folder / f".tmp-step-{step:07d}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed mid-write
            self.log(f"checkpoint {path.name}: writing")
        dist.barrier()
        started = time.monotonic()
        state, _ = _sharded_state(model, optimizer)
        extra = {"train_state.json": {**train_state, "rng": _rng_state()}, "config.json": config}

        def complete() -> None:
            if self.rank == 0:
                for name, content in extra.items():
                    (tmp / name).write_text(json.dumps(content, indent=2, default=str) + "\n")
                shutil.rmtree(path, ignore_errors=True)
                tmp.rename(path)
                (self.folder / (POINTER + ".tmp")).write_text(path.name + "\n")
                (self.folder / (POINTER + ".tmp")).replace(self.folder / POINTER)
                if self.keep > 0:
                    for old in sorted(self.folder.glob("step-*"))[:-self.keep]:
                        shutil.rmtree(old)
                size = sum(f.stat().st_size for f in path.iterdir())
                self.log(f"checkpoint {path.name}: complete, {size / 2**20:.1f} MiB in {time.monotonic() - started:.2f} s")
            self.last = path

        if self.group is None:
            dcp.save(state, checkpoint_id=tmp)
            complete()
        else:
            self.pending = (dcp.async_save(state, checkpoint_id=tmp, process_group=self.group), complete)

    def wait(self) -> None:
        if self.pending is not None:
            future, complete = self.pending
            future.result()
            self.pending = None
            complete()

    def finish(self) -> Path | None:
        """Wait for a write in flight; returns the newest checkpoint this run wrote."""
        self.wait()
        dist.barrier()  # rank 0 may still be renaming; nobody leaves before the checkpoint is complete
        return self.last


def latest(folder: Path) -> Path | None:
    """The newest complete checkpoint under `folder` (a run's checkpoints/), or None."""
    pointer = Path(folder) / POINTER
    if not pointer.is_file():
        return None
    path = Path(folder) / pointer.read_text().strip()
    return path if (path / ".metadata").is_file() and (path / "train_state.json").is_file() else None


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model and optimiser (each rank reads its shards) and the RNG state in place; returns the
    train state (step, data position, schedule). Collective: every rank calls it."""
    path = Path(path)
    if not (path / ".metadata").is_file():
        raise FileNotFoundError(f"{path}: not a complete checkpoint (no .metadata)")
    state, optim_state = _sharded_state(model, optimizer)
    dcp.load(state, checkpoint_id=path)
    set_model_state_dict(model, state["model"])
    set_optimizer_state_dict(model, optimizer, optim_state)
    train_state = json.loads((path / "train_state.json").read_text())
    _set_rng_state(train_state.pop("rng"))
    return train_state


def resolve(checkpoint: str | Path) -> Path:
    """A checkpoint folder, or a run's checkpoints/ folder for its newest complete checkpoint."""
    checkpoint = Path(checkpoint)
    if (checkpoint / POINTER).is_file():
        newest = latest(checkpoint)
        if newest is None:
            raise FileNotFoundError(f"{checkpoint}/{POINTER} names no complete checkpoint")
        return newest
    if not (checkpoint / ".metadata").is_file():
        raise FileNotFoundError(f"{checkpoint}: not a checkpoint (no .metadata)")
    return checkpoint


def full_weights(checkpoint: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The whole model's fp32 weights from a (sharded) checkpoint, read on this one process (no process
    group needed), and the run config. Holds the model once in host memory: 4 bytes x parameters."""
    from model.llama import ModelArgs, Transformer

    path = resolve(checkpoint)
    run_config = json.loads((path / "config.json").read_text())
    with torch.device("meta"):
        model = Transformer(ModelArgs(**run_config["model_args"]))
    model.to_empty(device="cpu")
    weights = model.state_dict()  # learned weights only: the rotary tables are not persistent
    with warnings.catch_warnings():  # DCP warns that it reads on one process, which is the point here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"model": weights}, checkpoint_id=path, no_dist=True)
    return weights, run_config


def to_safetensors(checkpoint: str | Path, out: str | Path, dtype: torch.dtype = torch.float32) -> Path:
    """Write the full weights as one safetensors file (names as in model.llama.Transformer)."""
    from safetensors.torch import save_file

    weights, run_config = full_weights(checkpoint)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(dtype).contiguous() for k, v in weights.items()}, out,
              metadata={"format": "pt", "model_args": json.dumps(run_config["model_args"])})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model.checkpoint",
                                     description="Full weights of a sharded training checkpoint as one safetensors file.")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("to-safetensors", help="CKPT (a step-N folder, or a run's checkpoints/) -> OUT.safetensors")
    convert.add_argument("checkpoint")
    convert.add_argument("out")
    convert.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    opts = parser.parse_args(argv)
    out = to_safetensors(opts.checkpoint, opts.out, {"float32": torch.float32, "bfloat16": torch.bfloat16}[opts.dtype])
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
