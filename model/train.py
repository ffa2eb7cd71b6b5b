"""`corpusmill train --config FILE`: pretrain the bundled LLaMA model on mixed token shards.

One code path for a laptop CPU, one GPU and many GPUs (`torchrun ... -m beam_jobs.cli train`, FSDP2).
The recipe is the paper's: AdamW (0.9, 0.95, eps 1e-8, weight decay 0.1 on matrices, not on norms),
gradient clipping at 1.0, linear warm-up then a cosine to 10 % of the peak learning rate, and a
batch measured in tokens, reached by gradient accumulation. A run is a job of the project's
convention (pipeline/job.py `run_job`): a finished run of the same shards and config is up to date,
a killed one resumes from its last checkpoint, and stats.json, written last, accounts for the token
stream. See docs/trainer.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from model import checkpoint
from model.data import PackedWindows
from model.llama import CONFIGS, ModelArgs, Transformer, flops_per_token
from model.metrics import MetricsLogger
from pipeline.accounting import AccountingError, JobStats, StageStats
from pipeline.job import run_job
from pipeline.runs import STATS_FILE, InputError, input_fingerprint

# --------------------------------------------------------------------------------------------------
# Config


@dataclass
class ModelConfig:
    name: str = "tiny"  # a key of model.llama.CONFIGS
    overrides: dict = field(default_factory=dict)  # any ModelArgs field; vocab_size comes from the shards


@dataclass
class DataConfig:
    manifest: str = "runs/demo/mix/manifest.json"
    seq_len: int = 2048
    val_tokens: int = 1_048_576  # the end of the token stream, held out for validation
    seed: int = 1234  # window order


@dataclass
class OptimizerConfig:
    lr: float = 3e-4  # peak
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0


@dataclass
class ScheduleConfig:
    warmup_steps: int = 2000
    min_lr_ratio: float = 0.1  # the cosine ends at this fraction of the peak, at training.max_steps


@dataclass
class TrainingConfig:
    max_steps: int = 10_000
    max_minutes: float = 0.0  # > 0: stop (and checkpoint) after this much wall-clock time
    batch_tokens: int = 4_194_304  # per optimiser step, over all ranks (the paper's 4M)
    micro_batch_size: int = 1  # sequences per forward pass per rank
    device: str = "auto"  # auto | cpu | cuda
    dtype: str = "auto"  # compute (FSDP2 param) dtype: auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    compile: bool = False  # torch.compile each transformer block
    activation_checkpointing: str = "none"  # none | full (recompute each block) | selective (op-level, torchtitan's)
    # every_micro_step: reduce-scatter gradients after each micro-batch, so each rank only ever holds
    # its shard (torchtitan's default). last_micro_step: FSDP2's no-sync accumulation, one
    # reduce-scatter per step but an unsharded fp32 gradient of the whole model on every rank
    # (4 bytes x parameters: 27 GB at 7B, 261 GB at 65B).
    gradient_sync: str = "every_micro_step"
    deterministic: bool = False  # torch.use_deterministic_algorithms; bit-exact resume on CPU
    seed: int = 0  # weight init


@dataclass
class CheckpointConfig:
    interval: int = 1000  # steps; a checkpoint is also written at the end
    keep: int = 3  # newest checkpoints kept; 0 keeps all
    resume: str = "auto"  # auto (newest complete one under output/checkpoints, if any) | none | PATH
    async_save: bool = False  # write in a background thread while training goes on (memory: one CPU copy of the state)


@dataclass
class LoggingConfig:
    interval: int = 10
    eval_interval: int = 500
    eval_batches: int = 20
    tensorboard: bool = True


@dataclass
class TrainConfig:
    output: str = "runs/train"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        sections = {f.name: f for f in fields(cls)}
        unknown = set(raw) - set(sections)
        if unknown:
            raise ValueError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        values = {}
        for name, value in raw.items():
            if name == "output":
                values[name] = str(value)
                continue
            section_type = sections[name].default_factory
            value = dict(value or {})
            if name == "model":  # `model:` takes a name plus any ModelArgs field directly
                overrides = {k: value.pop(k) for k in list(value) if k not in ("name", "overrides")}
                value["overrides"] = {**value.get("overrides", {}), **overrides}
            known = {f.name for f in fields(section_type)}
            if set(value) - known:
                raise ValueError(f"unknown key(s) in {name}: {', '.join(sorted(set(value) - known))}")
            values[name] = section_type(**value)
        return cls(**values)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no training config at {path}")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {})

    def set(self, dotted: str, value: str) -> None:
        """Override one key, `section.key=value`, the value parsed as YAML (`training.compile=true`)."""
        section, _, key = dotted.partition(".")
        parsed = yaml.safe_load(value)
        if section == "output" and not key:
            self.output = str(parsed)
        elif section == "model" and key not in ("name", "overrides"):
            self.model.overrides[key] = parsed
        elif hasattr(self, section) and hasattr(getattr(self, section), key):
            setattr(getattr(self, section), key, parsed)
        else:
            raise ValueError(f"unknown config key {dotted!r}")


# --------------------------------------------------------------------------------------------------
# Components


class WarmupCosineSchedule:
    """Learning rate at step s: linear warm-up to the peak over `warmup` steps, then a half cosine to
    `min_ratio` * peak at `total` steps, flat after. A pure function of the step, so its state is the step."""

    def __init__(self, peak: float, warmup: int, total: int, min_ratio: float):
        self.peak, self.warmup, self.total, self.min_ratio = peak, warmup, total, min_ratio

    def lr(self, step: int) -> float:
        if step < self.warmup:
            return self.peak * (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.peak * (self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    def state_dict(self) -> dict:
        return {"peak": self.peak, "warmup": self.warmup, "total": self.total, "min_ratio": self.min_ratio}


def build_optimizer(model: torch.nn.Module, cfg: OptimizerConfig, device: torch.device) -> torch.optim.AdamW:
    # Decay the matrices (projections and embeddings), not the norm gains: decaying a gain toward 0
    # fights the normalisation it scales.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda"  # one kernel for all (DTensor) parameters on a GPU; foreach on the CPU
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             fused=fused or None, foreach=None if fused else True)


def pick_device(name: str) -> torch.device:
    """This process's device; under torchrun, the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("training.device is cuda but no CUDA device is available")
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device(name)


