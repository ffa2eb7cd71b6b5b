"""Statistics over what a job wrote: one pass per shard, mergeable summaries, no folder in memory.

An output is one of
  - a document-shard folder (`*.parquet` in `pipeline/schema.py`'s schema, usually with `stats.json`),
  - a token-shard folder (`manifest.json` + Megatron `.bin`/`.idx` [+ `.src`], see docs/token-shards.md),
  - a trainer run folder (`metrics.jsonl`, see `reporting/training.py`), a job output without shards,
  - a run folder: a folder whose subfolders are job outputs (runs/demo/ccnet, runs/demo/mix, ...),
    ordered by `job_rank` (the web pipeline, the mix, the sources, ... not alphabetically).

`discover(path)` finds the folders and their shards; `summarise_shard(target, shard)` reads one shard
once (Parquet row group by row group, only the columns needed; for token shards only the `.idx` and
`.src`, memory-mapped) into a `ShardResult`; `FolderAccumulator` merges shard results; and
`folder_report` turns a merged accumulator plus the folder's `stats.json` / `manifest.json` into the
report dict that `reporting/render.py` renders (rich tables, JSON, HTML); a run folder's report opens
with `reporting/overview.py`'s view of the whole run.

Merging is exact and order-independent, so a Beam run over any number of workers gives the same
report as the in-process loop: counts and histograms are integer sums, score sums are kept in integer
micro-units (float sums would depend on the order of additions), and domain counters are capped per
shard (top `DOMAINS_PER_SHARD` by count, then name; the rest is counted as "other") before being
summed, so a merge never truncates.

Lengths, perplexities and quality scores go to fixed-bin histograms; medians are read off them:
document length (characters for document shards, tokens for token shards) in 16 bins per octave
(a median within 2.2 % of the exact one), perplexity in log10 bins of 0.02 (4.7 %), quality in 20
bins of 0.05.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from collections import Counter
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.runs import STATS_FILE, TMP_PREFIX
from pipeline.schema import SOURCES
from reporting import training
from tokenizer.megatron import FORMAT as TOKEN_FORMAT
from tokenizer.megatron import MANIFEST_FILE, IndexedDataset

# Document length histogram: bin 0 holds empty documents, bin i >= 1 holds lengths in
# [2**((i-1)/16), 2**(i/16)).
LENGTH_BINS_PER_OCTAVE = 16
LENGTH_NBINS = 1 + 32 * LENGTH_BINS_PER_OCTAVE
# Perplexity histogram over log10(perplexity) in [0, 8); values outside are clipped to the end bins.
PPL_BIN_WIDTH = 0.02
PPL_NBINS = 400
# Quality score histogram over [0, 1]; 1.0 goes to the last bin.
QUALITY_NBINS = 20
SCORE_UNITS = 1_000_000  # scores are summed as integers in millionths: exact, order-independent
DOMAINS_PER_SHARD = 1000
NO_LANGUAGE = "(none)"
NO_BUCKET = "(none)"

DOCUMENT_COLUMNS = ("source", "url", "text", "language", "language_score", "perplexity", "bucket", "quality_score")
_EXPECTED_TYPES = {
    "source": pa.string(), "url": pa.string(), "text": pa.string(), "language": pa.string(),
    "language_score": pa.float32(), "perplexity": pa.float32(), "bucket": pa.string(), "quality_score": pa.float32(),
}  # fmt: skip
_HOST = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#]*@)?(?P<host>[^/:?#]+)"


class ShardError(ValueError):
    """A shard that cannot be summarised; its message names the file."""


# ---------------------------------------------------------------------------------------------------
# Histogram helpers


def length_bins(lengths: np.ndarray) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.float64)
    out = np.zeros(lengths.shape, dtype=np.int64)
    pos = lengths > 0
    out[pos] = 1 + np.floor(np.log2(lengths[pos]) * LENGTH_BINS_PER_OCTAVE).astype(np.int64)
    return np.minimum(out, LENGTH_NBINS - 1)


def length_bin_bounds(i: int) -> tuple[float, float]:
    if i == 0:
        return 0.0, 0.0
    return 2.0 ** ((i - 1) / LENGTH_BINS_PER_OCTAVE), 2.0 ** (i / LENGTH_BINS_PER_OCTAVE)


def ppl_bins(ppl: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        idx = np.floor(np.log10(np.maximum(ppl, 1e-30)) / PPL_BIN_WIDTH)
    return np.clip(idx, 0, PPL_NBINS - 1).astype(np.int64)


def quality_bins(q: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(q * QUALITY_NBINS), 0, QUALITY_NBINS - 1).astype(np.int64)


def median_bin(hist: np.ndarray) -> int | None:
    """The bin holding the lower median (rank ceil(n/2)), or None for an empty histogram."""
    n = int(hist.sum())
    if n == 0:
        return None
    return int(np.searchsorted(np.cumsum(hist), (n + 1) // 2))


def median_length(hist: np.ndarray) -> float | None:
    i = median_bin(hist)
    if i is None:
        return None
    lo, hi = length_bin_bounds(i)
    return math.sqrt(lo * hi)


def median_perplexity(hist: np.ndarray) -> float | None:
    i = median_bin(hist)
    return None if i is None else 10.0 ** ((i + 0.5) * PPL_BIN_WIDTH)


def _micro(values: np.ndarray) -> np.ndarray:
    return np.rint(values.astype(np.float64) * SCORE_UNITS).astype(np.int64)


def _trimmed(hist: np.ndarray) -> tuple[int, list[int]]:
    nz = np.flatnonzero(hist)
    if not len(nz):
        return 0, []
    return int(nz[0]), [int(x) for x in hist[nz[0] : nz[-1] + 1]]


def _untrim(first: int, counts: list[int], n: int) -> np.ndarray:
    out = np.zeros(n, dtype=np.int64)
    out[first : first + len(counts)] = counts
    return out


# ---------------------------------------------------------------------------------------------------
# The mergeable summary of a group of documents (one source of one shard, or merged)


@dataclasses.dataclass
class GroupStats:
    docs: int = 0
    bytes: int = 0  # UTF-8 bytes of text (document shards) or of tokens in .bin (token shards)
    chars: int = 0
    tokens: int | None = None  # None: no tokenizer known
    length_hist: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(LENGTH_NBINS, np.int64))
    # language -> [documents, documents with a score, sum of scores in micro-units]
    languages: dict = dataclasses.field(default_factory=dict)
    ppl_hist: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(PPL_NBINS, np.int64))
    ppl_missing: int = 0
    buckets: dict = dataclasses.field(default_factory=dict)  # bucket -> [documents, chars]
    quality_hist: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(QUALITY_NBINS, np.int64))
    quality_missing: int = 0
    quality_micro: int = 0
    domains: Counter = dataclasses.field(default_factory=Counter)
    domains_other: int = 0  # documents whose domain fell outside a shard's top DOMAINS_PER_SHARD
    no_domain: int = 0  # documents without a URL (or one without a host)

    def merge(self, other: "GroupStats") -> "GroupStats":
        self.docs += other.docs
        self.bytes += other.bytes
        self.chars += other.chars
        if other.tokens is not None:
            self.tokens = (self.tokens or 0) + other.tokens
        self.length_hist = self.length_hist + other.length_hist
        for lang, (n, scored, micro) in other.languages.items():
            cur = self.languages.setdefault(lang, [0, 0, 0])
            cur[0] += n
            cur[1] += scored
            cur[2] += micro
        self.ppl_hist = self.ppl_hist + other.ppl_hist
        self.ppl_missing += other.ppl_missing
        for bucket, (n, chars) in other.buckets.items():
            cur = self.buckets.setdefault(bucket, [0, 0])
            cur[0] += n
            cur[1] += chars
        self.quality_hist = self.quality_hist + other.quality_hist
        self.quality_missing += other.quality_missing
        self.quality_micro += other.quality_micro
        self.domains.update(other.domains)
        self.domains_other += other.domains_other
        self.no_domain += other.no_domain
        return self

    def cap_domains(self, cap: int = DOMAINS_PER_SHARD) -> None:
        if len(self.domains) > cap:
            ranked = sorted(self.domains.items(), key=lambda kv: (-kv[1], kv[0]))
            self.domains_other += sum(n for _, n in ranked[cap:])
            self.domains = Counter(dict(ranked[:cap]))

    def to_state(self) -> dict:
        """Exact, JSON-able state (round-trips through `from_state`)."""
        d = dataclasses.asdict(self)
        for name in ("length_hist", "ppl_hist", "quality_hist"):
            d[name] = _trimmed(getattr(self, name))
        d["domains"] = dict(sorted(self.domains.items()))
        return d

    @classmethod
    def from_state(cls, d: dict) -> "GroupStats":
        d = dict(d)
        d["length_hist"] = _untrim(*d["length_hist"], LENGTH_NBINS)
        d["ppl_hist"] = _untrim(*d["ppl_hist"], PPL_NBINS)
        d["quality_hist"] = _untrim(*d["quality_hist"], QUALITY_NBINS)
        d["domains"] = Counter(d["domains"])
        d["languages"] = {k: list(v) for k, v in d["languages"].items()}
        d["buckets"] = {k: list(v) for k, v in d["buckets"].items()}
        return cls(**d)


def _encode(array: pa.Array, null_label: str) -> tuple[np.ndarray, list[str]]:
    encoded = pc.dictionary_encode(pc.fill_null(array, null_label))
    return encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), encoded.dictionary.to_pylist()


def document_batch_stats(batch: pa.RecordBatch, token_counter=None) -> GroupStats:
    """Summary of a batch of documents of one source (vectorised; no Python loop over rows)."""
    g = GroupStats()
    n = batch.num_rows
    if n == 0:
        return g
    text = batch.column("text")
    nbytes = pc.binary_length(text).to_numpy(zero_copy_only=False).astype(np.int64)
    nchars = pc.utf8_length(text).to_numpy(zero_copy_only=False).astype(np.int64)
    g.docs, g.bytes, g.chars = n, int(nbytes.sum()), int(nchars.sum())
    g.length_hist = np.bincount(length_bins(nchars), minlength=LENGTH_NBINS).astype(np.int64)
    if token_counter is not None:
        g.tokens = int(token_counter(text))

    codes, langs = _encode(batch.column("language"), NO_LANGUAGE)
    score = batch.column("language_score").to_numpy(zero_copy_only=False).astype(np.float64)
    scored = ~np.isnan(score)
    docs_by = np.bincount(codes, minlength=len(langs))
    scored_by = np.bincount(codes[scored], minlength=len(langs))
    micro_by = np.bincount(codes[scored], weights=_micro(score[scored]).astype(np.float64), minlength=len(langs))
    # Weights go through float64: exact while a batch's micro-unit sum stays below 2**53.
    g.languages = {lang: [int(docs_by[i]), int(scored_by[i]), int(round(micro_by[i]))] for i, lang in enumerate(langs)}

    ppl = batch.column("perplexity").to_numpy(zero_copy_only=False).astype(np.float64)
    has_ppl = ~np.isnan(ppl)
    g.ppl_hist = np.bincount(ppl_bins(ppl[has_ppl]), minlength=PPL_NBINS).astype(np.int64)
    g.ppl_missing = int((~has_ppl).sum())

    codes, buckets = _encode(batch.column("bucket"), NO_BUCKET)
    docs_by = np.bincount(codes, minlength=len(buckets))
    chars_by = np.bincount(codes, weights=nchars.astype(np.float64), minlength=len(buckets))
    g.buckets = {b: [int(docs_by[i]), int(round(chars_by[i]))] for i, b in enumerate(buckets)}

    q = batch.column("quality_score").to_numpy(zero_copy_only=False).astype(np.float64)
    has_q = ~np.isnan(q)
    g.quality_hist = np.bincount(quality_bins(q[has_q]), minlength=QUALITY_NBINS).astype(np.int64)
    g.quality_missing = int((~has_q).sum())
    g.quality_micro = int(_micro(q[has_q]).sum())

    hosts = pc.struct_field(pc.extract_regex(batch.column("url"), _HOST), "host")
    hosts = pc.utf8_lower(hosts)
    hosts = pc.replace_substring_regex(hosts, r"^www\.", "")
    hosts = pc.if_else(pc.equal(hosts, ""), pa.scalar(None, pa.string()), hosts)
    counted = pc.value_counts(hosts.drop_null())
    g.domains = Counter(dict(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist())))
    g.no_domain = int(hosts.null_count)
    return g


# ---------------------------------------------------------------------------------------------------
# Discovery


@dataclasses.dataclass
class Target:
    """One job output folder and its shards (file names relative to `folder`)."""

    folder: str
    kind: str  # "documents" | "tokens" | "train" (a trainer run: no shards, its metrics.jsonl)
    shards: list[str]
    manifest: dict | None = None
    stats: dict | None = None  # the folder's stats.json
    problems: list[dict] = dataclasses.field(default_factory=list)  # found while discovering

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.folder))

    def shard_bytes(self) -> int:
        total = 0
        for shard in self.shards:
            for path in self.shard_files(shard):
                if os.path.isfile(path):
                    total += os.path.getsize(path)
        return total

    def shard_files(self, shard: str) -> list[str]:
        base = os.path.join(self.folder, shard)
        if self.kind == "documents":
            return [base]
        return [base + ".bin", base + ".idx", base + ".src"]


def _load_json(path: str) -> tuple[dict | None, str | None]:
    try:
        with open(path, "rb") as f:
            return json.loads(f.read()), None
    except (OSError, ValueError) as err:
        return None, f"cannot read {os.path.basename(path)}: {err}"


def classify(folder: str) -> Target | None:
    """The job output in `folder`, or None if it is not one."""
    if training.is_train_folder(folder):
        return Target(folder, "train", [])
    if os.path.isfile(os.path.join(folder, MANIFEST_FILE)):
        manifest, error = _load_json(os.path.join(folder, MANIFEST_FILE))
        target = Target(folder, "tokens", [], manifest)
        if error:
            target.problems.append({"file": os.path.join(folder, MANIFEST_FILE), "error": error})
        elif manifest.get("format") != TOKEN_FORMAT:
            target.problems.append({"file": os.path.join(folder, MANIFEST_FILE), "error": f"format {manifest.get('format')!r} is not {TOKEN_FORMAT!r}"})
        else:
            target.shards = [s["prefix"] for s in manifest.get("shards", [])]
        _attach_stats(target)
        return target
    names = sorted(os.listdir(folder))
    parquet = [n for n in names if n.endswith(".parquet") and not n.startswith(TMP_PREFIX) and os.path.isfile(os.path.join(folder, n))]
    if parquet or STATS_FILE in names:
        target = Target(folder, "documents", parquet)
        _attach_stats(target)
        listed = (target.stats or {}).get("files")
        if listed:
            for name in sorted(set(listed) - set(parquet)):
                if name.endswith(".parquet"):
                    target.problems.append({"file": os.path.join(folder, name), "error": "listed in stats.json but missing"})
        return target
    return None


def _attach_stats(target: Target) -> None:
    path = os.path.join(target.folder, STATS_FILE)
    if os.path.isfile(path):
        target.stats, error = _load_json(path)
        if error:
            target.problems.append({"file": path, "error": error})


def discover(path: str) -> tuple[str, list[Target]]:
    """(kind, targets): kind is "documents", "tokens" or "run" (then one target per job subfolder)."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path!r} is not a folder (expected a job output or a run folder)")
    own = classify(path)
    if own is not None:
        return own.kind, [own]
    targets = []
    for name in sorted(os.listdir(path)):
        sub = os.path.join(path, name)
        if os.path.isdir(sub) and not name.startswith("."):
            t = classify(sub)
            if t is not None:
                targets.append(t)
    if not targets:
        raise ValueError(f"{path!r} holds no job output: no *.parquet, stats.json, manifest.json or metrics.jsonl in it or its subfolders")
    return "run", sorted(targets, key=lambda t: (job_rank(t), t.name))


