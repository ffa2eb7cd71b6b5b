"""A reader of the Megatron MMIDIDX v1 index written from the layout in docs/token-shards.md alone,
with `struct` and plain Python (no numpy, nothing from tokenizer.megatron), to check the writer."""
from __future__ import annotations

import struct


def read_idx(path: str) -> dict:
    data = open(path, "rb").read()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return values

    magic = data[:9]
    pos = 9
    (version,) = take("<Q")
    (dtype_code,) = take("<B")
    (sequences,) = take("<Q")
    (doc_entries,) = take("<Q")
    lengths = list(take(f"<{sequences}i"))
    pointers = list(take(f"<{sequences}q"))
    doc_idx = list(take(f"<{doc_entries}q"))
    return {"magic": magic, "version": version, "dtype_code": dtype_code, "lengths": lengths, "pointers": pointers,
            "doc_idx": doc_idx, "trailing_bytes": len(data) - pos}


def read_documents(prefix: str) -> list[list[int]]:
    index = read_idx(prefix + ".idx")
    data = open(prefix + ".bin", "rb").read()
    return [list(struct.unpack_from(f"<{n}H", data, p)) for n, p in zip(index["lengths"], index["pointers"])]
