"""The linear quality classifier of LLaMA (CommonCrawl section) as RedPajama v1 built it
(data_prep/cc/classifier/, rp_v1 45b37c2): a fastText supervised model, `__label__wiki` (pages cited
by Wikipedia, or Wikipedia text) against `__label__cc` (random web pages); `wiki_prob` = P(wiki).

Text is prepared as RedPajama did, for training and scoring alike (`prepare`): lines joined with
spaces, case kept, nothing cut (classify.py:40, create_corpus.py:29,51). Positives shorter than
1,000 characters are left out (create_corpus.py:26). fastText's settings are its defaults
(`fasttext supervised -input data_train -output model`, data_prep/cc/README.md:86) except one
thread, for a deterministic model. Examples are deduplicated (exact, on the prepared text),
balanced (the larger class is sampled down to the smaller) and shuffled with a fixed seed, then
split into train and held-out sets; the saved model comes with a JSON card (data sources and counts,
hyper-parameters, held-out ROC AUC, accuracy, precision and recall at the threshold).
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import tempfile

import numpy as np

from classifiers.metrics import summarize
from pipeline.models import load_fasttext
from pipeline.runs import file_sha256

POSITIVE, NEGATIVE = "__label__wiki", "__label__cc"
MIN_POSITIVE_CHARS = 1000  # create_corpus.py:26
PREPARATION = "lines joined with spaces (RedPajama v1 classify.py:40), case kept, nothing cut"


def prepare(text: str) -> str:
    return " ".join(text.strip().splitlines())


@dataclasses.dataclass
class QualityHyperParameters:
    """What train-quality passes to fastText: nothing but one thread and the seed, so that every other
    setting is fastText's `supervised` default as in RedPajama v1 (epoch 5, lr 0.1, dim 100, word
    unigrams, softmax); a field set here overrides that default."""

    epoch: int | None = None
    lr: float | None = None
    dim: int | None = None
    wordNgrams: int | None = None
    thread: int = 1  # one thread: fastText's training is only deterministic on one (its default: cores - 1)
    seed: int = 0

    def arguments(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


FASTTEXT_ARGS = ("epoch", "lr", "dim", "ws", "wordNgrams", "minCount", "minn", "maxn", "neg", "bucket", "lrUpdateRate", "t", "thread", "seed")


def fasttext_arguments(model) -> dict:
    """The settings a trained fastText model was trained with, as fastText records them."""
    args = model.f.getArgs()
    out = {name: getattr(args, name) for name in FASTTEXT_ARGS}
    out["loss"] = str(args.loss).rsplit(".", 1)[-1]
    return out


@dataclasses.dataclass
class TrainingSet:
    train: list[tuple[str, str]]  # (label, prepared text)
    heldout: list[tuple[str, str]]
    counts: dict


def build_training_set(
    positives: list[str], negatives: list[str], seed: int = 0, heldout_fraction: float = 0.1, max_per_class: int | None = None
) -> TrainingSet:
    counts = {"positives_in": len(positives), "negatives_in": len(negatives)}
    pos = _dedup(prepare(t) for t in positives)
    neg = _dedup(prepare(t) for t in negatives)
    overlap = set(pos) & set(neg)  # the same text under both labels teaches nothing
    pos = [t for t in pos if t not in overlap]
    neg = [t for t in neg if t not in overlap]
    counts.update(positives_unique=len(pos), negatives_unique=len(neg), overlap_removed=len(overlap))
    if not pos or not neg:
        raise ValueError(
            f"the quality classifier needs both classes: {len(pos)} distinct positive (wiki) and {len(neg)} distinct "
            "negative (web) examples"
        )
    n = min(len(pos), len(neg), max_per_class or 1 << 62)
    rng = random.Random(seed)
    pos, neg = rng.sample(sorted(pos), n), rng.sample(sorted(neg), n)
    examples = [(POSITIVE, t) for t in pos] + [(NEGATIVE, t) for t in neg]
    rng.shuffle(examples)
    n_held = max(2, int(round(len(examples) * heldout_fraction))) if len(examples) >= 10 else 0
    heldout, train = examples[:n_held], examples[n_held:]
    if n_held and len({label for label, _ in heldout}) < 2:  # keep both classes in a tiny held-out set
        heldout, train = _stratified(examples, n_held)
    counts.update(per_class=n, train=len(train), heldout=len(heldout))
    return TrainingSet(train, heldout, counts)


def _stratified(examples, n_held):
    pos = [e for e in examples if e[0] == POSITIVE]
    neg = [e for e in examples if e[0] == NEGATIVE]
    held = pos[: n_held // 2] + neg[: n_held - n_held // 2]
    rest = pos[n_held // 2 :] + neg[n_held - n_held // 2 :]
    return held, rest


def _dedup(texts) -> list[str]:
    seen, out = set(), []
    for t in texts:
        if t and t not in seen:
            seen.add(t)
            out.append(t)
    return out


def write_fasttext_file(path: str, examples: list[tuple[str, str]]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for label, text in examples:
            f.write(f"{label} {text}\n")


class QualityModel:
    """A loaded classifier: `wiki_probability(texts)` -> P(wiki) per text."""

    def __init__(self, model):
        self.model = model
        labels = set(model.get_labels())
        if labels != {POSITIVE, NEGATIVE}:
            raise ValueError(
                f"not a quality classifier: its labels are {sorted(labels)[:5]}, expected {POSITIVE} and {NEGATIVE} "
                "(train one with `corpusmill train-quality`)"
            )

    @classmethod
    def load(cls, path: str) -> "QualityModel":
        return cls(load_fasttext(path, "quality classifier", "train one with `corpusmill train-quality` or pass --quality-model"))

    def wiki_probability(self, texts: list[str]) -> np.ndarray:
        """RedPajama's `wiki_prob` (classify.py:40-47): the top label's probability, or 1 minus it when
        the top label is `__label__cc`."""
        if not texts:
            return np.empty(0, np.float32)
        labels, probs = self.model.predict([prepare(t) for t in texts], k=1)
        out = np.empty(len(texts), np.float32)
        for i, (lab, p) in enumerate(zip(labels, probs)):
            top = min(1.0, float(p[0]))  # fastText's softmax can exceed 1 by a rounding step
            out[i] = top if lab[0] == POSITIVE else 1.0 - top
        return out


def train(training: TrainingSet, output_model: str, hyper: QualityHyperParameters, threshold: float, sources: dict) -> dict:
    """Train, evaluate on the held-out split, save the model and its card (`<model>.json`)."""
    import fasttext

    os.makedirs(os.path.dirname(os.path.abspath(output_model)), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(output_model)), prefix=".tmp-quality-") as tmp:
        train_path = os.path.join(tmp, "train.txt")
        write_fasttext_file(train_path, training.train)
        model = fasttext.train_supervised(input=train_path, verbose=0, **hyper.arguments())
        tmp_model = os.path.join(tmp, "model.bin")
        model.save_model(tmp_model)
        os.replace(tmp_model, output_model)
    heldout = None
    if training.heldout:
        qm = QualityModel(model)
        labels = np.array([label == POSITIVE for label, _ in training.heldout])
        # The held-out texts are already prepared; prepare() is idempotent.
        scores = qm.wiki_probability([t for _, t in training.heldout])
        heldout = summarize(labels, scores, threshold)
    card = {
        "model": os.path.basename(output_model),
        "task": "P(wiki: cited by Wikipedia, or Wikipedia text) vs random web page, fastText supervised (linear)",
        "labels": {"positive": POSITIVE, "negative": NEGATIVE},
        "preparation": PREPARATION,
        "data": {"sources": sources, "counts": training.counts},
        "hyper_parameters": {"set": hyper.arguments(), "trained_with": fasttext_arguments(model)},
        "threshold": threshold,
        "heldout": heldout,
        "sha256": file_sha256(output_model),
    }
    with open(output_model + ".json", "w") as f:
        json.dump(card, f, indent=2)
    return card