def target_job(target: Target) -> str:
    return (target.stats or {}).get("job") or ("train" if target.kind == "train" else target.name)


def is_mix(target: Target) -> bool:
    """The mixed stream: the mix job's output, or token shards whose manifest gives target shares."""
    if target.kind != "tokens":
        return False
    declared = ((target.manifest or {}).get("sources") or {}).values()
    return target_job(target) == "mix" or any(isinstance(d, dict) and d.get("target") is not None for d in declared)


def job_rank(target: Target) -> int:
    """A run's jobs, most important first: the web pipeline, the mix, the other sources (in the mix's
    order), then the token shards, the tokenizer, the trainer, anything else."""
    job = target_job(target)
    if job == "ccnet":
        return 0
    if is_mix(target):
        return 1
    if job in SOURCES:
        return 2 + SOURCES.index(job)
    if target.kind == "tokens":
        job = "tokenize"  # per-source token shards, whoever wrote them
    order = ["tokenize", "train-tokenizer", "train"]
    return 2 + len(SOURCES) + (order.index(job) if job in order else len(order))


# ---------------------------------------------------------------------------------------------------
# One pass over one shard


@dataclasses.dataclass
class ShardResult:
    name: str
    file_bytes: int = 0
    sources: dict = dataclasses.field(default_factory=dict)  # source -> GroupStats
    error: str | None = None

    def total(self) -> GroupStats:
        total = GroupStats()
        for source in sorted(self.sources):
            total.merge(self.sources[source])
        return total


