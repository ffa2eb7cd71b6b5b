from __future__ import annotations

import pytest

from tokenizer import spm as spm_lib


def test_saved_model_has_the_llama_trainer_spec_field_for_field(tokenizer_model):
    proto = spm_lib.model_proto(tokenizer_model)
    spec = proto.trainer_spec
    model_type = spec.DESCRIPTOR.fields_by_name["model_type"].enum_type.values_by_number[spec.model_type].name
    assert model_type == "BPE"
    assert spec.vocab_size == 1200  # the flag; LLaMA's 32000 is the default
    expected = {k: v for k, v in spm_lib.LLAMA_TRAINER_SPEC.items() if k not in ("model_type", "vocab_size")}
    for field, value in expected.items():
        got = getattr(spec, field)
        if isinstance(value, float):
            assert got == pytest.approx(value, rel=1e-6), field
        else:
            assert got == value, field
    # The fields the issue names, spelled out.
    assert (spec.character_coverage, spec.split_digits, spec.byte_fallback) == (pytest.approx(0.99995), True, True)
    assert (spec.max_sentencepiece_length, spec.max_sentence_length, spec.shuffle_input_sentence) == (16, 4192, True)
    assert (spec.split_by_unicode_script, spec.split_by_whitespace, spec.split_by_number, spec.allow_whitespace_only_pieces) == (True,) * 4
    assert (spec.unk_id, spec.bos_id, spec.eos_id, spec.pad_id) == (0, 1, 2, -1)
    norm = proto.normalizer_spec
    assert norm.name == "identity" and norm.add_dummy_prefix is True and norm.remove_extra_whitespaces is False
    assert norm.precompiled_charsmap == b""  # identity: no NFKC table


def test_special_and_byte_pieces_sit_at_llama_ids(tokenizer_model):
    proto = spm_lib.model_proto(tokenizer_model)
    types = proto.pieces[0].DESCRIPTOR.fields_by_name["type"].enum_type.values_by_number
    assert len(proto.pieces) == 1200
    assert [(p.piece, types[p.type].name) for p in proto.pieces[:3]] == [("<unk>", "UNKNOWN"), ("<s>", "CONTROL"), ("</s>", "CONTROL")]
    for byte in range(256):
        piece = proto.pieces[3 + byte]
        assert (piece.piece, types[piece.type].name) == (f"<0x{byte:02X}>", "BYTE")
    assert types[proto.pieces[259].type].name == "NORMAL"


def test_numbers_split_into_single_digits(tokenizer_model):
    sp = spm_lib.load(tokenizer_model)
    for text in ["1234567890", "In 2023 the model had 65536 pieces and 3.14159 digits", "x=10000"]:
        pieces = sp.encode(text, out_type=str)
        digit_pieces = [p.lstrip("\u2581") for p in pieces if any(c.isdigit() for c in p)]
        assert digit_pieces and all(len(p) == 1 for p in digit_pieces), pieces


@pytest.mark.parametrize(
    "text",
    [
        "Emoji 🍎🧪👩‍🔬 and flags 🇫🇷",
        "中文和日本語の文章、한국어 텍스트",
        "\tindented\twith\ttabs\n\n\nand blank lines\r\n",
        "   three leading spaces, two trailing  ",
        " ",
        "Ünïcödé combining e\u0301 vs \u00e9, NBSP\u00a0here, zero-width\u200bjoiner",
        "def f(x):\n    return {'k': [1, 2, 3]}  # code",
        "\x00\x01 control bytes \x7f",
    ],
)
def test_decode_round_trips_any_utf8(tokenizer_model, text):
    sp = spm_lib.load(tokenizer_model)
    ids = sp.encode(text)
    assert sp.unk_id() not in ids  # byte fallback: nothing is unknown
    assert sp.decode(ids) == text


def test_vocab_too_small_for_byte_fallback_is_refused(tmp_path):
    (tmp_path / "s.txt").write_text("a b c\n")
    with pytest.raises(ValueError, match="too small"):
        spm_lib.train(str(tmp_path / "s.txt"), str(tmp_path / "m"), vocab_size=200)
