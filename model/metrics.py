"""Training metrics to the terminal and TensorBoard: loss, learning rate, tokens/s, MFU, memory.

MFU (model FLOPs utilisation, PaLM appendix B) = achieved model FLOP/s / the hardware's peak, where
the model's FLOPs per token are `model.llama.flops_per_token` (6N + 12·L·d·T) and the peak is the
device's dense bf16 tensor-core rate. Recomputation (activation checkpointing) is not counted: MFU
measures useful work only.
"""
from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path

import torch

# Dense (no sparsity) bf16 peaks from the vendors' data sheets, FLOP/s. Matched against
# torch.cuda.get_device_name(); first match wins, so the more specific names come first.
PEAK_BF16_FLOPS: list[tuple[str, float]] = [
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A10G", 125e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("RTX 4090", 165e12),
    ("RTX 3090", 71e12),
]


def peak_flops(device: torch.device) -> float | None:
    """The device's bf16 dense peak, or None where unknown (CPUs, unlisted GPUs): MFU is then not reported."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def memory_gib(device: torch.device) -> float:
    """Peak memory: CUDA allocator's peak on a GPU, the process's peak resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class MetricsLogger:
    """Throughput is measured between log lines, over all ranks' tokens; only rank 0 writes."""

    def __init__(self, output: Path | None, flops_per_token: float, device: torch.device, world_size: int,
                 tensorboard: bool = True, enabled: bool = True, peak: float | None = None, stream=sys.stdout,
                 clock=time.perf_counter):
        self.flops_per_token, self.device, self.world_size = flops_per_token, device, world_size
        self.peak = peak if peak is not None else peak_flops(device)
        self.enabled, self.stream = enabled, stream
        self.writer, self.jsonl = None, None
        if enabled and output is not None:
            output.mkdir(parents=True, exist_ok=True)
            self.jsonl = open(output / "metrics.jsonl", "a")  # one JSON record per log line, for plots and reports
        if enabled and tensorboard and output is not None:
            from torch.utils.tensorboard import SummaryWriter  # imported late: it loads tensorboard
            self.writer = SummaryWriter(log_dir=str(output / "tensorboard"))
        self.clock = clock
        self._since, self._tokens = clock(), 0
        self.history: list[dict] = []

    def count_tokens(self, tokens: int) -> None:
        """Tokens processed by all ranks since the last log line."""
        self._tokens += tokens

    def reset_clock(self) -> None:
        """Restart the throughput window (after evaluation or checkpointing, which are not training)."""
        self._since, self._tokens = self.clock(), 0

    def log_train(self, step: int, loss: float, lr: float, grad_norm: float) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elapsed = self.clock() - self._since
        tokens_per_s = self._tokens / elapsed if elapsed > 0 else 0.0
        record = {"step": step, "loss": loss, "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_s,
                  "memory_gib": memory_gib(self.device)}
        if self.peak:
            record["mfu"] = tokens_per_s * self.flops_per_token / (self.peak * self.world_size)
        self.history.append(record)
        self.reset_clock()
        if not self.enabled:
            return record
        self._write_jsonl(record)
        mfu = f"  mfu {100 * record['mfu']:5.1f}%" if "mfu" in record else ""
        print(f"step {step:>7}  loss {loss:7.4f}  lr {lr:.3e}  grad_norm {grad_norm:7.3f}  "
              f"{tokens_per_s:10,.0f} tok/s{mfu}  mem {record['memory_gib']:.2f} GiB", file=self.stream, flush=True)
        if self.writer:
            for key in ("loss", "lr", "grad_norm", "tokens_per_s", "mfu", "memory_gib"):
                if key in record:
                    self.writer.add_scalar(f"train/{key}", record[key], step)
        return record

    def log_eval(self, step: int, loss: float) -> None:
        self.history.append({"step": step, "val_loss": loss})
        if not self.enabled:
            return
        self._write_jsonl(self.history[-1])
        print(f"step {step:>7}  val_loss {loss:7.4f}  val_ppl {math.exp(min(loss, 50)):.2f}", file=self.stream, flush=True)
        if self.writer:
            self.writer.add_scalar("val/loss", loss, step)

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def _write_jsonl(self, record: dict) -> None:
        if self.jsonl:
            self.jsonl.write(json.dumps(record) + "\n")
            self.jsonl.flush()

    def close(self) -> None:
        if self.writer:
            self.writer.close()
        if self.jsonl:
            self.jsonl.close()
