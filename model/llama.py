"""The LLaMA-1 model (Touvron et al., 2023), readable top to bottom.

Differences from the original Transformer, all as in the paper and Meta's reference code:
- pre-normalisation: each sub-layer normalises its *input* with RMSNorm (eps 1e-6, as the released params);
- SwiGLU feed-forward, hidden size 2/3 * 4d rounded up to a multiple of `multiple_of` (4096 -> 11008);
- rotary position embeddings (theta 10000) on queries and keys, rotating *interleaved* pairs
  (x0, x1), (x2, x3), ... as the reference code's complex multiplication does;
- no biases anywhere, and an output projection that is not tied to the token embedding.

Attention goes through `scaled_dot_product_attention` with `is_causal=True`, which picks the flash
kernel on a GPU under bf16. Parallelism, mixed precision, activation checkpointing and compilation are
applied from outside, by the trainer (model/train.py `build_model`), as torchtitan does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor


@dataclass(frozen=True)
class ModelArgs:
    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    vocab_size: int = 32000
    multiple_of: int = 256  # SwiGLU hidden size is rounded up to a multiple of this
    norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_seq_len: int = 2048  # length of the precomputed rotary table; longer inputs are an error

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        # 2/3 of the usual 4d keeps the parameter count of a 4d two-matrix MLP with three matrices.
        hidden = int(2 * (4 * self.dim) / 3)
        return self.multiple_of * ((hidden + self.multiple_of - 1) // self.multiple_of)

    def with_overrides(self, **overrides) -> "ModelArgs":
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown model argument(s): {', '.join(sorted(unknown))}")
        return replace(self, **overrides)


# The paper's Table 2 (dim, heads, layers), and small configs for experiments. Parameter counts are
# with the 32,000-token vocabulary; the trainer replaces vocab_size with the tokenizer's.
CONFIGS: dict[str, ModelArgs] = {
    "tiny": ModelArgs(dim=128, n_layers=4, n_heads=4, multiple_of=32, max_seq_len=512),       # 8.9M (1.0M non-embedding)
    "20M": ModelArgs(dim=256, n_layers=8, n_heads=8, multiple_of=64, max_seq_len=1024),       # 23M
    "125M": ModelArgs(dim=768, n_layers=12, n_heads=12, multiple_of=256, max_seq_len=2048),   # 134M
    "350M": ModelArgs(dim=1024, n_layers=24, n_heads=16, multiple_of=256, max_seq_len=2048),  # 374M
    "1B": ModelArgs(dim=2048, n_layers=18, n_heads=16, multiple_of=256, max_seq_len=2048),    # 1.06B
    "7B": ModelArgs(dim=4096, n_layers=32, n_heads=32),
    "13B": ModelArgs(dim=5120, n_layers=40, n_heads=40),
    "33B": ModelArgs(dim=6656, n_layers=60, n_heads=52),
    "65B": ModelArgs(dim=8192, n_layers=80, n_heads=64),
}


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 (bf16 loses the mean of squares), scale in the input's dtype, as the reference.
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rotary_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of position * theta^(-2i/head_dim), each (max_seq_len, head_dim // 2), float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(max_seq_len).float(), inv_freq)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the interleaved pairs (x[2i], x[2i+1]) of x (batch, seq, heads, head_dim) by the angles.

    The same arithmetic as the reference's `view_as_complex(x) * freqs_cis`, written with real
    tensors so that torch.compile and FSDP see ordinary ops.
    """
    pairs = x.float().unflatten(-1, (-1, 2))  # (batch, seq, heads, head_dim/2, 2)
    x_even, x_odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    rotated = torch.stack((x_even * cos - x_odd * sin, x_even * sin + x_odd * cos), dim=-1)
    return rotated.flatten(-2).type_as(x)


