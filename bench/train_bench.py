"""Training throughput and MFU of corpusmill's LLaMA on one GPU, against transformers' LlamaForCausalLM.

    python bench/train_bench.py                      # the ~1B config, seq 2048, bf16, on an H100
    python bench/train_bench.py --micro-batch 4      # if 8 x 2048 does not fit

Both models get the same shapes, the same tokens and the same training step: fp32 master weights,
bf16 compute, forward, float32 cross-entropy, backward, gradient clipping at 1.0 and a fused AdamW
step. corpusmill's model is built exactly as `corpusmill train` builds it on one GPU
(model.train.build_model: an FSDP2 world of one with bf16 parameters and fp32 reduction, each block
compiled); transformers' runs as it ships, under bf16 autocast, `attn_implementation="sdpa"`, the
loss taken from its logits. MFU counts 6N + 12·L·d·T FLOPs per
token (model.llama.flops_per_token) against the GPU's dense bf16 peak (989 TFLOP/s for an H100 SXM).
Prints one JSON line, then the ratio.

Without CUDA it says so and exits 0 (`--device cpu --config tiny --seq-len 128` smoke-tests the script).
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from model.llama import CONFIGS, ModelArgs, count_params, flops_per_token  # noqa: E402
from model.metrics import peak_flops  # noqa: E402
from model.train import TrainingConfig, build_model, build_optimizer, setup_distributed  # noqa: E402
from model.train import OptimizerConfig  # noqa: E402


def hf_llama(args: ModelArgs, device: torch.device) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=args.vocab_size, hidden_size=args.dim, intermediate_size=args.ffn_hidden_dim,
        num_hidden_layers=args.n_layers, num_attention_heads=args.n_heads, num_key_value_heads=args.n_heads,
        max_position_embeddings=args.max_seq_len, rms_norm_eps=args.norm_eps, rope_theta=args.rope_theta,
        tie_word_embeddings=False, attention_bias=False, mlp_bias=False, use_cache=False,
        attn_implementation="sdpa",
    )
    with torch.device(device):
        model = LlamaForCausalLM(config)
    return model.float().train()


def hf_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=inputs).logits
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())  # as model.llama does


def measure(model: torch.nn.Module, loss_of, tokens: torch.Tensor, steps: int, warmup: int,
            device: torch.device, autocast: torch.dtype | None) -> dict:
    """Tokens/s of full training steps (after `warmup` untimed ones: compilation, allocator, autotune)."""
    optimizer = build_optimizer(model, OptimizerConfig(), device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step() -> torch.Tensor:
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            loss = loss_of(model, inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(steps):
        loss = step()
    final_loss = loss.item()  # waits for the GPU
    elapsed = time.perf_counter() - started
    result = {"tokens_per_s": steps * inputs.numel() / elapsed, "step_s": elapsed / steps, "loss": final_loss}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del optimizer
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="1B", choices=list(CONFIGS))
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--hf-steps", type=int, help="timed steps of the transformers model (default: --steps)")
    parser.add_argument("--no-compile", action="store_true", help="corpusmill's model without torch.compile")
    parser.add_argument("--activation-checkpointing", default="none", choices=["none", "full", "selective"])
    parser.add_argument("--no-transformers", action="store_true", help="skip the LlamaForCausalLM comparison")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu, for a smoke test of this script")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, where model/metrics.py does not know it")
    parser.add_argument("--json-out", help="also write the JSON result to this file")
    opts = parser.parse_args()

    device = torch.device(opts.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("train_bench: no CUDA GPU here; nothing measured. Run it on an H100: python bench/train_bench.py")
        return 0
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 bits outside autocast (norm stats, loss); both models
    args = CONFIGS[opts.config].with_overrides(max_seq_len=max(opts.seq_len, CONFIGS[opts.config].max_seq_len))
    tokens = torch.randint(0, args.vocab_size, (opts.micro_batch, opts.seq_len + 1),
                           generator=torch.Generator().manual_seed(0)).to(device)
    peak = opts.peak_tflops * 1e12 if opts.peak_tflops else peak_flops(device) if device.type == "cuda" else None
    per_token = flops_per_token(args, opts.seq_len)

    def with_mfu(result: dict) -> dict:
        if peak:
            result["mfu"] = result["tokens_per_s"] * per_token / peak
        return result

    training = TrainingConfig(compile=not opts.no_compile and device.type == "cuda", dtype="bf16" if dtype == torch.bfloat16 else "fp32",
                              activation_checkpointing=opts.activation_checkpointing)
    setup_distributed(device)  # an FSDP2 world of one, as `corpusmill train` on one GPU
    model = build_model(args, training, device)
    ours = with_mfu(measure(model, lambda m, x, y: m(x, y), tokens, opts.steps, opts.warmup, device, None))
    del model
    torch._dynamo.reset()  # compiled graphs keep the model's tensors alive
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

    report = {
        "bench": "train", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "config": opts.config, "params": count_params(args), "seq_len": opts.seq_len,
        "micro_batch": opts.micro_batch, "dtype": str(dtype).removeprefix("torch."), "compile": training.compile,
        "activation_checkpointing": opts.activation_checkpointing, "flops_per_token": per_token,
        "peak_flops": peak, "corpusmill": ours,
    }
    if not opts.no_transformers:
        try:
            import transformers
        except ImportError:
            print("train_bench: transformers is not installed (pip install 'corpusmill[hf]'); skipping the comparison")
        else:
            hf = hf_llama(args, device)
            hf_params = sum(p.numel() for p in hf.parameters())
            if hf_params != count_params(args):  # the comparison is only fair for the same model
                raise SystemExit(f"train_bench: LlamaForCausalLM has {hf_params:,} parameters, ours {count_params(args):,}")
            report["transformers_version"] = transformers.__version__
            report["transformers"] = with_mfu(measure(hf, hf_loss, tokens, opts.hf_steps or opts.steps, opts.warmup, device,
                                                      dtype if dtype != torch.float32 else None))
            report["ratio"] = ours["tokens_per_s"] / report["transformers"]["tokens_per_s"]
    print(json.dumps(report))
    if opts.json_out:
        Path(opts.json_out).write_text(json.dumps(report, indent=2) + "\n")
    summary = f"corpusmill {ours['tokens_per_s']:,.0f} tok/s"
    if "mfu" in ours:
        summary += f", MFU {100 * ours['mfu']:.1f}% (goal >= 45%)"
    if "ratio" in report:
        summary += f"; transformers {report['transformers']['tokens_per_s']:,.0f} tok/s; ratio {report['ratio']:.2f}x (goal >= 1.3x)"
    print(summary)
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
