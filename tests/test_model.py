"""The LLaMA model: the paper's parameter counts, its rotary embeddings against the reference code,
causality, and the pieces the architecture prescribes."""
from __future__ import annotations

import pytest
import torch

from model.llama import CONFIGS, ModelArgs, RMSNorm, Transformer, apply_rotary, count_params, flops_per_token, rotary_tables

# The released LLaMA-1 checkpoints' parameter counts.
PAPER_PARAMS = {"7B": 6_738_415_616, "13B": 13_015_864_320, "33B": 32_528_943_616, "65B": 65_285_660_672}
PAPER_SHAPES = {"7B": (4096, 32, 32), "13B": (5120, 40, 40), "33B": (6656, 52, 60), "65B": (8192, 64, 80)}  # Table 2


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("name", list(PAPER_PARAMS))
def test_paper_configs_have_the_released_parameter_counts(name):
    args = CONFIGS[name]
    assert (args.dim, args.n_heads, args.n_layers) == PAPER_SHAPES[name]
    assert (args.vocab_size, args.multiple_of, args.norm_eps, args.rope_theta) == (32000, 256, 1e-6, 10000.0)
    with torch.device("meta"):  # shapes only: no memory for 65B parameters
        model = Transformer(args)
    assert model.num_params() == PAPER_PARAMS[name]
    assert count_params(args) == PAPER_PARAMS[name]


def test_swiglu_hidden_size_is_two_thirds_of_4d_rounded_up():
    assert CONFIGS["7B"].ffn_hidden_dim == 11008
    assert CONFIGS["13B"].ffn_hidden_dim == 13824
    assert CONFIGS["65B"].ffn_hidden_dim == 22016


def test_small_configs_span_tens_of_millions_to_a_billion():
    counts = {name: count_params(CONFIGS[name]) for name in ("20M", "125M", "350M", "1B")}
    assert 15e6 < counts["20M"] < 30e6
    assert 100e6 < counts["125M"] < 150e6
    assert 300e6 < counts["350M"] < 400e6
    assert 0.9e9 < counts["1B"] < 1.2e9


def test_flops_per_token_is_6n_plus_attention():
    args = CONFIGS["7B"]
    n = 6_738_415_616 - 32000 * 4096  # without the embedding lookup
    assert flops_per_token(args, 2048) == 6 * n + 12 * 32 * 4096 * 2048


def _reference_rotary(xq: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
    """Meta's llama/model.py: precompute_freqs_cis + apply_rotary_emb (complex multiplication)."""
    seq = xq.shape[1]
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim))
    freqs_cis = torch.polar(torch.ones(seq, head_dim // 2), torch.outer(torch.arange(seq).float(), freqs))
    xq_ = torch.view_as_complex(xq.float().reshape(*xq.shape[:-1], -1, 2))
    return torch.view_as_real(xq_ * freqs_cis[None, :, None, :]).flatten(3).type_as(xq)


def test_rotary_matches_the_reference_complex_form():
    torch.manual_seed(0)
    x = torch.randn(2, 37, 4, 64)
    cos, sin = rotary_tables(64, 128, 10000.0)
    ours = apply_rotary(x, cos[:37], sin[:37])
    torch.testing.assert_close(ours, _reference_rotary(x, 64, 10000.0), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours[:, 1:], x[:, 1:])  # it does rotate (position 0 is the identity)


def test_rmsnorm_matches_its_definition():
    norm = RMSNorm(8, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 9.0))
    x = torch.randn(3, 8)
    expected = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * torch.arange(1.0, 9.0)
    torch.testing.assert_close(norm(x), expected)


def test_no_biases_and_untied_output():
    model = Transformer(CONFIGS["tiny"].with_overrides(vocab_size=300))
    assert all(not name.endswith("bias") for name, _ in model.named_parameters())
    assert model.output.weight.data_ptr() != model.tok_embeddings.weight.data_ptr()
    names = {name for name, _ in model.named_parameters()}
    assert {"layers.0.attention.wq.weight", "layers.0.feed_forward.w3.weight", "layers.3.ffn_norm.weight"} <= names


def test_attention_is_causal():
    torch.manual_seed(0)
    model = Transformer(CONFIGS["tiny"].with_overrides(vocab_size=300)).eval()
    tokens = torch.randint(0, 300, (1, 32))
    changed = tokens.clone()
    changed[0, 20:] = (changed[0, 20:] + 7) % 300
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    torch.testing.assert_close(a[:, :20], b[:, :20])
    assert not torch.allclose(a[:, 20:], b[:, 20:])


def test_initial_loss_is_near_uniform_and_init_is_seeded():
    args = CONFIGS["tiny"].with_overrides(vocab_size=500)
    a, b = Transformer(args), Transformer(args)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    b.init_weights(seed=1)
    assert not torch.equal(a.layers[0].attention.wq.weight, b.layers[0].attention.wq.weight)
    tokens = torch.randint(0, 500, (4, 64))
    loss = a(tokens[:, :-1], tokens[:, 1:]).item()
    assert abs(loss - torch.log(torch.tensor(500.0)).item()) < 0.1


def test_sequence_longer_than_the_rotary_table_is_an_error():
    model = Transformer(ModelArgs(dim=32, n_layers=1, n_heads=2, vocab_size=10, multiple_of=8, max_seq_len=16))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_bf16_flash_attention_forward_on_gpu_is_close_to_fp32():
    torch.manual_seed(0)
    model = Transformer(CONFIGS["tiny"].with_overrides(vocab_size=1000)).cuda()
    tokens = torch.randint(0, 1000, (2, 256), device="cuda")
    with torch.no_grad():
        full = model(tokens[:, :-1], tokens[:, 1:])
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = model(tokens[:, :-1], tokens[:, 1:])
    assert abs(full.item() - half.item()) < 0.05
