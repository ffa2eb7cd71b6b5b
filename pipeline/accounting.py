"""One accounting mechanism for every job: what each stage took in, kept, and dropped by reason.

A step returns a `StageStats` with each batch it processes; the executor (Beam, or a plain loop in
tests) merges them by stage name, and the job writes the result as `OUTPUT/stats.json`:

    {"job": ..., "read": N, "kept": N, "dropped": {"<reason>": N}, "stages": [ {...}, ... ]}

`read` is what the first stage took in, `kept` what the last stage let out (= rows written), and
`dropped` the sum over stages by reason, so that read == kept + sum(dropped) holds by construction
and is checked (`JobStats.check`) before the file is written.
"""
from __future__ import annotations

import dataclasses
import json
from collections import Counter
from typing import Iterable, Mapping


@dataclasses.dataclass
class StageStats:
    name: str
    docs_in: int = 0
    docs_out: int = 0
    dropped: Counter = dataclasses.field(default_factory=Counter)
    chars_in: int = 0
    chars_out: int = 0
    lines_in: int = 0
    lines_out: int = 0
    # Facts about the input that are not documents (e.g. WARC request records skipped by type).
    notes: Counter = dataclasses.field(default_factory=Counter)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] += n

    def merge(self, other: "StageStats") -> "StageStats":
        assert other.name == self.name, (self.name, other.name)
        self.docs_in += other.docs_in
        self.docs_out += other.docs_out
        self.dropped.update(other.dropped)
        self.chars_in += other.chars_in
        self.chars_out += other.chars_out
        self.lines_in += other.lines_in
        self.lines_out += other.lines_out
        self.notes.update(other.notes)
        return self

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "dropped": dict(sorted((k, v) for k, v in self.dropped.items() if v)),
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
            "lines_in": self.lines_in,
            "lines_out": self.lines_out,
            **({"notes": dict(sorted(self.notes.items()))} if self.notes else {}),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> "StageStats":
        return cls(
            name=d["name"],
            docs_in=d["docs_in"],
            docs_out=d["docs_out"],
            dropped=Counter(d.get("dropped", {})),
            chars_in=d.get("chars_in", 0),
            chars_out=d.get("chars_out", 0),
            lines_in=d.get("lines_in", 0),
            lines_out=d.get("lines_out", 0),
            notes=Counter(d.get("notes", {})),
        )


def merge_stage_stats(items: Iterable[StageStats]) -> dict[str, StageStats]:
    merged: dict[str, StageStats] = {}
    for item in items:
        if item.name in merged:
            merged[item.name].merge(item)
        else:
            merged[item.name] = StageStats(item.name).merge(item)
    return merged


class AccountingError(AssertionError):
    pass


@dataclasses.dataclass
class JobStats:
    job: str
    stages: list[StageStats]  # in pipeline order
    extra: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_merged(cls, job: str, stage_order: list[str], merged: Mapping[str, StageStats], **extra) -> "JobStats":
        missing = [name for name in stage_order if name not in merged]
        if missing:
            raise AccountingError(f"{job}: no statistics for stage(s) {', '.join(missing)}: a step did not report")
        unknown = sorted(set(merged) - set(stage_order))
        if unknown:
            raise AccountingError(f"{job}: statistics for stage(s) not in the job: {', '.join(unknown)}")
        return cls(job, [merged[name] for name in stage_order], dict(extra))

    @property
    def read(self) -> int:
        return self.stages[0].docs_in if self.stages else 0

    @property
    def kept(self) -> int:
        return self.stages[-1].docs_out if self.stages else 0

    @property
    def dropped(self) -> Counter:
        total: Counter = Counter()
        for stage in self.stages:
            total.update(stage.dropped)
        return total

    def check(self) -> None:
        """Every document is accounted for, per stage and from stage to stage."""
        for stage in self.stages:
            if stage.docs_in != stage.docs_out + sum(stage.dropped.values()):
                raise AccountingError(
                    f"stage {stage.name!r}: {stage.docs_in} in != {stage.docs_out} out + "
                    f"{sum(stage.dropped.values())} dropped {dict(stage.dropped)}"
                )
        for before, after in zip(self.stages, self.stages[1:]):
            if before.docs_out != after.docs_in:
                raise AccountingError(
                    f"{before.docs_out} documents left stage {before.name!r} but {after.docs_in} entered {after.name!r}"
                )
        if self.read != self.kept + sum(self.dropped.values()):
            raise AccountingError(f"read {self.read} != kept {self.kept} + dropped {dict(self.dropped)}")

    def to_dict(self) -> dict:
        return {
            "job": self.job,
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(sorted((k, v) for k, v in self.dropped.items() if v)),
            "stages": [s.to_dict() for s in self.stages],
            **self.extra,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping) -> "JobStats":
        known = {"job", "read", "kept", "dropped", "stages"}
        return cls(d["job"], [StageStats.from_dict(s) for s in d["stages"]], {k: v for k, v in d.items() if k not in known})