def _check_document_schema(schema: pa.Schema) -> None:
    missing = [c for c in DOCUMENT_COLUMNS if c not in schema.names]
    if missing:
        raise ShardError(f"not a corpusmill document shard: missing column(s) {', '.join(missing)}")
    wrong = [f"{c} is {schema.field(c).type}, expected {t}" for c, t in _EXPECTED_TYPES.items()
             if not (schema.field(c).type == t or (t == pa.string() and schema.field(c).type == pa.large_string()))]  # fmt: skip
    if wrong:
        raise ShardError("not a corpusmill document shard: " + "; ".join(wrong))


def summarise_document_shard(path: str, token_counter=None, batch_rows: int = 8192, use_threads: bool = False) -> ShardResult:
    result = ShardResult(os.path.basename(path))
    try:
        result.file_bytes = os.path.getsize(path)
        pf = pq.ParquetFile(path)
        _check_document_schema(pf.schema_arrow)
        sources: dict[str, GroupStats] = {}
        for batch in pf.iter_batches(batch_size=batch_rows, columns=list(DOCUMENT_COLUMNS), use_threads=use_threads):
            codes, names = _encode(batch.column("source"), "(none)")
            for i, source in enumerate(names):
                part = batch if len(names) == 1 else batch.filter(pa.array(codes == i))
                sources.setdefault(source, GroupStats()).merge(document_batch_stats(part, token_counter))
        for g in sources.values():
            g.cap_domains()
        result.sources = sources
    except (OSError, pa.ArrowException, ShardError, ValueError) as err:
        result.sources = {}
        result.error = str(err) or type(err).__name__
    return result


