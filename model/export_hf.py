"""`corpusmill export-hf CHECKPOINT OUT`: a training checkpoint as a Hugging Face Llama model.

Writes `config.json` (LlamaForCausalLM) and `model.safetensors` with HF's parameter names, so that
`LlamaForCausalLM.from_pretrained(OUT)` loads it; transformers is not needed to export.

The one non-renaming step is the rotary layout. The LLaMA reference code (and model/llama.py) rotates
interleaved pairs (x0, x1), (x2, x3), ... of each head; HF's Llama rotates the two halves
(x_i, x_{i + head_dim/2}) ("rotate_half"). Permuting the output rows of wq and wk within each head,
taking the even dimensions first and then the odd ones, turns one into the other: attention scores,
and so the logits, are unchanged. It is the `permute` of HF's convert_llama_weights_to_hf.py.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from model.checkpoint import full_weights
from model.llama import ModelArgs


def permute_for_rotate_half(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows of a (n_heads * head_dim, dim) query/key projection, from interleaved to half-split order."""
    rows, cols = weight.shape
    return weight.view(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def hf_config(args: ModelArgs, bos_id: int | None, eos_id: int | None, dtype: str) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.dim,
        "intermediate_size": args.ffn_hidden_dim,
        "num_hidden_layers": args.n_layers,
        "num_attention_heads": args.n_heads,
        "num_key_value_heads": args.n_heads,
        "head_dim": args.head_dim,
        "vocab_size": args.vocab_size,
        "max_position_embeddings": args.max_seq_len,
        "hidden_act": "silu",
        "rms_norm_eps": args.norm_eps,
        "rope_theta": args.rope_theta,  # transformers < 5
        "rope_parameters": {"rope_type": "default", "rope_theta": args.rope_theta},  # transformers >= 5
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": dtype,
    }


def to_hf_state_dict(state: dict[str, torch.Tensor], args: ModelArgs) -> dict[str, torch.Tensor]:
    hf = {
        "model.embed_tokens.weight": state["tok_embeddings.weight"],
        "model.norm.weight": state["norm.weight"],
        "lm_head.weight": state["output.weight"],
    }
    for i in range(args.n_layers):
        ours, theirs = f"layers.{i}.", f"model.layers.{i}."
        hf[theirs + "self_attn.q_proj.weight"] = permute_for_rotate_half(state[ours + "attention.wq.weight"], args.n_heads)
        hf[theirs + "self_attn.k_proj.weight"] = permute_for_rotate_half(state[ours + "attention.wk.weight"], args.n_heads)
        hf[theirs + "self_attn.v_proj.weight"] = state[ours + "attention.wv.weight"]
        hf[theirs + "self_attn.o_proj.weight"] = state[ours + "attention.wo.weight"]
        hf[theirs + "mlp.gate_proj.weight"] = state[ours + "feed_forward.w1.weight"]
        hf[theirs + "mlp.down_proj.weight"] = state[ours + "feed_forward.w2.weight"]
        hf[theirs + "mlp.up_proj.weight"] = state[ours + "feed_forward.w3.weight"]
        hf[theirs + "input_layernorm.weight"] = state[ours + "attention_norm.weight"]
        hf[theirs + "post_attention_layernorm.weight"] = state[ours + "ffn_norm.weight"]
    return hf


def export(checkpoint: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    """Export a training checkpoint (checkpoints/step-N, or a run's checkpoints/ for the newest
    complete one), read from its shards on this one process (model.checkpoint.full_weights)."""
    out = Path(out)
    weights, run_config = full_weights(checkpoint)
    args = ModelArgs(**run_config["model_args"])
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    state = to_hf_state_dict(weights, args)
    state = {k: v.to(torch_dtype).contiguous() for k, v in state.items()}
    tokenizer = _tokenizer_info(run_config)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    config = hf_config(args, tokenizer.get("bos_id"), tokenizer.get("eos_id"), dtype)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def _tokenizer_info(run_config: dict) -> dict:
    """BOS/EOS ids from the training shards' manifest, where it is still there."""
    manifest = Path(run_config.get("train_config", {}).get("data", {}).get("manifest", ""))
    if manifest.is_file():
        return json.loads(manifest.read_text()).get("tokenizer", {})
    return {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a checkpoint folder (RUN/checkpoints/step-N) or RUN/checkpoints for the latest")
    parser.add_argument("out", help="folder for config.json and model.safetensors")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])


def run(args: argparse.Namespace, beam_args: list[str]) -> int:
    if beam_args:
        raise ValueError(f"export-hf takes no pipeline options; unknown arguments: {' '.join(beam_args)}")
    out = export(args.checkpoint, args.out, args.dtype)
    print(f"wrote {out / 'config.json'} and {out / 'model.safetensors'}")
    return 0
