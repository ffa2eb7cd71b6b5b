"""Training data: the mixed token shards (docs/token-shards.md), memory-mapped, packed into windows.

All shards listed in `manifest.json` are read as one token stream (documents already carry their
BOS/EOS, so no separators are added). The stream is cut into windows of `seq_len + 1` tokens that
overlap by one token (inputs are window[:-1], targets window[1:]), so every token is a target exactly
once per epoch. The last `val_tokens` of the stream are held out as the validation stream; the
training windows are visited in a seeded random order that changes each epoch. The position in that
order is the loader's whole state, so a checkpoint resumes on the next unseen window.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tokenizer.megatron import IndexedDataset, ShardWriter


def open_shards(manifest_path: str | Path) -> tuple[dict, list[IndexedDataset]]:
    """The manifest and its non-empty shards, read through tokenizer/megatron.py (the one reader of
    the `.bin`/`.idx` format; it checks each `.bin` against its index)."""
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no token-shard manifest at {manifest_path}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except ValueError as err:  # a damaged manifest: say which file, not only where the JSON broke
        raise ValueError(f"{manifest_path}: not a token-shard manifest (not JSON: {err})") from None
    if manifest.get("dtype", "uint16") != "uint16":
        raise ValueError(f"{manifest_path}: only uint16 shards are supported, not {manifest['dtype']}")
    shards = [IndexedDataset(str(manifest_path.parent / entry["prefix"])) for entry in manifest["shards"]]
    shards = [s for s in shards if len(s.tokens)]
    if not shards:
        raise ValueError(f"{manifest_path}: the shards hold no tokens")
    return manifest, shards


class TokenStream:
    """The shards' tokens as one random-access sequence."""

    def __init__(self, shards: list[IndexedDataset]):
        self.shards = shards
        self.starts = np.cumsum([0] + [len(s.tokens) for s in shards])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, start: int, length: int) -> np.ndarray:
        pieces, end = [], start + length
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < end:
            lo = start - self.starts[shard]
            hi = min(end, self.starts[shard + 1]) - self.starts[shard]
            pieces.append(self.shards[shard].tokens[lo:hi])
            start += hi - lo
            shard += 1
        return np.concatenate(pieces) if len(pieces) > 1 else np.asarray(pieces[0])


class PackedWindows:
    """Windows of seq_len + 1 tokens from the token stream, batched as (inputs, targets).

    `rank`/`world_size` split each global batch between data-parallel ranks: every rank walks the
    same order and takes its own slice, so the position is the same number on all of them.
    """

    def __init__(self, manifest_path: str | Path, seq_len: int, val_tokens: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        self.manifest, shards = open_shards(manifest_path)
        self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"])
        self.stream = TokenStream(shards)
        self.seq_len, self.seed, self.rank, self.world_size = seq_len, seed, rank, world_size
        n_windows = (len(self.stream) - 1) // seq_len
        self.n_val_windows = min(-(-val_tokens // seq_len), n_windows // 2) if val_tokens > 0 else 0
        self.n_train_windows = n_windows - self.n_val_windows
        if self.n_train_windows < 1:
            raise ValueError(f"{manifest_path}: {len(self.stream)} tokens do not fill a window of {seq_len + 1}")
        self.epoch, self.cursor = 0, 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_train_windows)

    def _windows(self, window_ids) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.stream.read(int(w) * self.seq_len, self.seq_len + 1) for w in window_ids]
        batch = torch.from_numpy(np.stack(rows).astype(np.int64))
        return batch[:, :-1], batch[:, 1:]

    def next_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's `batch_size` windows of the next global batch of batch_size * world_size."""
        ids = []
        for _ in range(batch_size * self.world_size):
            if self.cursor == self.n_train_windows:
                self.epoch, self.cursor = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
            ids.append(self._order[self.cursor])
            self.cursor += 1
        return self._windows(ids[self.rank * batch_size:(self.rank + 1) * batch_size])

    def validation_batches(self, batch_size: int, max_batches: int):
        """The held-out windows in order, the same every call; each rank gets an equal share (so all
        ranks run the same number of batches, as their collectives need)."""
        per_rank = self.n_val_windows // self.world_size
        first = self.n_train_windows + self.rank * per_rank
        ids = list(range(first, first + per_rank))
        for b in range(min(max_batches, len(ids) // batch_size)):
            yield self._windows(ids[b * batch_size:(b + 1) * batch_size])

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "seq_len": self.seq_len,
                "n_train_windows": self.n_train_windows, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        """The position is global (windows consumed by all ranks), so a run may resume on a different
        number of ranks; the same shards, seed and sequence length are required."""
        mine = self.state_dict()
        for key in ("seed", "seq_len", "n_train_windows"):
            if state[key] != mine[key]:
                raise ValueError(f"checkpoint was written with data {key}={state[key]}, this run has {mine[key]}")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._epoch_order(self.epoch)


def write_shards(folder: str | Path, documents: list[list[int]], vocab_size: int, bos_id: int, eos_id: int,
                 docs_per_shard: int = 0, tokenizer_path: str = "") -> Path:
    """Write documents (token lists, BOS/EOS included) as shards (tokenizer.megatron.ShardWriter) and a
    manifest.json in the layout of docs/token-shards.md. For tests and small experiments; the real
    shards come from `corpusmill mix`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = docs_per_shard or max(1, len(documents))
    shards = []
    for n, first in enumerate(range(0, len(documents), per_shard)):
        docs = documents[first:first + per_shard]
        prefix = f"mixed-{n:05d}"
        with ShardWriter(str(folder / prefix), write_sources=False) as writer:
            if docs:
                writer.add(np.concatenate([np.asarray(d, dtype=np.int64) for d in docs]), [len(d) for d in docs])
        shards.append({"prefix": prefix, "documents": len(docs), "tokens": writer.tokens})
    total = {"documents": len(documents), "tokens": sum(s["tokens"] for s in shards)}
    manifest = {
        "format": "megatron-mmidx-v1", "dtype": "uint16",
        "tokenizer": {"path": tokenizer_path, "sha256": "", "vocab_size": vocab_size, "bos_id": bos_id, "eos_id": eos_id},
        "source_names": [], "shards": shards, "sources": {}, "total": total,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder / "manifest.json"
