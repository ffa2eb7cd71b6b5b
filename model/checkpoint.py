"""Checkpoints: everything needed to continue a run exactly.

A checkpoint is a folder `checkpoints/step-NNNNNNN/` holding
- `model.safetensors`: the full (unsharded) weights, float32, named as in `model.llama.Transformer`;
- `train_state.pt`: optimiser, schedule, data position, RNG states and the step, saved with
  `torch.save` and read back with `weights_only=True` (tensors, numbers, strings, lists, dicts only:
  loading never unpickles arbitrary objects);
- `config.json`: the model args and the run's config, for export and for reading by people.
`checkpoints/latest` names the newest complete one; it is written last, so a run killed mid-save
resumes from the previous checkpoint.

Under FSDP2 the state is gathered to full tensors (rank 0 writes) and scattered back on load via
`torch.distributed.checkpoint.state_dict`, which also handles the plain single-device model, so both
paths share this code. Gathering suits models up to a few billion parameters; bigger ones would want
sharded DCP checkpoints.
"""
from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions, get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
)


def _is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _rng_states() -> dict:
    states = {"torch": torch.get_rng_state(), "python": list(_python_state_to_lists(random.getstate()))}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _python_state_to_lists(state):
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(folder: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_state: dict,
         config: dict, keep: int = 0) -> Path | None:
    """Write checkpoint `step` under `folder` (the run's `checkpoints/`). Collective under FSDP2: every
    rank must call it. Returns the checkpoint's path on rank 0. `keep` > 0 deletes all but the newest."""
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state = get_model_state_dict(model, options=full)
    optim_state = get_optimizer_state_dict(model, optimizer, options=full)
    if not _is_main():
        return None
    path = folder / f"step-{step:07d}"
    tmp = folder / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model_state.items()}, tmp / "model.safetensors")
    torch.save({"step": step, "optimizer": optim_state, "rng": _rng_states(), **train_state}, tmp / "train_state.pt")
    (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
    (folder / "latest.tmp").write_text(path.name + "\n")
    (folder / "latest.tmp").replace(folder / "latest")
    if keep > 0:
        for old in sorted(folder.glob("step-*"))[:-keep]:
            shutil.rmtree(old)
    return path


def latest(folder: Path) -> Path | None:
    pointer = folder / "latest"
    if not pointer.is_file():
        return None
    path = folder / pointer.read_text().strip()
    return path if path.is_dir() else None


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Weights only (for evaluation and export), into a plain or FSDP2-sharded model."""
    state = load_file(path / "model.safetensors")
    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))


def load(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore model, optimiser and RNG states in place; returns the rest of the train state (step,
    schedule, data position). Collective under FSDP2."""
    load_weights(path, model)
    state = torch.load(path / "train_state.pt", map_location="cpu", weights_only=True)
    set_optimizer_state_dict(model, optimizer, state.pop("optimizer"),
                             options=StateDictOptions(full_state_dict=True))
    _set_rng_states(state.pop("rng"))
    return state