def summarise_token_shard(folder: str, prefix: str, source_names: list[str], default_source: str, chunk: int = 1 << 22) -> ShardResult:
    result = ShardResult(prefix)
    try:
        shard = IndexedDataset(os.path.join(folder, prefix))  # checks .idx against itself and .bin's size
        if shard.dtype != np.dtype("<u2"):
            raise ShardError(f"{prefix}.idx: dtype {shard.dtype}, token shards hold uint16")
        sizes, src = shard.lengths, shard.sources
        n = len(sizes)
        result.file_bytes = shard.bin_bytes + os.path.getsize(shard.prefix + ".idx") + (len(src) if src is not None else 0)
        if src is not None:
            if n and int(src.max()) >= len(source_names):
                raise ShardError(f"{prefix}.src: source index {int(src.max())} outside manifest source_names ({len(source_names)})")
            labels = list(source_names)
        else:
            labels = [default_source]
        k = len(labels)
        docs = np.zeros(k, np.int64)
        toks = np.zeros(k, np.int64)
        hist = np.zeros(k * LENGTH_NBINS, np.int64)
        for start in range(0, n, chunk):  # bounded memory for shards of any size
            s = np.asarray(sizes[start : start + chunk], dtype=np.int64)
            c = np.zeros(len(s), np.int64) if src is None else np.asarray(src[start : start + chunk], dtype=np.int64)
            docs += np.bincount(c, minlength=k)
            np.add.at(toks, c, s)
            hist += np.bincount(c * LENGTH_NBINS + length_bins(s), minlength=k * LENGTH_NBINS)
        for i, label in enumerate(labels):
            if docs[i]:
                result.sources[label] = GroupStats(
                    docs=int(docs[i]), bytes=2 * int(toks[i]), tokens=int(toks[i]),
                    length_hist=hist[i * LENGTH_NBINS : (i + 1) * LENGTH_NBINS].copy(),
                )  # fmt: skip
    except (OSError, ShardError, ValueError) as err:
        result.sources = {}
        result.error = str(err)
    return result


