"""Export to the Hugging Face Llama format: the rotary permutation (always), and equal logits in
transformers' LlamaForCausalLM (only where the optional `hf` extra, transformers, is installed)."""
from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file

from model.export_hf import export, permute_for_rotate_half
from model.llama import CONFIGS, Transformer, apply_rotary, rotary_tables


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _rotate_half_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF Llama's apply_rotary_pos_emb: rotate the two halves of each head."""
    cos, sin = torch.cat([cos, cos], -1)[None, :, None, :], torch.cat([sin, sin], -1)[None, :, None, :]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def test_permutation_turns_interleaved_rotary_into_rotate_half():
    torch.manual_seed(0)
    n_heads, head_dim, dim, seq = 4, 16, 64, 10
    wq, wk, x = torch.randn(dim, dim), torch.randn(dim, dim), torch.randn(1, seq, dim)
    cos, sin = rotary_tables(head_dim, seq, 10000.0)

    def scores(q, k):
        return torch.einsum("bqhd,bkhd->bhqk", q, k)

    heads = (1, seq, n_heads, head_dim)
    ours = scores(apply_rotary((x @ wq.T).view(heads), cos, sin), apply_rotary((x @ wk.T).view(heads), cos, sin))
    hf_q = (x @ permute_for_rotate_half(wq, n_heads).T).view(heads)
    hf_k = (x @ permute_for_rotate_half(wk, n_heads).T).view(heads)
    theirs = scores(_rotate_half_rotary(hf_q, cos, sin), _rotate_half_rotary(hf_k, cos, sin))
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    # Without the permutation the scores differ: the test can tell.
    unpermuted = scores(_rotate_half_rotary((x @ wq.T).view(heads), cos, sin),
                        _rotate_half_rotary((x @ wk.T).view(heads), cos, sin))
    assert not torch.allclose(ours, unpermuted, atol=1e-2)


def _checkpoint(tmp_path: Path) -> tuple[Transformer, Path]:
    """A checkpoint folder in the trainer's layout (a DCP checkpoint of the weights, config.json,
    checkpoints/latest), of a tiny model with random (seeded) weights."""
    args = CONFIGS["tiny"].with_overrides(vocab_size=300, max_seq_len=64)
    model = Transformer(args)
    model.init_weights(seed=3)
    with torch.no_grad():  # norms away from 1, so a swapped norm would show
        for name, param in model.named_parameters():
            if param.dim() == 1:
                param.uniform_(0.5, 1.5)
    folder = tmp_path / "checkpoints" / "step-0000010"
    with warnings.catch_warnings():  # DCP notes that it writes on one process, as meant here
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.save({"model": model.state_dict()}, checkpoint_id=folder, no_dist=True)
    (folder / "config.json").write_text(json.dumps({"model_args": asdict(args), "train_config": {}}))
    (folder / "train_state.json").write_text(json.dumps({"step": 10}))
    (tmp_path / "checkpoints" / "latest").write_text("step-0000010\n")
    return model, tmp_path / "checkpoints"


def test_export_writes_hf_names_and_config(tmp_path):
    model, checkpoints = _checkpoint(tmp_path)
    out = export(checkpoints, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["tie_word_embeddings"] is False
    assert (config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]) == (128, 352, 4)
    assert config["rms_norm_eps"] == 1e-6 and config["rope_theta"] == 10000.0
    state = load_file(out / "model.safetensors")
    assert len(state) == len(model.state_dict())
    assert torch.equal(state["model.layers.2.mlp.down_proj.weight"], model.layers[2].feed_forward.w2.weight)
    assert torch.equal(state["lm_head.weight"], model.output.weight)


def test_export_hf_command(tmp_path, capsys):
    from beam_jobs.cli import main

    _, checkpoints = _checkpoint(tmp_path)
    assert main(["export-hf", str(checkpoints / "step-0000010"), str(tmp_path / "hf"), "--dtype", "bfloat16"]) == 0
    assert load_file(tmp_path / "hf" / "model.safetensors")["lm_head.weight"].dtype == torch.bfloat16
    assert main(["export-hf", str(tmp_path / "nowhere"), str(tmp_path / "hf2")]) == 2
    assert "not a checkpoint (no .metadata)" in capsys.readouterr().err


def test_full_weights_as_one_safetensors_file(tmp_path):
    from model.checkpoint import main

    model, checkpoints = _checkpoint(tmp_path)
    assert main(["to-safetensors", str(checkpoints), str(tmp_path / "weights.safetensors")]) == 0
    weights = load_file(tmp_path / "weights.safetensors")
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())


def test_logits_equal_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the optional `hf` extra (transformers) is not installed")
    model, checkpoints = _checkpoint(tmp_path)
    out = export(checkpoints, tmp_path / "hf")
    hf_model = transformers.LlamaForCausalLM.from_pretrained(out, attn_implementation="sdpa")
    hf_model.eval()
    model.eval()
    tokens = torch.randint(0, 300, (2, 50), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(tokens)
        theirs = hf_model(tokens).logits
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