def setup_distributed(device: torch.device) -> tuple[int, int]:
    """rank and world size. There is always a process group, so that one process and many take the
    same path (FSDP2, distributed checkpoints): under torchrun from its environment, alone from an
    in-memory store. NCCL between GPUs (bound to this rank's GPU), gloo between CPU processes."""
    backend = "nccl" if device.type == "cuda" else "gloo"
    device_id = device if device.type == "cuda" else None
    if "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend, device_id=device_id)
    else:
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1, device_id=device_id)
    return dist.get_rank(), dist.get_world_size()


def compute_dtype(cfg: TrainingConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"bf16": torch.bfloat16, "fp32": torch.float32}[cfg.dtype]


def build_model(args: ModelArgs, cfg: TrainingConfig, device: torch.device) -> torch.nn.Module:
    """The model, parallelised as torchtitan's parallelize_llama does it: built on the meta device (no
    memory, no throw-away init); activation checkpointing, then torch.compile, per block; then FSDP2,
    each block and the root (embedding, final norm, output) its own unit, so no rank ever holds the
    whole model; then initialised in place. One process is an FSDP2 world of one: the same mixed
    precision, the same code. The weights are the same on any number of ranks
    (model.llama.Transformer.init_weights)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if cfg.activation_checkpointing not in ("none", "full", "selective"):
        raise ValueError(f"training.activation_checkpointing is none, full or selective, not {cfg.activation_checkpointing!r}")
    if cfg.gradient_sync not in ("every_micro_step", "last_micro_step"):
        raise ValueError(f"training.gradient_sync is every_micro_step or last_micro_step, not {cfg.gradient_sync!r}")
    with torch.device("meta"):
        model = Transformer(args)
    for name, block in list(model.layers.named_children()):
        if cfg.activation_checkpointing != "none":
            block = checkpoint_block(block, selective=cfg.activation_checkpointing == "selective")
        if cfg.compile:
            block.compile()  # in place: FSDP2's hooks run around the compiled block; state-dict names unchanged
        model.layers.register_module(name, block)
    # Mixed precision is FSDP2's alone (no autocast on top): parameters gathered in the compute dtype
    # (bf16 on a GPU), gradients reduced and kept in fp32, fp32 master weights and optimiser state.
    # cast_forward_inputs=False leaves the rotary tables (and the fp32 norm statistics) in fp32.
    policy = MixedPrecisionPolicy(param_dtype=compute_dtype(cfg, device), reduce_dtype=torch.float32,
                                  cast_forward_inputs=False)
    for block in model.layers:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    model.to_empty(device=device)
    model.init_weights(seed=cfg.seed)
    return model


def checkpoint_block(block: torch.nn.Module, selective: bool) -> torch.nn.Module:
    """Recompute the block's activations in the backward pass. Full: keep only the block's input.
    Selective (torchtitan's op-level policy): keep the outputs of attention and of every other matrix
    multiply, recompute the rest (norms, rotary, SwiGLU's elementwise ops and the other matmuls)."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    if not selective:
        return checkpoint_wrapper(block, preserve_rng_state=False)
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    aten = torch.ops.aten
    matmuls = {aten.mm.default, aten.linear.default}
    attention_kernels = ("_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
                         "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu")
    always_save = {getattr(aten, name).default for name in attention_kernels if hasattr(aten, name)}

    def context():
        count = {"forward": 0, "recompute": 0}

        def policy(ctx, func, *args, **kwargs):
            if func in matmuls:
                mode = "recompute" if ctx.is_recompute else "forward"
                count[mode] += 1
                return CheckpointPolicy.MUST_SAVE if count[mode] % 2 else CheckpointPolicy.PREFER_RECOMPUTE
            return CheckpointPolicy.MUST_SAVE if func in always_save else CheckpointPolicy.PREFER_RECOMPUTE

        return create_selective_checkpoint_contexts(policy)

    return checkpoint_wrapper(block, context_fn=context, preserve_rng_state=False)


def mean_over_ranks(value: torch.Tensor) -> float:
    value = value.clone()
    dist.all_reduce(value, op=dist.ReduceOp.AVG)
    return value.item()


@torch.no_grad()
def evaluate(model, data: PackedWindows, batch_size: int, max_batches: int, device) -> float | None:
    model.eval()
    total, count = torch.zeros((), device=device), 0
    for inputs, targets in data.validation_batches(batch_size, max_batches):
        total += model(inputs.to(device), targets.to(device))
        count += 1
    model.reshard()  # FSDP2 keeps the root unit gathered after a forward with no backward to follow
    model.train()
    return mean_over_ranks(total / count) if count else None


# --------------------------------------------------------------------------------------------------
# The loop


def resolve_model_args(cfg: TrainConfig, vocab_size: int) -> ModelArgs:
    base = CONFIGS.get(cfg.model.name)
    if base is None:
        raise ValueError(f"unknown model {cfg.model.name!r}; one of {', '.join(CONFIGS)}")
    return base.with_overrides(**{"max_seq_len": max(base.max_seq_len, cfg.data.seq_len), **cfg.model.overrides,
                                  "vocab_size": vocab_size})


def gradient_accumulation(cfg: TrainConfig, world_size: int) -> int:
    """batch_tokens = micro_batch_size * seq_len * world_size * accumulation."""
    micro_tokens = cfg.training.micro_batch_size * cfg.data.seq_len * world_size
    if cfg.training.batch_tokens % micro_tokens:
        raise ValueError(f"training.batch_tokens {cfg.training.batch_tokens} is not a multiple of micro_batch_size "
                         f"* seq_len * world_size = {micro_tokens}")
    return cfg.training.batch_tokens // micro_tokens


# --------------------------------------------------------------------------------------------------
# The job: fingerprint, skip when complete, stats.json last (pipeline/job.py `run_job`)

JOB = "train"
STOP_MAX_STEPS, STOP_TIME_LIMIT = "max_steps", "time_limit"


def shard_inputs(manifest_path: str) -> list[str]:
    """The files a run reads: the manifest and the `.bin`/`.idx` of every shard it lists (the `.src`
    source tags are not read by the trainer). A missing one is named here, before any training."""
    manifest = Path(manifest_path)
    if not manifest.is_file():
        raise FileNotFoundError(f"no token-shard manifest at {manifest}")
    try:
        entries = json.loads(manifest.read_text())["shards"]
        prefixes = [str(manifest.parent / entry["prefix"]) for entry in entries]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{manifest}: not a token-shard manifest ({type(err).__name__}: {err})") from None
    files = [str(manifest)]
    for prefix in prefixes:
        for ext in (".bin", ".idx"):
            if not os.path.isfile(prefix + ext):
                raise FileNotFoundError(f"{manifest}: shard file {prefix + ext} is missing")
            files.append(prefix + ext)
    return files


def resolved_device_dtype(cfg: TrainingConfig, device: torch.device) -> tuple[str, str]:
    return device.type, {torch.bfloat16: "bf16", torch.float32: "fp32"}[compute_dtype(cfg, device)]


def job_config(cfg: TrainConfig, device: torch.device) -> dict:
    """The config part of the run's fingerprint (the other part is the shards: names, sizes, mtimes).
    It holds what the trained model and the final losses in stats.json depend on: model, data,
    optimizer, schedule, the whole training section (device and dtype resolved, so `auto` and `cpu`
    on a CPU are the same run) and logging.eval_batches (the final validation loss averages that many
    batches). Left out, because they do not change the weights or the final losses:
    - output: where the run goes, not what it is;
    - logging.interval, logging.eval_interval, logging.tensorboard: how often the curves are sampled
      and where they are drawn (evaluation uses no randomness, so it does not change training);
    - checkpoint.interval, keep, async_save: how checkpoints are written (resume is exact);
    - checkpoint.resume auto|none: how this run got here; a resume from a checkpoint PATH is kept
      (the weights may come from another run)."""
    raw = asdict(cfg)
    del raw["output"]
    raw["training"]["device"], raw["training"]["dtype"] = resolved_device_dtype(cfg.training, device)
    raw["logging"] = {"eval_batches": cfg.logging.eval_batches}
    resume = cfg.checkpoint.resume
    raw["checkpoint"] = {} if resume in ("auto", "none") else {"resume": os.path.abspath(resume)}
    return raw


def lineage(cfg: TrainConfig, inputs: list[str]) -> str:
    """What a checkpoint must share with this run for `resume: auto` to continue it: the same shards
    and the same data, model, optimizer, schedule, batch and init seed. Not max_steps or max_minutes,
    so that a finished run is extended by raising them; not how it runs (device, dtype, compile,
    micro-batch, gradient sync, ranks), which a resume tolerates."""
    raw = asdict(cfg)
    key = {k: raw[k] for k in ("model", "data", "optimizer", "schedule")}
    key["training"] = {"batch_tokens": cfg.training.batch_tokens, "seed": cfg.training.seed}
    return input_fingerprint(inputs, {"lineage": key})


def split_accounting(data: PackedWindows) -> dict:
    """Where the stream's tokens and documents go: the training windows, the validation windows, and
    the tail shorter than a window that neither uses. Tokens by position (window w reads inputs
    w*seq_len .. w*seq_len + seq_len - 1); a document is counted where its first token is, so one that
    straddles a boundary counts once."""
    s = data.seq_len
    bounds = [data.n_train_windows * s, (data.n_train_windows + data.n_val_windows) * s]
    docs = np.zeros(3, dtype=np.int64)
    for shard, start in zip(data.stream.shards, data.stream.starts):
        lengths = np.asarray(shard.lengths, dtype=np.int64)
        doc_starts = int(start) + np.cumsum(lengths) - lengths
        before = np.searchsorted(doc_starts, bounds, side="left")  # documents starting before each bound
        docs += [before[0], before[1] - before[0], len(lengths) - before[1]]
    tokens = [bounds[0], bounds[1] - bounds[0], len(data.stream) - bounds[1]]
    windows = [data.n_train_windows, data.n_val_windows, 0]
    return {name: {"documents": int(d), "tokens": int(t), "windows": int(w)}
            for name, d, t, w in zip(("train", "validation", "tail"), docs, tokens, windows)}


def manifest_totals(manifest_path: str, data: PackedWindows) -> dict:
    """The manifest's declared documents and tokens (its shard entries), checked against the shards
    as read: a manifest that disagrees with its shards is named before anything trains."""
    entries = data.manifest["shards"]
    declared = {"documents": sum(int(e.get("documents", 0)) for e in entries),
                "tokens": sum(int(e.get("tokens", 0)) for e in entries)}
    read = {"documents": sum(len(s) for s in data.stream.shards), "tokens": len(data.stream)}
    for key in ("documents", "tokens"):
        if declared[key] != read[key]:
            raise InputError(f"{manifest_path}: the shard entries declare {declared[key]} {key}, the shards hold {read[key]}")
    return declared


class TrainStats(JobStats):
    """JobStats of a training run. One stage, `split`: the documents of the manifest's shards in,
    those in the training and validation windows out, those in the tail shorter than a window
    dropped. On top of JobStats' invariants: the split's tokens and documents add up to the manifest's,
    and the tokens trained are the steps times the batch."""

    def check(self) -> None:
        super().check()
        split, manifest = self.extra["split"], self.extra["manifest"]
        for key in ("tokens", "documents"):
            total = sum(part[key] for part in split.values())
            if total != manifest[key]:
                raise AccountingError(f"train: {key} of the split {dict((k, v[key]) for k, v in split.items())} "
                                      f"add up to {total}, the manifest holds {manifest[key]}")
        stage = self.stages[0]
        if (stage.docs_in, stage.docs_out) != (manifest["documents"], split["train"]["documents"] + split["validation"]["documents"]):
            raise AccountingError(f"train: stage split reads {stage.docs_in} and keeps {stage.docs_out} documents, "
                                  f"the split says {manifest['documents']} and "
                                  f"{split['train']['documents'] + split['validation']['documents']}")
        if self.extra["tokens_trained"] != self.extra["steps"] * self.extra["batch_tokens"]:
            raise AccountingError(f"train: {self.extra['tokens_trained']} tokens trained != {self.extra['steps']} steps "
                                  f"x {self.extra['batch_tokens']} tokens")


def train_stats(cfg: TrainConfig, result: dict) -> tuple[TrainStats, list[str]]:
    """stats.json's content and the files that make the run complete (a rerun retrains when one is gone)."""
    split, manifest = result["split"], result["manifest"]
    stage = StageStats("split", docs_in=manifest["documents"],
                       docs_out=split["train"]["documents"] + split["validation"]["documents"])
    stage.drop("tail_shorter_than_a_window", split["tail"]["documents"])
    output = Path(cfg.output).resolve()
    files = ["config.yaml", "metrics.jsonl"]
    saved = result["checkpoint"]
    if saved is not None:
        saved = Path(saved).resolve()
        if saved.is_relative_to(output):
            saved = saved.relative_to(output).as_posix()
            files += [f"{saved}/.metadata", f"{saved}/train_state.json", "checkpoints/latest"]
    tokens_trained = result["step"] * cfg.training.batch_tokens
    stats = TrainStats(JOB, [stage], {
        "manifest": {"path": cfg.data.manifest, **manifest},
        "split": split,
        "stop_reason": result["stop_reason"],
        "steps": result["step"],
        "max_steps": cfg.training.max_steps,
        "batch_tokens": cfg.training.batch_tokens,
        "tokens_trained": tokens_trained,
        "epochs": tokens_trained / split["train"]["tokens"],
        "resumed_from": str(result["resumed_from"]) if result["resumed_from"] is not None else None,
        "steps_this_run": result["step"] - result["resumed_step"],
        "train_loss": result["train_loss"],
        "val_loss": result["val_loss"],
        "checkpoint": str(saved) if saved is not None else None,
        "world_size": result["world_size"],
        "device": result["device"],
        "seconds": round(result["seconds"], 3),
    })
    return stats, files


def _rank0_says(value: bool, device: torch.device) -> bool:
    """Rank 0's decision (train or up to date), for every rank: only rank 0 runs the job convention."""
    flag = torch.tensor([int(value)], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def train(cfg: TrainConfig, stream=None, force: bool = False) -> dict | None:
    """The `train` job: train (or resume) as configured; returns {"history", "step", "checkpoint",
    "val_loss", "stop_reason", "stats", ...}, or None when `cfg.output` already holds a finished run of
    these shards and this config (`job_config`). `force` trains again from step 0 (resume none).
    Log lines go to `stream` (default stdout) on rank 0.

    Rank 0 alone goes through `pipeline.job.run_job` (fingerprint, skip, stats.json last) and tells
    the other ranks whether to train; they train alongside and write nothing of the job's. The work
    folder is not used: a killed run resumes from its checkpoints, which must outlive a config change
    (raising max_steps continues the run)."""
    started = time.monotonic()  # max_minutes counts setup too: it is a wall-clock budget
    if force:
        if cfg.checkpoint.resume not in ("auto", "none"):
            raise ValueError(f"--force trains from step 0; it does not combine with resuming {cfg.checkpoint.resume}")
        cfg = replace(cfg, checkpoint=replace(cfg.checkpoint, resume="none"))
    inputs = shard_inputs(cfg.data.manifest)  # on every rank, so a bad input fails them all alike
    device = pick_device(cfg.training.device)
    rank, world_size = setup_distributed(device)
    try:
        if rank != 0:
            return _train(cfg, stream, started, device, rank, world_size, inputs) if _rank0_says(False, device) else None
        result: dict = {}

        def body(work):
            _rank0_says(True, device)
            # A stats.json of an earlier run (another config, or this one --forced) goes first: a run
            # killed from here on must not read as complete.
            (Path(cfg.output) / STATS_FILE).unlink(missing_ok=True)
            result.update(_train(cfg, stream, started, device, rank, world_size, inputs))
            stats, files = train_stats(cfg, result)
            return stats, files, []

        stats = run_job(JOB, inputs, cfg.output, job_config(cfg, device), body, force=force)
        if stats is None:
            _rank0_says(False, device)
            return None
        return {**result, "stats": stats}
    finally:
        dist.destroy_process_group()


def _resume_point(cfg: TrainConfig, key: str) -> tuple[Path | None, str | None]:
    """The checkpoint to resume, and why none is resumed where `auto` found one of another run."""
    resume = cfg.checkpoint.resume
    if resume == "none":
        return None, None
    if resume != "auto":
        return Path(resume), None  # the user's choice, whatever run wrote it
    found = checkpoint.latest(Path(cfg.output) / "checkpoints")
    if found is None:
        return None, None
    theirs = json.loads((found / "train_state.json").read_text()).get("lineage")
    if theirs is not None and theirs != key:  # checkpoints from before lineages were recorded resume as before
        return None, (f"{found} was written from other shards or another model, data, optimizer or schedule "
                      f"config: starting over")
    return found, None


def _start_over(output: Path) -> None:
    """A run that resumes nothing starts from an empty run folder: the checkpoints, curves and
    TensorBoard events of an earlier run would otherwise mix with its own."""
    shutil.rmtree(output / "checkpoints", ignore_errors=True)
    shutil.rmtree(output / "tensorboard", ignore_errors=True)
    (output / "metrics.jsonl").unlink(missing_ok=True)


def _train(cfg: TrainConfig, stream, started: float, device: torch.device, rank: int, world_size: int,
           input_files: list[str]) -> dict:
    if cfg.training.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        # On a GPU some kernels (attention backward among them) have no deterministic version: warn there.
        torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    elif device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for the few fp32 matmuls
    torch.manual_seed(cfg.training.seed)
    output = Path(cfg.output)

    # Data, its accounting, and the batch arithmetic.
    data = PackedWindows(cfg.data.manifest, cfg.data.seq_len, cfg.data.val_tokens, cfg.data.seed, rank, world_size)
    manifest = manifest_totals(cfg.data.manifest, data)
    split = split_accounting(data) if rank == 0 else None
    accumulation = gradient_accumulation(cfg, world_size)
    key = lineage(cfg, input_files)

    # What to resume: every rank reads the checkpoint folder before rank 0 may clear it.
    resume_from, not_resumed = _resume_point(cfg, key)
    dist.barrier()
    if resume_from is None and rank == 0:
        _start_over(output)

    # Model and optimiser.
    args = resolve_model_args(cfg, data.vocab_size)
    model = build_model(args, cfg.training, device)
    optimizer = build_optimizer(model, cfg.optimizer, device)
    schedule = WarmupCosineSchedule(cfg.optimizer.lr, cfg.schedule.warmup_steps, cfg.training.max_steps,
                                    cfg.schedule.min_lr_ratio)
    metrics = MetricsLogger(output if rank == 0 else None, flops_per_token(args, cfg.data.seq_len), device,
                            world_size, tensorboard=cfg.logging.tensorboard, enabled=rank == 0,
                            stream=stream or sys.stdout)
    if not_resumed:
        metrics.message(not_resumed)
    run_config = {"model_args": asdict(args), "train_config": asdict(cfg)}
    if rank == 0:  # the resolved config, flags and --set applied, for people and for reruns
        (output / "config.yaml").write_text(yaml.safe_dump(asdict(cfg), sort_keys=False))
    checkpoints = checkpoint.Checkpointer(output / "checkpoints", keep=cfg.checkpoint.keep,
                                          async_save=cfg.checkpoint.async_save, log=metrics.message)

    # Resume: weights and optimiser (each rank reads its own shards), then step, data position, RNG.
    step = 0
    if resume_from is not None:
        state = checkpoint.load(resume_from, model, optimizer)
        step = int(state["step"])
        data.load_state_dict(state["data"])
        metrics.message(f"resumed from {resume_from} at step {step}")
    resumed_step = step
    n_params = sum(p.numel() for p in model.parameters())  # DTensors: global counts
    metrics.message(f"model {cfg.model.name}: {n_params:,} parameters, vocab {args.vocab_size}, seq {cfg.data.seq_len}; "
                    f"{cfg.training.batch_tokens:,} tokens/step = {cfg.training.micro_batch_size} x {cfg.data.seq_len} "
                    f"x {world_size} ranks x {accumulation} accumulation; device {device}, "
                    f"{str(compute_dtype(cfg.training, device)).removeprefix('torch.')} compute")

    def save() -> None:
        train_state = {"step": step, "data": data.state_dict(), "schedule": schedule.state_dict(), "lineage": key}
        checkpoints.save(step, model, optimizer, train_state, run_config)
        metrics.reset_clock()

    last_saved = step
    stop_reason = STOP_MAX_STEPS
    last_loss = None  # the last step's loss (summed over micro-batches), whatever the logging interval
    metrics.reset_clock()
    while step < cfg.training.max_steps:
        if cfg.training.max_minutes > 0:
            out_of_time = torch.tensor(float(time.monotonic() - started > 60 * cfg.training.max_minutes), device=device)
            if mean_over_ranks(out_of_time) > 0:  # any rank out of time stops all, so they stay in step
                metrics.message(f"time limit of {cfg.training.max_minutes} min reached at step {step}")
                stop_reason = STOP_TIME_LIMIT
                break

        lr = schedule.lr(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=device)
        for micro_step in range(accumulation):
            inputs, targets = data.next_batch(cfg.training.micro_batch_size)
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            # every_micro_step: each backward reduce-scatters into this rank's gradient shard.
            model.set_requires_gradient_sync(cfg.training.gradient_sync == "every_micro_step"
                                             or micro_step == accumulation - 1)
            loss = model(inputs, targets)
            (loss / accumulation).backward()
            loss_sum += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optimizer.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        last_loss = loss_sum
        metrics.count_tokens(cfg.training.batch_tokens)

        if step % cfg.logging.interval == 0 or step == cfg.training.max_steps:
            metrics.log_train(step, mean_over_ranks(loss_sum / accumulation), lr, grad_norm.full_tensor().item())
        if cfg.logging.eval_interval and step % cfg.logging.eval_interval == 0:
            val_loss = evaluate(model, data, cfg.training.micro_batch_size, cfg.logging.eval_batches, device)
            if val_loss is not None:
                metrics.log_eval(step, val_loss)
            metrics.reset_clock()
        if cfg.checkpoint.interval and step % cfg.checkpoint.interval == 0:
            save()
            last_saved = step

    train_loss = mean_over_ranks(last_loss / accumulation) if last_loss is not None else None
    final_val = evaluate(model, data, cfg.training.micro_batch_size, cfg.logging.eval_batches, device)
    if final_val is not None and not (cfg.logging.eval_interval and step % cfg.logging.eval_interval == 0):
        metrics.log_eval(step, final_val)
    if step != last_saved:
        save()
    path = checkpoints.finish() or resume_from
    metrics.message(f"done at step {step} ({stop_reason}); checkpoint {path}")
    metrics.close()
    return {"history": metrics.history, "step": step, "checkpoint": path, "val_loss": final_val,
            "train_loss": train_loss, "stop_reason": stop_reason, "resumed_from": resume_from,
            "resumed_step": resumed_step, "split": split, "manifest": manifest, "world_size": world_size,
            "device": device.type, "seconds": time.monotonic() - started}

# --------------------------------------------------------------------------------------------------
# Dry run: the batch arithmetic and memory per rank of a config, without data or a device


def dry_run(cfg: TrainConfig, world_size: int, vocab_size: int | None = None, stream=None) -> dict:
    """What `train` would do with this config on `world_size` ranks, and the memory it would need per
    rank (model.memory.estimate). The vocabulary comes from the manifest when it is there, else
    `vocab_size`, else the model config's (32,000 for the paper's sizes)."""
    from model.memory import estimate, format_estimate

    if vocab_size is None:
        manifest = Path(cfg.data.manifest)
        vocab_size = (int(json.loads(manifest.read_text())["tokenizer"]["vocab_size"]) if manifest.is_file()
                      else CONFIGS[cfg.model.name].vocab_size if cfg.model.name in CONFIGS else 32000)
    args = resolve_model_args(cfg, vocab_size)
    accumulation = gradient_accumulation(cfg, world_size)
    device = torch.device("cuda" if cfg.training.device in ("cuda", "auto") else "cpu")
    param_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(
        cfg.training.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
    report = estimate(args, world_size, cfg.training.micro_batch_size, cfg.data.seq_len, param_dtype,
                      cfg.training.gradient_sync, cfg.training.activation_checkpointing)
    report.update({"model": cfg.model.name, "world_size": world_size, "tokens_per_step": cfg.training.batch_tokens,
                   "micro_batch_size": cfg.training.micro_batch_size, "seq_len": cfg.data.seq_len,
                   "accumulation": accumulation, "vocab_size": vocab_size,
                   "activation_checkpointing": cfg.training.activation_checkpointing})
    print(format_estimate(report), file=stream or sys.stdout)
    return report


# --------------------------------------------------------------------------------------------------
# CLI adapter (beam_jobs/cli.py)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training config YAML (e.g. configs/train/tiny.yaml)")
    parser.add_argument("--data", help="token-shard manifest.json (overrides data.manifest)")
    parser.add_argument("--output", help="run folder for checkpoints, metrics and TensorBoard (overrides output)")
    parser.add_argument("--max-steps", type=int, help="optimiser steps; also the cosine's length (training.max_steps)")
    parser.add_argument("--max-minutes", type=float, help="stop after this much wall-clock time (training.max_minutes)")
    parser.add_argument("--device", help="auto | cpu | cuda (training.device)")
    parser.add_argument("--resume", help="auto | none | a checkpoint folder (checkpoint.resume)")
    parser.add_argument("--force", action="store_true",
                        help="train again from step 0 even if OUTPUT holds a finished run of these shards and config "
                             "(its checkpoints, metrics and TensorBoard events are removed)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override any config key, e.g. --set training.compile=true (repeatable)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print parameters, tokens per step, accumulation and the estimated memory per rank; train nothing")
    parser.add_argument("--world-size", type=int,
                        help="ranks for --dry-run (default: $WORLD_SIZE, else 1)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig.load(args.config)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set wants SECTION.KEY=VALUE, got {item!r}")
        cfg.set(key, value)
    if args.data:
        cfg.data.manifest = args.data
    if args.output:
        cfg.output = args.output
    if args.max_steps is not None:
        cfg.training.max_steps = args.max_steps
    if args.max_minutes is not None:
        cfg.training.max_minutes = args.max_minutes
    if args.device:
        cfg.training.device = args.device
    if args.resume:
        cfg.checkpoint.resume = args.resume
    return cfg


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    if beam_args:
        raise ValueError(f"train is not a Beam job and takes no pipeline options; unknown arguments: {' '.join(beam_args)}")
    cfg = config_from_args(args)
    if args.dry_run:
        dry_run(cfg, args.world_size or int(os.environ.get("WORLD_SIZE", "1")))
        return 0
    result = train(cfg, force=args.force)
    if result is None and int(os.environ.get("RANK", "0")) == 0:
        print(f"{cfg.output}: up to date (a finished run of the same shards and config); --force trains again")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m model.train")
    add_arguments(parser)
    sys.exit(run(*parser.parse_known_args()))