def token_default_source(manifest: dict) -> str:
    """The source of a token shard without `.src`: the manifest's only source, else "(unknown)"."""
    sources = list((manifest or {}).get("sources") or {})
    names = list((manifest or {}).get("source_names") or [])
    if len(sources) == 1:
        return sources[0]
    if len(names) == 1:
        return names[0]
    return "(unknown)"


def summarise_shard(target: Target, shard: str, token_counter=None) -> ShardResult:
    if target.kind == "documents":
        return summarise_document_shard(os.path.join(target.folder, shard), token_counter)
    manifest = target.manifest or {}
    return summarise_token_shard(target.folder, shard, list(manifest.get("source_names") or []), token_default_source(manifest))


# ---------------------------------------------------------------------------------------------------
# Merging shard results of one folder


@dataclasses.dataclass
class FolderAccumulator:
    shards: dict = dataclasses.field(default_factory=dict)  # name -> row (small dict)
    sources: dict = dataclasses.field(default_factory=dict)  # source -> GroupStats
    errors: dict = dataclasses.field(default_factory=dict)  # shard name -> message

    def add(self, result: ShardResult) -> "FolderAccumulator":
        if result.error is not None:
            self.errors[result.name] = result.error
            return self
        total = result.total()
        self.shards[result.name] = {
            "file_bytes": result.file_bytes, "docs": total.docs, "bytes": total.bytes, "chars": total.chars,
            "tokens": total.tokens, "length_hist": total.length_hist, "sources": sorted(result.sources),
        }  # fmt: skip
        for source, g in result.sources.items():
            self.sources.setdefault(source, GroupStats()).merge(g)
        return self

    def merge(self, other: "FolderAccumulator") -> "FolderAccumulator":
        self.shards.update(other.shards)
        self.errors.update(other.errors)
        for source, g in other.sources.items():
            self.sources.setdefault(source, GroupStats()).merge(g)
        return self


    def to_state(self) -> dict:
        """Exact, JSON-able state (a Beam job hands its merged result back through it)."""
        shards = {n: {**row, "length_hist": _trimmed(row["length_hist"])} for n, row in sorted(self.shards.items())}
        return {"shards": shards, "sources": {s: g.to_state() for s, g in sorted(self.sources.items())}, "errors": dict(sorted(self.errors.items()))}

    @classmethod
    def from_state(cls, d: dict) -> "FolderAccumulator":
        shards = {n: {**row, "length_hist": _untrim(*row["length_hist"], LENGTH_NBINS)} for n, row in d["shards"].items()}
        return cls(shards, {s: GroupStats.from_state(g) for s, g in d["sources"].items()}, dict(d["errors"]))


