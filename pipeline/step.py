"""The one step contract: a step says what it keeps, drops (with a reason) or changes; the base counts.

Every step of every job is a `Step` over an Arrow record batch of documents. A subclass implements
`process(batch, notes) -> Outcome`, saying per row whether it drops it (a reason) and which columns it
changes or adds; `Step.__call__` applies that and returns `(batch, StageStats)` with documents,
characters and lines in and out and the drops by reason, counted here, once, the same way for every
step. `notes` (a Counter) takes finer events that are not documents (lines removed by rule, ...).

Lines are counted one way everywhere (`text_totals`): a text's lines are its newlines plus one, and
an empty text has none. When a step changes `text`, the base recomputes the `nlines` column the same way.
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.accounting import StageStats


def line_counts(text: pa.Array) -> pa.Array:
    """Lines of each text (int32): newlines + 1, or 0 for an empty text."""
    newlines = pc.count_substring(text, "\n")
    nonempty = pc.cast(pc.greater(pc.utf8_length(text), 0), pa.int32())
    return pc.cast(pc.add(newlines, nonempty), pa.int32())


def text_totals(text: pa.Array) -> tuple[int, int]:
    """(characters, lines) of a string column."""
    if len(text) == 0:
        return 0, 0
    chars = int(pc.sum(pc.utf8_length(text)).as_py() or 0)
    lines = int(pc.sum(line_counts(text)).as_py() or 0)
    return chars, lines


@dataclasses.dataclass
class Outcome:
    """What a step did to a batch; every array has one entry per input row.

    drop:    a reason per row, None (or null) where the row stays; or a boolean mask of the rows to
             drop, all under `reason`; None: every row stays.
    text:    the new text of every row (dropped rows: anything), or None if unchanged.
    columns: columns added or replaced (all rows).
    remove:  working columns this step consumed.
    batch:   a whole new batch (same rows, another schema: e.g. raw records -> documents).
    """

    drop: Sequence | pa.Array | np.ndarray | None = None
    text: Sequence | pa.Array | None = None
    columns: dict = dataclasses.field(default_factory=dict)
    remove: tuple[str, ...] = ()
    batch: pa.RecordBatch | None = None
    reason: str | None = None


def set_column(batch: pa.RecordBatch, name: str, values: pa.Array) -> pa.RecordBatch:
    i = batch.schema.get_field_index(name)
    if i < 0:
        return batch.append_column(name, values)
    return batch.set_column(i, pa.field(name, values.type), values)


class Step:
    """Base of every step. Subclasses set `name` (the stage name in stats.json) and implement `process`."""

    name: str = "step"

    def __getstate__(self):
        # Beam pickles steps to its workers. What a step loads (a model, an open file) lives in an
        # attribute starting with "_" and is not shipped: each worker loads its own, once.
        return {k: (None if k.startswith("_") else v) for k, v in self.__dict__.items()}

    def process(self, batch: pa.RecordBatch, notes: Counter) -> Outcome:
        raise NotImplementedError

    def measure(self, batch: pa.RecordBatch) -> tuple[int, int]:
        """(characters, lines) a batch holds; raw-record steps measure their payload instead."""
        if "text" not in batch.schema.names:
            return 0, 0
        if "nlines" in batch.schema.names and batch.num_rows:
            # A document batch carries its line counts (`nlines`, made by `line_counts`'s rule and kept
            # up to date below when a step changes text): summing them spares a scan of every text.
            chars = int(pc.sum(pc.utf8_length(batch.column("text"))).as_py() or 0)
            return chars, int(pc.sum(batch.column("nlines")).as_py() or 0)
        return text_totals(batch.column("text"))

    def __call__(self, batch: pa.RecordBatch, measured: tuple[int, int] | None = None) -> tuple[pa.RecordBatch, StageStats]:
        """`measured`: (characters, lines) of `batch` when the caller knows them already (the step
        before measured its output), so that a batch is not measured twice."""
        stats = StageStats(self.name, docs_in=batch.num_rows)
        own = type(self).measure is not Step.measure
        stats.chars_in, stats.lines_in = measured if measured is not None and not own else self.measure(batch)
        outcome = self.process(batch, stats.notes) if batch.num_rows else Outcome()
        out = outcome.batch if outcome.batch is not None else batch
        for name, values in outcome.columns.items():
            out = set_column(out, name, _as_array(values))
        if outcome.text is not None:
            text = _as_array(outcome.text, pa.string())
            out = set_column(set_column(out, "text", text), "nlines", line_counts(text))
        if outcome.remove:
            out = out.drop_columns([c for c in outcome.remove if c in out.schema.names])
        if outcome.drop is not None:
            reasons = _reasons(outcome)
            if reasons.null_count < len(reasons):
                for reason, n in zip(*_value_counts(reasons)):
                    stats.drop(reason, n)
                out = out.filter(pc.is_null(reasons))
        stats.docs_out = out.num_rows
        stats.chars_out, stats.lines_out = self.measure(out)
        return out, stats


class TextStep(Step):
    """A per-document text transform or filter: `transform(text, row, batch, notes) -> (new text or
    None, drop reason)`; None drops the document under the reason."""

    def transform(self, text: str, row: int, batch: pa.RecordBatch, notes: Counter) -> tuple[str | None, str | None]:
        raise NotImplementedError

    def process(self, batch, notes):
        texts, reasons = [], []
        for i, t in enumerate(batch.column("text").to_pylist()):
            new, reason = self.transform(t, i, batch, notes)
            texts.append(new if new is not None else "")
            reasons.append(None if new is not None else reason)
        return Outcome(drop=reasons, text=texts)


def _as_array(values, type_: pa.DataType | None = None) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values if type_ is None or values.type == type_ else values.cast(type_)
    return pa.array(values, type_)


def _reasons(outcome: Outcome) -> pa.Array:
    drop = outcome.drop
    if isinstance(drop, np.ndarray) and drop.dtype == bool:
        if outcome.reason is None:
            raise ValueError("a boolean drop mask needs Outcome.reason")
        return pa.array(np.where(drop, outcome.reason, None), pa.string())
    return _as_array(drop, pa.string())


def _value_counts(reasons: pa.Array) -> tuple[list[str], list[int]]:
    counts = pc.value_counts(reasons.drop_null())
    pairs = sorted(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()))
    return [p[0] for p in pairs], [p[1] for p in pairs]
