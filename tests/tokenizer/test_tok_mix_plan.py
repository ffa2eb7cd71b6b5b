from __future__ import annotations

import numpy as np
import pytest

from tokenizer.inputs import LLAMA_SHARES, parse_shares, target_shares
from tokenizer.mix import achieved_shares, check_shares, plan_mix, select_documents, shuffle_and_shard


def _lengths(seed, n, low, high):
    return np.random.default_rng(seed).integers(low, high, n)


def test_llama_shares_sum_to_one_and_parse():
    assert sum(LLAMA_SHARES.values()) == pytest.approx(1.0)
    assert parse_shares("commoncrawl=67,c4=15,github=4.5,wikipedia=4.5,books=4.5,arxiv=2.5,stackexchange=2") == pytest.approx(LLAMA_SHARES)
    with pytest.raises(ValueError, match="unknown source"):
        parse_shares("reddit=10")


def test_missing_source_is_an_error_unless_renormalised():
    with pytest.raises(ValueError, match="missing source.*books.*--renormalize"):
        target_shares(LLAMA_SHARES, ["commoncrawl", "c4", "github", "wikipedia", "arxiv", "stackexchange"], renormalize=False)
    shares = target_shares(LLAMA_SHARES, ["commoncrawl", "wikipedia"], renormalize=True)
    assert shares == pytest.approx({"commoncrawl": 0.67 / 0.715, "wikipedia": 0.045 / 0.715})


def test_small_source_is_repeated_and_large_one_sampled_whole_documents():
    lengths = {"commoncrawl": _lengths(1, 5000, 50, 3000), "wikipedia": _lengths(2, 40, 100, 400), "books": _lengths(3, 30, 200, 900)}
    targets = target_shares(LLAMA_SHARES, list(lengths), renormalize=True)
    total = 3_000_000
    plans = plan_mix(lengths, targets, total, seed=7)
    shares = achieved_shares(plans)
    for name, plan in plans.items():
        assert abs(shares[name] - targets[name]) <= 0.005
        assert plan.tokens == int(lengths[name][plan.documents].sum())  # whole documents only
    assert plans["wikipedia"].epochs > 1 and plans["books"].epochs > 1 and plans["commoncrawl"].epochs < 1
    counts = np.bincount(plans["wikipedia"].documents, minlength=40)
    assert counts.min() >= int(plans["wikipedia"].epochs)  # every document of a repeated source appears each full epoch
    assert sum(p.tokens for p in plans.values()) == pytest.approx(total, rel=0.01)
    again = plan_mix(lengths, targets, total, seed=7)
    assert all(np.array_equal(again[n].documents, plans[n].documents) for n in plans)
    other = plan_mix(lengths, targets, total, seed=8)
    assert not np.array_equal(other["commoncrawl"].documents, plans["commoncrawl"].documents)


def test_selection_lands_within_half_a_document_of_the_target():
    lengths = _lengths(4, 2000, 1, 1000)
    for target in (0, 1, 999, 12345.5, 777_777, lengths.sum() * 2.5):
        chosen = select_documents(lengths, target, seed=1, stream=0)
        assert abs(int(lengths[chosen].sum()) - target) <= 500


def test_impossible_shares_are_a_clear_error():
    lengths = {"commoncrawl": np.array([10_000]), "c4": np.array([9_000])}  # two huge documents
    plans = plan_mix(lengths, {"commoncrawl": 0.8, "c4": 0.2}, 10_000, seed=0)
    with pytest.raises(ValueError, match="whole documents cannot meet the target shares"):
        check_shares(plans, 0.005)


def test_shuffle_keeps_every_planned_document_and_cuts_shards_by_tokens():
    lengths = {"commoncrawl": _lengths(5, 300, 10, 100), "c4": _lengths(6, 100, 10, 100)}
    plans = plan_mix(lengths, {"commoncrawl": 0.7, "c4": 0.3}, 20_000, seed=3)
    shards = shuffle_and_shard(plans, lengths, {"commoncrawl": 0, "c4": 1}, seed=3, shard_tokens=5_000)
    assert len(shards) > 2
    for s, d in shards[:-1]:
        tokens = sum(int(lengths[["commoncrawl", "c4"][k]][i]) for k, i in zip(s, d))
        assert tokens <= 5_000
    got = sorted((int(k), int(i)) for s, d in shards for k, i in zip(s, d))
    want = sorted([(0, int(i)) for i in plans["commoncrawl"].documents] + [(1, int(i)) for i in plans["c4"].documents])
    assert got == want
    first = np.concatenate([s for s, _ in shards])
    assert 0 < first[: len(first) // 2].mean() < 1  # the sources are interleaved, not concatenated