def summarise_folder(target: Target, token_counter=None) -> FolderAccumulator:
    """In-process: one shard at a time; only one shard's batch is in memory at once."""
    acc = FolderAccumulator()
    for shard in target.shards:
        acc.add(summarise_shard(target, shard, token_counter))
    return acc


# ---------------------------------------------------------------------------------------------------
# The report (a JSON-able dict)


def _share(n: int, total: int) -> float:
    return n / total if total else 0.0


def group_report(g: GroupStats, unit: str, top_domains: int = 25) -> dict:
    out = {
        "docs": g.docs, "bytes": g.bytes, "chars": g.chars if unit == "chars" else None, "tokens": g.tokens,
        "mean_length": (g.chars if unit == "chars" else (g.tokens or 0)) / g.docs if g.docs else None,
        "median_length": median_length(g.length_hist),
        "length_hist": {"unit": unit, "bins_per_octave": LENGTH_BINS_PER_OCTAVE, "first_bin": _trimmed(g.length_hist)[0], "counts": _trimmed(g.length_hist)[1]},
    }  # fmt: skip
    if unit == "tokens":
        return out
    out["languages"] = [
        {"language": lang, "docs": n, "share": _share(n, g.docs), "mean_score": (micro / scored / SCORE_UNITS) if scored else None}
        for lang, (n, scored, micro) in sorted(g.languages.items(), key=lambda kv: (-kv[1][0], kv[0]))
    ]
    scored = int(g.ppl_hist.sum())
    first, counts = _trimmed(g.ppl_hist)
    out["perplexity"] = {
        "scored": scored, "unscored": g.ppl_missing, "median": median_perplexity(g.ppl_hist),
        "hist": {"log10_bin_width": PPL_BIN_WIDTH, "first_bin": first, "counts": counts},
    }  # fmt: skip
    bucketed = {b: v for b, v in g.buckets.items()}
    out["buckets"] = {
        b: {"docs": n, "share": _share(n, g.docs), "chars": chars, "char_share": _share(chars, g.chars)}
        for b, (n, chars) in sorted(bucketed.items(), key=lambda kv: (_bucket_order(kv[0]), kv[0]))
    }
    q_n = int(g.quality_hist.sum())
    out["quality"] = {
        "scored": q_n, "unscored": g.quality_missing, "mean": (g.quality_micro / q_n / SCORE_UNITS) if q_n else None,
        "hist": {"bins": QUALITY_NBINS, "counts": [int(x) for x in g.quality_hist]},
    }  # fmt: skip
    ranked = sorted(g.domains.items(), key=lambda kv: (-kv[1], kv[0]))
    out["domains"] = {
        "top": [[d, n] for d, n in ranked[:top_domains]], "distinct": len(g.domains),
        "other": g.domains_other, "no_domain": g.no_domain, "exact": g.domains_other == 0,
    }  # fmt: skip
    return out


