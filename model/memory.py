"""Memory per rank of a training run: the estimate behind `corpusmill train --dry-run`, and a meter of
the memory tensors really hold, to check the estimate against (tests/test_trainer_memory.py).

The estimate counts what this trainer keeps (model/train.py: FSDP2 over `world` ranks, fp32 master
weights, gradients and AdamW state sharded; parameters gathered in the compute dtype):

- parameters: the fp32 shard, 4 N / world bytes;
- gradients: the fp32 shard, 4 N / world; with gradient_sync=last_micro_step (FSDP2's no-sync
  accumulation) also the unsharded fp32 gradient of the whole model, 4 N, on every rank;
- optimiser state: AdamW's two fp32 moments, 8 N / world;
- gathered parameters: the root unit (embedding, final norm, output: never resharded, as FSDP2 does
  for the root) and two blocks (the one computing and the one prefetched) in the compute dtype, and
  one block's unsharded fp32 gradient before its reduce-scatter;
- activations of one micro-batch: the tensors autograd saves, counted from model/llama.py per token
  and layer (p the compute dtype's bytes, 4 for the fp32 copies the norms and rotary make, h the
  SwiGLU width): the two norms 2 (4 + 2p) d (the fp32 input, the normalised input, the scaled
  output), attention 4 p d (rotated q and k, v, the attention output) plus 4 bytes a head (its
  log-sum-exp), SwiGLU 4 p h; the output head 4 V (fp32 log-softmax) plus the final norm. Full checkpointing keeps
  only each block's input (p d) and recomputes one block at a time; selective keeps the input, the
  outputs of wq, wv, w1, w2 and attention. During the backward pass the logits' gradient (4 V per
  token) and one block's recomputed activations are live on top.
"""
from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from model.llama import ModelArgs, count_params

GIB = 2**30


def block_params(args: ModelArgs) -> int:
    d = args.dim
    return 4 * d * d + 3 * d * args.ffn_hidden_dim + 2 * d


def activation_bytes_per_token(args: ModelArgs, param_bytes: int, checkpointing: str) -> dict:
    """Bytes autograd keeps per token of a micro-batch: per block (saved until its backward) and at
    the head; `recompute` is what one block holds while it is recomputed in the backward pass."""
    d, h, p, f = args.dim, args.ffn_hidden_dim, param_bytes, 4
    full_block = 2 * (f + 2 * p) * d + 4 * p * d + f * args.n_heads + 4 * p * h
    saved = {"none": full_block, "full": p * d, "selective": 5 * p * d + f * args.n_heads + p * h}[checkpointing]
    head = f * args.vocab_size + (f + 2 * p) * d
    return {"block": saved, "head": head, "recompute": 0 if checkpointing == "none" else full_block,
            "logits_grad": f * args.vocab_size}


def estimate(args: ModelArgs, world: int, micro_batch: int, seq_len: int, param_dtype: torch.dtype,
             gradient_sync: str = "every_micro_step", checkpointing: str = "none") -> dict:
    """Estimated bytes per rank, by part, and the peak (all parts at once, as during a backward pass)."""
    n = count_params(args)
    p = torch.finfo(param_dtype).bits // 8
    root = 2 * args.vocab_size * args.dim + args.dim
    tokens = micro_batch * seq_len
    act = activation_bytes_per_token(args, p, checkpointing)
    parts = {
        "parameters": 4 * n / world,
        "gradients": 4 * n / world + (4 * n if gradient_sync == "last_micro_step" else 0),
        "optimizer": 8 * n / world,
        "gathered": p * (root + 2 * block_params(args)) + 4 * block_params(args),
        "activations": tokens * (act["block"] * args.n_layers + act["head"]),
        "backward_transient": tokens * (act["logits_grad"] + act["recompute"]),
    }
    return {"params": n, "bytes": parts, "peak_bytes": sum(parts.values()),
            "activations_by_checkpointing": {
                mode: tokens * (a["block"] * args.n_layers + a["head"] + a["recompute"] + a["logits_grad"])
                for mode in ("none", "full", "selective")
                for a in [activation_bytes_per_token(args, p, mode)]}}


def format_estimate(report: dict) -> str:
    b = report["bytes"]
    lines = [
        f"model {report['model']}: {report['params']:,} parameters (vocab {report['vocab_size']:,})",
        f"{report['tokens_per_step']:,} tokens/step = {report['micro_batch_size']} x {report['seq_len']} x "
        f"{report['world_size']} ranks x {report['accumulation']} accumulation",
        "estimated memory per rank (GiB):",
        f"  parameters (fp32 shard)        {b['parameters'] / GIB:9.2f}",
        f"  gradients (fp32)               {b['gradients'] / GIB:9.2f}",
        f"  optimizer state (AdamW, fp32)  {b['optimizer'] / GIB:9.2f}",
        f"  gathered parameters            {b['gathered'] / GIB:9.2f}",
        f"  activations + backward ({report['activation_checkpointing']}) {(b['activations'] + b['backward_transient']) / GIB:9.2f}",
    ]
    for mode, value in report["activations_by_checkpointing"].items():
        lines.append(f"    activations with checkpointing={mode:<9} {value / GIB:9.2f}")
    lines.append(f"  peak                           {report['peak_bytes'] / GIB:9.2f}")
    return "\n".join(lines)


class LiveTensorMeter(TorchDispatchMode):
    """Counts the bytes of every tensor storage that ops create while it is active (including FSDP2's
    gathered parameters, which it frees and re-grows with `UntypedStorage.resize_`), until the storage
    is freed. `live` now, `peak` since `reset_peak`. Tensors that existed before entering are not
    counted. Works on any device, the CPU included (where torch keeps no allocator statistics)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._bytes: dict[int, int] = {}

    def reset_peak(self) -> None:
        self.peak = self.live

    def _count(self, storage) -> None:
        key, size = id(storage), storage.nbytes()
        if key not in self._bytes:
            weakref.finalize(storage, self._freed, key)
        self.live += size - self._bytes.get(key, 0)
        self._bytes[key] = size
        self.peak = max(self.peak, self.live)

    def _freed(self, key: int) -> None:
        self.live -= self._bytes.pop(key, 0)

    def __enter__(self):
        resize = self._resize = torch.UntypedStorage.resize_
        meter = self

        def counted_resize(storage, size):
            out = resize(storage, size)
            if storage.device.type != "meta":
                meter._count(storage)
            return out

        torch.UntypedStorage.resize_ = counted_resize
        return super().__enter__()

    def __exit__(self, *exc):
        torch.UntypedStorage.resize_ = self._resize
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                if id(storage) not in self._bytes:
                    self._count(storage)
        return out
