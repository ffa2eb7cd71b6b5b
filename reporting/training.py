"""What a trainer run folder says: the loss and validation curves from its `metrics.jsonl`.

`corpusmill train` (model/metrics.py) appends one JSON record per log line to OUTPUT/metrics.jsonl:
training records carry `step` and `loss` (and `lr`, `tokens_per_s`, `memory_gib`, `mfu` where
known), evaluation records `step` and `val_loss`. The file is appended to, so a run resumed from an
earlier checkpoint logs some steps again: the later record of a step replaces the earlier one. A line
that is not a JSON record (a run killed mid-write) is named as a problem with its line number and
skipped; the rest still makes the curves.

A finished run also holds `stats.json` (the job convention, `model/train.py`): steps, tokens trained,
why it stopped (max_steps or time_limit), the final losses and how the stream was split between
training and validation. The summary takes those from it; a run without one (killed, or still
running) is summarised from its curves and marked not complete.
"""
from __future__ import annotations

import json
import os

import yaml

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.yaml"
STATS_FILE = "stats.json"


def is_train_folder(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, METRICS_FILE))


def _config(folder: str, problems: list[dict]) -> dict:
    path = os.path.join(folder, CONFIG_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as err:
        problems.append({"file": path, "error": f"cannot read {CONFIG_FILE}: {err}"})
        return {}
    return config if isinstance(config, dict) else {}


def _stats(folder: str, problems: list[dict]) -> dict | None:
    path = os.path.join(folder, STATS_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            stats = json.load(f)
    except (OSError, ValueError) as err:
        problems.append({"file": path, "error": f"cannot read {STATS_FILE}: {err}"})
        return None
    return stats if isinstance(stats, dict) and stats.get("job") == "train" else None


def training_report(folder: str) -> dict:
    """Curves (step-sorted [step, value] pairs) and a summary of one trainer run folder."""
    path = os.path.join(folder, METRICS_FILE)
    problems: list[dict] = []
    train: dict[int, dict] = {}
    val: dict[int, float] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                step = int(record["step"])
            except (ValueError, KeyError, TypeError) as err:
                problems.append({"file": path, "error": f"line {number}: not a metrics record ({type(err).__name__}: {err}); skipped"})
                continue
            if "loss" in record:
                train[step] = record
            if "val_loss" in record:
                val[step] = float(record["val_loss"])
    steps = sorted(train)
    config = _config(folder, problems)
    batch_tokens = (config.get("training") or {}).get("batch_tokens")
    last = train[steps[-1]] if steps else {}
    speeds = [train[s]["tokens_per_s"] for s in steps if train[s].get("tokens_per_s")]
    stats = _stats(folder, problems)
    finished = {}
    if stats:
        split = stats.get("split") or {}
        finished = {
            "steps": stats.get("steps"), "tokens": stats.get("tokens_trained"), "stop_reason": stats.get("stop_reason"),
            "epochs": stats.get("epochs"), "train_loss": stats.get("train_loss"), "val_loss": stats.get("val_loss"),
            "checkpoint": stats.get("checkpoint"),
            "train_tokens": (split.get("train") or {}).get("tokens"),
            "validation_tokens": (split.get("validation") or {}).get("tokens"),
        }  # fmt: skip
    return {
        "loss": [[s, float(train[s]["loss"])] for s in steps],
        "val_loss": [[s, val[s]] for s in sorted(val)],
        "summary": {
            "model": (config.get("model") or {}).get("name"),
            "steps": steps[-1] if steps else None,
            "tokens": steps[-1] * batch_tokens if steps and isinstance(batch_tokens, int) else None,
            "last_loss": float(last["loss"]) if last else None,
            "last_val_loss": val[max(val)] if val else None,
            "best_val_loss": min(val.values()) if val else None,
            "median_tokens_per_s": sorted(speeds)[(len(speeds) - 1) // 2] if speeds else None,
            "peak_memory_gib": max((train[s].get("memory_gib") or 0.0) for s in steps) if steps else None,
            "complete": stats is not None,
            "stop_reason": None, "epochs": None, "train_loss": None, "val_loss": None, "checkpoint": None,
            "train_tokens": None, "validation_tokens": None,
            # A finished run's own figures win over the curves': the curves sample every logging.interval steps.
            **{k: v for k, v in finished.items() if v is not None},
        },
        "problems": problems,
    }  # fmt: skip