def _bucket_order(b: str) -> int:
    return {"head": 0, "middle": 1, "tail": 2}.get(b, 3)


def train_folder_report(target: Target) -> dict:
    train = training.training_report(target.folder)
    return {
        "path": target.folder, "name": target.name, "kind": "train", "job": "train", "funnel": None, "mix": None,
        "training": train, "problems": list(target.problems) + train.pop("problems"), "warnings": [],
    }  # fmt: skip


def folder_report(target: Target, acc: FolderAccumulator) -> dict:
    if target.kind == "train":
        return train_folder_report(target)
    unit = "chars" if target.kind == "documents" else "tokens"
    total = GroupStats()
    for source in sorted(acc.sources):
        total.merge(acc.sources[source])
    shards = []
    for name in sorted(acc.shards):
        row = acc.shards[name]
        shards.append({
            "name": name, "file_bytes": row["file_bytes"], "docs": row["docs"], "bytes": row["bytes"],
            "chars": row["chars"] if unit == "chars" else None, "tokens": row["tokens"], "sources": row["sources"],
            "mean_length": ((row["chars"] if unit == "chars" else row["tokens"]) or 0) / row["docs"] if row["docs"] else None,
            "median_length": median_length(row["length_hist"]),
        })  # fmt: skip
    problems = list(target.problems) + [{"file": os.path.join(target.folder, name), "error": acc.errors[name]} for name in sorted(acc.errors)]
    report = {
        "path": target.folder, "name": target.name, "kind": target.kind,
        "job": target_job(target), "length_unit": unit, "is_mix": is_mix(target),
        "funnel": funnel(target.stats),
        "total": group_report(total, unit),
        "sources": {s: group_report(acc.sources[s], unit) for s in sorted(acc.sources)},
        "shards": shards,
        "mix": mix_report(target.manifest, acc) if target.kind == "tokens" else None,
        "problems": problems,
        "warnings": [],
    }  # fmt: skip
    if target.kind == "tokens" and target.manifest:
        report["tokenizer"] = target.manifest.get("tokenizer")
        report["warnings"] = manifest_warnings(target, acc)
        report["repeats"] = list(target.manifest.get("warnings") or [])  # the mix's sources past --max-epochs
    return report