class Attention(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads, self.head_dim = args.n_heads, args.head_dim
        self.wq = nn.Linear(args.dim, args.dim, bias=False)
        self.wk = nn.Linear(args.dim, args.dim, bias=False)
        self.wv = nn.Linear(args.dim, args.dim, bias=False)
        self.wo = nn.Linear(args.dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        q = self.wq(x).view(batch, seq, self.n_heads, self.head_dim)
        k = self.wk(x).view(batch, seq, self.n_heads, self.head_dim)
        v = self.wv(x).view(batch, seq, self.n_heads, self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        # SDPA wants (batch, heads, seq, head_dim).
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        return self.wo(out.transpose(1, 2).reshape(batch, seq, -1))


class FeedForward(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        hidden = args.ffn_hidden_dim
        self.w1 = nn.Linear(args.dim, hidden, bias=False)  # gate
        self.w2 = nn.Linear(hidden, args.dim, bias=False)  # down
        self.w3 = nn.Linear(args.dim, hidden, bias=False)  # up

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.attention = Attention(args)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        self.feed_forward = FeedForward(args)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.attention_norm(x), cos, sin)
        return h + self.feed_forward(self.ffn_norm(h))


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        cos, sin = rotary_tables(args.head_dim, args.max_seq_len, args.rope_theta)
        # Not persistent: derived from args, so checkpoints hold only learned weights.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.init_weights(seed=0)

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """Normal(0, 0.02) for matrices, ones for norms; the projections that write into the residual
        stream (wo, w2) are scaled by 1/sqrt(2 * n_layers) so its variance does not grow with depth."""
        if self.rope_cos.device.type == "meta":
            return  # built on the meta device to be sharded first; called again after `to_empty`
        # Values are drawn on the CPU from one generator in a fixed order, so a model has the same
        # weights on any device and however it is sharded (FSDP2 copies in each rank's shard).
        generator = torch.Generator(device="cpu").manual_seed(0 if seed is None else seed)
        residual_std = 0.02 / math.sqrt(2 * self.args.n_layers)
        for name, param in self.named_parameters():
            if param.dim() == 1:
                values = torch.ones(param.shape)
            else:
                std = residual_std if name.endswith(("wo.weight", "w2.weight")) else 0.02
                values = torch.empty(param.shape).normal_(0.0, std, generator=generator)
            if isinstance(param, DTensor):
                values = distribute_tensor(values, param.device_mesh, param.placements)
            param.copy_(values)
        cos, sin = rotary_tables(self.args.head_dim, self.args.max_seq_len, self.args.rope_theta)
        self.rope_cos.copy_(cos)
        self.rope_sin.copy_(sin)

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (batch, seq, vocab) or, given targets, the mean cross-entropy (float32)."""
        seq = tokens.shape[1]
        if seq > self.args.max_seq_len:
            raise ValueError(f"sequence of {seq} tokens is longer than max_seq_len {self.args.max_seq_len}")
        cos, sin = self.rope_cos[:seq], self.rope_sin[:seq]
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h, cos, sin)
        logits = self.output(self.norm(h))
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    def num_params(self, exclude_embedding: bool = False) -> int:
        total = sum(p.numel() for p in self.parameters())
        return total - self.tok_embeddings.weight.numel() if exclude_embedding else total


def count_params(args: ModelArgs) -> int:
    """Parameters of a model with these args, by formula (tested against the built model)."""
    d, h, layers = args.dim, args.ffn_hidden_dim, args.n_layers
    per_layer = 4 * d * d + 3 * d * h + 2 * d  # wq wk wv wo, w1 w2 w3, two norms
    return layers * per_layer + 2 * args.vocab_size * d + d  # embedding, output, final norm


def flops_per_token(args: ModelArgs, seq_len: int) -> float:
    """Training FLOPs per token: 6N + 12·L·d·T (PaLM, appendix B).

    N counts the parameters that take part in matrix multiplies, i.e. all but the embedding table
    (a lookup); 12·L·d·T is the attention score and value products, forward and backward. Causal
    masking is not discounted, as is usual for MFU.
    """
    n_matmul = count_params(args) - args.vocab_size * args.dim
    return 6 * n_matmul + 12 * args.n_layers * args.dim * seq_len
