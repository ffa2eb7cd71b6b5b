"""The mix planner: how many whole documents of each source go into the training stream.

For a stream of T tokens and a source s with target share p_s and N_s tokens in all:
the source is repeated floor(p_s T / N_s) whole times (epochs > 1 for small sources, as Wikipedia
and Books in the LLaMA paper's Table 1), and the remaining r tokens are whole documents drawn in a
seeded random order: first the longest prefix of that order that stays within r, then, further down
the same order, each document that brings the total closer to r (so the error is at most about half
a document). Every choice is seeded per source, so the plan depends only on the inputs and the seed.
The plan is then shuffled at document level (one global seeded permutation) and cut into shards.

A source repeated many times is seen by the model many times: `repeat_warnings` names each source
planned for more than `max_epochs` epochs. LLaMA's largest was Wikipedia's 2.45 (Table 1), so the
default threshold, `DEFAULT_MAX_EPOCHS` = 2.5, lets the paper's own mix through without a warning.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.schema import SOURCES
from tokenizer.megatron import IndexedDataset, ShardWriter

# LLaMA Table 1: Wikipedia 2.45 epochs, Books 2.23, every other source about one or fewer.
DEFAULT_MAX_EPOCHS = 2.5


@dataclasses.dataclass
class SourcePlan:
    name: str
    documents: np.ndarray  # indices into the source's documents, repeats allowed (unshuffled)
    available_documents: int
    available_tokens: int
    tokens: int
    target: float

    @property
    def epochs(self) -> float:
        return self.tokens / self.available_tokens if self.available_tokens else 0.0


def _rng(seed: int, *stream: int) -> np.random.Generator:
    # PCG64 seeded through SeedSequence: the same numbers on every platform and numpy 1.17+.
    return np.random.default_rng(np.random.SeedSequence([seed, *stream]))


def select_documents(lengths: np.ndarray, target_tokens: float, seed: int, stream: int) -> np.ndarray:
    """Whole documents (indices, repeats for full epochs) whose lengths sum as close to `target_tokens` as whole documents allow."""
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    if total == 0:
        raise ValueError("a source with no tokens cannot be mixed")
    full = int(target_tokens // total)
    remainder = target_tokens - full * total
    order = _rng(seed, stream).permutation(len(lengths))
    cumulative = np.cumsum(lengths[order])
    prefix = int(np.searchsorted(cumulative, remainder, side="right"))
    taken = [order[:prefix]]
    gap = remainder - (int(cumulative[prefix - 1]) if prefix else 0)
    extra = []
    for i in order[prefix:]:
        if gap <= 0.5:
            break
        if lengths[i] < 2 * gap:  # taking it leaves |gap - length| < gap
            extra.append(i)
            gap -= int(lengths[i])
    taken.append(np.asarray(extra, dtype=np.int64))
    return np.concatenate([np.tile(np.arange(len(lengths), dtype=np.int64), full), *taken]).astype(np.int64)


def plan_mix(lengths: dict[str, np.ndarray], targets: dict[str, float], total_tokens: int, seed: int) -> dict[str, SourcePlan]:
    """`lengths`: per source, the token count of each document (in the source's shard order)."""
    plans = {}
    for name, share in targets.items():
        doc_lengths = np.asarray(lengths[name], dtype=np.int64)
        # One random stream per source, fixed by its place in SOURCES: dropping a source leaves the others' draws alone.
        chosen = select_documents(doc_lengths, share * total_tokens, seed, SOURCES.index(name))
        plans[name] = SourcePlan(
            name=name,
            documents=chosen,
            available_documents=len(doc_lengths),
            available_tokens=int(doc_lengths.sum()),
            tokens=int(doc_lengths[chosen].sum()),
            target=share,
        )
    return plans


def achieved_shares(plans: dict[str, SourcePlan]) -> dict[str, float]:
    total = sum(p.tokens for p in plans.values())
    return {name: (p.tokens / total if total else 0.0) for name, p in plans.items()}


def check_shares(plans: dict[str, SourcePlan], tolerance: float) -> None:
    shares = achieved_shares(plans)
    bad = [f"{n}: {shares[n]:.2%} for {p.target:.2%}" for n, p in plans.items() if abs(shares[n] - p.target) > tolerance]
    if bad:
        raise ValueError(
            f"whole documents cannot meet the target shares within ±{tolerance * 100:.2g} pp ({'; '.join(bad)}); "
            "use a larger --tokens, or a looser --tolerance"
        )


def repeat_warnings(plans: dict[str, SourcePlan], max_epochs: float) -> list[dict]:
    """One warning per source planned for more than `max_epochs` epochs (its data seen that many times)."""
    out = []
    for name, p in plans.items():
        if p.epochs > max_epochs:
            out.append({
                "source": name, "epochs": p.epochs, "max_epochs": max_epochs,
                "message": f"{name} is repeated {p.epochs:.1f} epochs (more than {max_epochs:g}): its "
                           f"{p.available_tokens:,} tokens are seen {p.epochs:.1f} times to fill {p.target:.1%} of the stream",
            })  # fmt: skip
    return out


def shuffle_and_shard(plans: dict[str, SourcePlan], lengths: dict[str, np.ndarray], source_index: dict[str, int],
                      seed: int, shard_tokens: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The stream as shards: per shard, (source index, document index) arrays in stream order."""
    sources = np.concatenate([np.full(len(p.documents), source_index[n], np.uint8) for n, p in plans.items()])
    documents = np.concatenate([p.documents for p in plans.values()])
    doc_tokens = np.concatenate([np.asarray(lengths[n], np.int64)[p.documents] for n, p in plans.items()])
    order = _rng(seed, 1 << 20).permutation(len(documents))
    sources, documents, doc_tokens = sources[order], documents[order], doc_tokens[order]
    # Cut before the document that would take a shard past `shard_tokens` (a shard holds at least one).
    ends = np.cumsum(doc_tokens)
    shards, start, base = [], 0, 0
    while start < len(documents):
        stop = int(np.searchsorted(ends, base + shard_tokens, side="right"))
        stop = max(stop, start + 1)
        shards.append((sources[start:stop], documents[start:stop]))
        base = int(ends[stop - 1])
        start = stop
    return shards


class SourceDocuments:
    """A source's token shards seen as one numbered sequence of documents."""

    def __init__(self, prefixes: list[str]):
        self.datasets = [IndexedDataset(p) for p in prefixes]
        self.lengths = np.concatenate([d.lengths.astype(np.int64) for d in self.datasets]) if self.datasets else np.zeros(0, np.int64)
        self.first = np.concatenate([[0], np.cumsum([len(d) for d in self.datasets])]).astype(np.int64)

    def locate(self, documents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shard = np.searchsorted(self.first, documents, side="right") - 1
        return shard, documents - self.first[shard]


def gather_stream(sources: np.ndarray, documents: np.ndarray, by_source: dict[int, SourceDocuments]) -> tuple[np.ndarray, np.ndarray]:
    """Tokens and lengths of the given (source, document) sequence, in that order."""
    lengths = np.zeros(len(documents), dtype=np.int64)
    for s, docs in by_source.items():
        mask = sources == s
        lengths[mask] = docs.lengths[documents[mask]]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    out = np.empty(int(lengths.sum()), dtype=np.uint16)
    for s, docs in by_source.items():
        mask = sources == s
        if not mask.any():
            continue
        shard, local = docs.locate(documents[mask])
        positions = np.flatnonzero(mask)
        for k in np.unique(shard):
            pick = shard == k
            tokens, lens = docs.datasets[int(k)].gather(local[pick])
            # Destination of each gathered token: its document's start in the stream + its offset in the document.
            inner = np.arange(len(tokens), dtype=np.int64) - np.repeat(np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
            out[np.repeat(starts[positions[pick]], lens) + inner] = tokens
    return out, lengths


def write_mixed_shard(prefix: str, sources: np.ndarray, documents: np.ndarray, by_source: dict[int, SourceDocuments],
                      chunk_documents: int = 1 << 16) -> dict:
    """Write one mixed shard (with its `.src`), streaming in chunks of documents."""
    with ShardWriter(prefix, write_sources=True) as writer:
        for start in range(0, len(documents), chunk_documents):
            s, d = sources[start : start + chunk_documents], documents[start : start + chunk_documents]
            tokens, lengths = gather_stream(s, d, by_source)
            writer.add(tokens, lengths, s)
    return {"documents": writer.documents, "tokens": writer.tokens}