def funnel(stats: dict | None) -> dict | None:
    if not stats or "stages" not in stats:
        return None
    stages = [
        {"name": s["name"], "docs_in": s.get("docs_in", 0), "kept": s.get("docs_out", 0), "dropped": dict(s.get("dropped", {})),
         "chars_in": s.get("chars_in", 0), "chars_out": s.get("chars_out", 0), **({"notes": s["notes"]} if s.get("notes") else {})}
        for s in stats["stages"]
    ]  # fmt: skip
    return {"job": stats.get("job"), "read": stats.get("read"), "kept": stats.get("kept"), "dropped": dict(stats.get("dropped", {})), "stages": stages}


def mix_report(manifest: dict | None, acc: FolderAccumulator) -> dict | None:
    """Achieved mix (recomputed from the shards) against the manifest's targets, and epochs per source."""
    manifest = manifest or {}
    declared = manifest.get("sources") or {}
    total_tokens = sum(g.tokens or 0 for g in acc.sources.values())
    names = list(manifest.get("source_names") or [])
    names += sorted(s for s in set(declared) | set(acc.sources) if s not in names)
    rows = []
    for s in names:
        g = acc.sources.get(s)
        d = declared.get(s) or {}
        if g is None and not d:
            continue
        tokens = (g.tokens or 0) if g else 0
        rows.append({
            "source": s, "docs": g.docs if g else 0, "tokens": tokens, "achieved": _share(tokens, total_tokens),
            "target": d.get("target"), "manifest_share": d.get("share"), "epochs": d.get("epochs"),
            "deviation": (_share(tokens, total_tokens) - d["target"]) if d.get("target") is not None else None,
        })  # fmt: skip
    return {"total_tokens": total_tokens, "sources": rows}


def manifest_warnings(target: Target, acc: FolderAccumulator) -> list[dict]:
    """Where the manifest and the files disagree (each shard's counts, each source's tokens)."""
    out = []
    path = os.path.join(target.folder, MANIFEST_FILE)
    for entry in target.manifest.get("shards", []):
        row = acc.shards.get(entry.get("prefix"))
        if row is None:
            continue
        for key, have in (("documents", row["docs"]), ("tokens", row["tokens"])):
            if key in entry and entry[key] != have:
                out.append({"file": path, "error": f"shard {entry['prefix']}: manifest says {entry[key]} {key}, files hold {have}"})
    if not acc.errors:
        for s, d in (target.manifest.get("sources") or {}).items():
            g = acc.sources.get(s)
            have = (g.tokens or 0) if g else 0
            if "tokens" in d and d["tokens"] != have:
                out.append({"file": path, "error": f"source {s}: manifest says {d['tokens']} tokens, shards hold {have}"})
    return out


def build_report(path: str, kind: str, targets: list[Target], accumulators: Iterable[FolderAccumulator]) -> dict:
    from reporting.overview import run_overview

    folders = [folder_report(t, a) for t, a in zip(targets, accumulators)]
    if kind != "run":
        return folders[0]
    return {
        "path": path, "kind": "run", "overview": run_overview(folders), "jobs": folders,
        "problems": [p for f in folders for p in f["problems"]], "warnings": [w for f in folders for w in f["warnings"]],
    }  # fmt: skip


def folders_of(report: dict) -> list[dict]:
    return report["jobs"] if report.get("kind") == "run" else [report]


def sentencepiece_counter(model_path: str):
    """A token counter over an Arrow string array with a SentencePiece model (for document shards)."""
    from pipeline.models import load_sentencepiece

    sp = load_sentencepiece(model_path)

    def count(text: pa.Array) -> int:
        return sum(len(ids) for ids in sp.encode(text.to_pylist()))

    return count
