"""`corpusmill train` under the job convention (pipeline/job.py `run_job`): the fingerprint of the
shards and the config, "up to date" on a rerun, --force, a time-limited run that counts as finished,
and stats.json's accounting of the token stream. CPU, the tiny model of tests/test_train.py on shards
of the bundled Wikipedia sample, a few steps each."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from model import checkpoint
from model.data import write_shards
from model.train import train
from pipeline.runs import InputError
from tests.test_train import BOS, EOS, VOCAB, make_sample_shards, sample_documents, tiny_config, train_losses

REPO = Path(__file__).resolve().parents[1]
QUIET = open(os.devnull, "w")
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def write_yaml(cfg, path: Path) -> Path:
    raw = asdict(cfg)
    raw["model"] = {"name": "tiny", **raw["model"]["overrides"]}
    path.write_text(yaml.safe_dump(raw))
    return path


def cli(config: Path, *extra: str) -> int:
    from beam_jobs.cli import main

    return main(["train", "--config", str(config), "--device", "cpu", *extra])


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under the run folder: its bytes and its mtime."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def stats_of(folder: Path) -> dict:
    return json.loads((folder / "stats.json").read_text())


def metric_steps(folder: Path) -> list[int]:
    return [r["step"] for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


@pytest.fixture
def manifest(tmp_path) -> Path:
    return make_sample_shards(tmp_path / "shards")


def test_a_finished_run_is_up_to_date_and_left_as_it_is(manifest, tmp_path, capsys):
    cfg = tiny_config(manifest, tmp_path / "run", max_steps=3)
    cfg.checkpoint.resume = "auto"
    config = write_yaml(cfg, tmp_path / "run.yaml")
    assert cli(config) == 0
    first = capsys.readouterr().out
    assert "step       3  loss" in first and "done at step 3 (max_steps)" in first
    before = snapshot(tmp_path / "run")
    assert "stats.json" in before and "checkpoints/step-0000003/.metadata" in before

    assert cli(config) == 0
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'run'}: up to date (a finished run of the same shards and config); --force trains again"
    assert snapshot(tmp_path / "run") == before  # nothing written, not even touched
    # A toggle that changes neither the weights nor the final losses is not a new run.
    assert cli(config, "--set", "logging.tensorboard=true", "--set", "checkpoint.keep=1") == 0
    assert "up to date" in capsys.readouterr().out and snapshot(tmp_path / "run") == before
    # Without its final checkpoint the run is not complete: auto-resume finds none and trains it again.
    assert train(cfg, stream=QUIET) is None
    (tmp_path / "run" / "checkpoints" / "step-0000003" / ".metadata").unlink()
    again = train(cfg, stream=QUIET)
    assert again is not None and [s for s, _ in train_losses(again)] == [1, 2, 3]


def test_changed_shard_bytes_train_again_from_step_zero(manifest, tmp_path):
    cfg = tiny_config(manifest, tmp_path / "run", max_steps=3)
    cfg.checkpoint.resume = "auto"
    first = train(cfg, stream=QUIET)
    # The same documents in another order: the same sizes, other bytes (and mtimes).
    write_shards(manifest.parent, sample_documents()[::-1], VOCAB, BOS, EOS, docs_per_shard=200)
    log = tmp_path / "log.txt"
    with open(log, "w") as stream:
        second = train(cfg, stream=stream)
    assert second is not None, "other shards must not read as up to date"
    assert "starting over" in log.read_text() and "resumed from" not in log.read_text()
    assert [s for s, _ in train_losses(second)] == [1, 2, 3] and metric_steps(tmp_path / "run") == [1, 2, 3]
    assert train_losses(second) != train_losses(first)
    assert stats_of(tmp_path / "run")["fingerprint"] != first["stats"]["fingerprint"]
    assert stats_of(tmp_path / "run")["resumed_from"] is None


def test_changed_config_trains_again_and_more_steps_continue_the_run(manifest, tmp_path):
    cfg = tiny_config(manifest, tmp_path / "run", max_steps=3)
    cfg.checkpoint.resume = "auto"
    first = train(cfg, stream=QUIET)
    # Another peak learning rate is another run: the step-3 checkpoint is not continued.
    cfg.optimizer.lr = 1e-3
    other = train(cfg, stream=QUIET)
    assert [s for s, _ in train_losses(other)] == [1, 2, 3]
    assert train_losses(other)[0] == train_losses(first)[0]  # the same init and batch: step 1's loss is before any update
    assert train_losses(other)[1:] != train_losses(first)[1:]
    # More steps of the same run: it resumes from its step-3 checkpoint and goes on.
    cfg.training.max_steps = 5
    more = train(cfg, stream=QUIET)
    assert [s for s, _ in train_losses(more)] == [4, 5]
    stats = stats_of(tmp_path / "run")
    assert stats["resumed_from"] == str(tmp_path / "run" / "checkpoints" / "step-0000003")
    assert (stats["steps"], stats["steps_this_run"], stats["tokens_trained"]) == (5, 2, 5 * 2048)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")) == ["step-0000003", "step-0000005"]


def test_force_trains_again_from_scratch(manifest, tmp_path, capsys):
    cfg = tiny_config(manifest, tmp_path / "run", max_steps=4)
    cfg.checkpoint.resume, cfg.checkpoint.interval = "auto", 3
    config = write_yaml(cfg, tmp_path / "run.yaml")
    assert cli(config) == 0
    first = stats_of(tmp_path / "run")
    first_losses = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    capsys.readouterr()

    # Another checkpoint interval: the same run (up to date); --force trains it again from step 0.
    write_yaml(tiny_config(manifest, tmp_path / "run", max_steps=4), config)  # interval 0, resume none in the file
    assert cli(config, "--resume", "auto") == 0 and "up to date" in capsys.readouterr().out
    assert cli(config, "--force") == 0
    out = capsys.readouterr().out
    assert "resumed from" not in out and "step       1  loss" in out
    # The earlier run's checkpoints and curves are gone; the new ones are the same numbers (CPU, deterministic).
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*")) == ["step-0000004"]
    again = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r.get("loss"), r.get("val_loss")) for r in again] == \
        [(r["step"], r.get("loss"), r.get("val_loss")) for r in first_losses]
    assert stats_of(tmp_path / "run")["fingerprint"] == first["fingerprint"]
    # --force means from step 0: resuming a named checkpoint contradicts it.
    assert cli(config, "--force", "--resume", str(tmp_path / "run" / "checkpoints" / "step-0000004")) == 2
    assert "does not combine with resuming" in capsys.readouterr().err


def test_stats_account_for_every_token_and_document_of_the_stream(manifest, tmp_path):
    cfg = tiny_config(manifest, tmp_path / "run", max_steps=3)
    result = train(cfg, stream=QUIET)
    stats = stats_of(tmp_path / "run")
    assert stats == result["stats"]
    # The split, recomputed here from the documents: windows of 128 inputs; the last
    # ceil(4096 / 128) = 32 windows are validation; the rest of the stream fills no window.
    lengths = [len(d) for d in sample_documents()]
    total = sum(lengths)
    windows = (total - 1) // 128
    train_end, val_end = (windows - 32) * 128, windows * 128
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    expected = {
        "train": {"documents": sum(s < train_end for s in starts), "tokens": train_end, "windows": windows - 32},
        "validation": {"documents": sum(train_end <= s < val_end for s in starts), "tokens": val_end - train_end, "windows": 32},
        "tail": {"documents": sum(s >= val_end for s in starts), "tokens": total - val_end, "windows": 0},
    }
    assert stats["split"] == expected
    assert stats["manifest"] == {"path": str(manifest), "documents": 500, "tokens": total}
    assert sum(p["tokens"] for p in stats["split"].values()) == total
    assert (stats["read"], stats["kept"]) == (500, expected["train"]["documents"] + expected["validation"]["documents"])
    assert stats["dropped"] == ({"tail_shorter_than_a_window": expected["tail"]["documents"]} if expected["tail"]["documents"] else {})
    assert (stats["steps"], stats["stop_reason"], stats["tokens_trained"]) == (3, "max_steps", 3 * 2048)
    assert stats["epochs"] == pytest.approx(3 * 2048 / train_end)
    assert stats["train_loss"] == train_losses(result)[-1][1]  # logging.interval 1: the last logged step's loss
    assert stats["val_loss"] == result["val_loss"] and stats["checkpoint"] == "checkpoints/step-0000003"
    assert checkpoint.latest(tmp_path / "run" / "checkpoints") == tmp_path / "run" / "checkpoints" / "step-0000003"
    assert stats["config"]["training"]["device"] == "cpu" and "output" not in stats["config"]


def test_a_manifest_that_disagrees_with_its_shards_is_named_before_training(manifest, tmp_path):
    meta = json.loads(manifest.read_text())
    meta["shards"][1]["tokens"] += 1
    manifest.write_text(json.dumps(meta))
    with pytest.raises(InputError, match=f"{manifest}: the shard entries declare .* tokens, the shards hold"):
        train(tiny_config(manifest, tmp_path / "run", max_steps=3), stream=QUIET)
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "stats.json").exists()
    (manifest.parent / "mixed-00002.idx").unlink()
    with pytest.raises(FileNotFoundError, match="mixed-00002.idx is missing"):
        train(tiny_config(manifest, tmp_path / "run", max_steps=3), stream=QUIET)


def test_a_time_limited_run_is_finished_for_its_config(manifest, tmp_path):
    from reporting.training import training_report

    cfg = tiny_config(manifest, tmp_path / "run", max_steps=3)
    cfg.checkpoint.resume = "auto"
    train(cfg, stream=QUIET)
    # 100 steps in 60 microseconds: out of time before the first step (setup alone takes longer).
    cfg.training.max_steps, cfg.training.max_minutes = 100, 1e-6
    limited = train(cfg, stream=QUIET)
    assert limited["step"] == 3 and limited["stop_reason"] == "time_limit"
    stats = stats_of(tmp_path / "run")
    assert (stats["stop_reason"], stats["steps"], stats["max_steps"], stats["steps_this_run"]) == ("time_limit", 3, 100, 0)
    assert stats["train_loss"] is None  # no step in this run
    assert stats["checkpoint"] == "checkpoints/step-0000003"
    before = snapshot(tmp_path / "run")
    assert train(cfg, stream=QUIET) is None  # finished: the same command again does nothing
    assert snapshot(tmp_path / "run") == before
    summary = training_report(str(tmp_path / "run"))["summary"]
    assert (summary["complete"], summary["stop_reason"], summary["steps"], summary["tokens"]) == (True, "time_limit", 3, 3 * 2048)
    assert summary["train_tokens"] == stats["split"]["train"]["tokens"]


def test_two_ranks_write_one_stats_file_and_agree_that_a_rerun_is_up_to_date(manifest, tmp_path):
    cfg = tiny_config(manifest, tmp_path / "run", max_steps=2)
    cfg.checkpoint.resume = "auto"
    config = write_yaml(cfg, tmp_path / "run.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "model.train", "--config", str(config), "--device", "cpu"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    stats = stats_of(tmp_path / "run")
    assert (stats["world_size"], stats["steps"], stats["stop_reason"]) == (2, 2, "max_steps")
    assert not list((tmp_path / "run").glob(".tmp-*"))
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("up to date") == 1 and "loss" not in again.stdout  # rank 0 says it; nobody trains
    assert stats_of(tmp_path / "run") == stats
