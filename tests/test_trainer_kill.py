"""A trainer killed (SIGKILL) while it writes a checkpoint resumes, on the same command, from the last
complete checkpoint, and its losses are the uninterrupted run's, exactly (CPU, deterministic)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from model import checkpoint
from model.train import train
from tests.test_train import make_sample_shards, tiny_config, train_losses

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def test_killed_during_a_checkpoint_write_resumes_from_the_last_complete_one(tmp_path):
    manifest = make_sample_shards(tmp_path / "shards")
    reference_cfg = tiny_config(manifest, tmp_path / "reference", max_steps=12)
    reference_cfg.checkpoint.interval = 4
    reference = dict(train_losses(train(reference_cfg, stream=open("/dev/null", "w"))))

    cfg = tiny_config(manifest, tmp_path / "run", max_steps=12)
    cfg.checkpoint.interval, cfg.checkpoint.resume = 4, "auto"
    raw = asdict(cfg)
    raw["model"] = {"name": "tiny", **raw["model"]["overrides"]}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-u", "-m", "model.train", "--config", str(tmp_path / "run.yaml"), "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

    # Kill the trainer once it has said it is writing the step-8 checkpoint and the first of that
    # checkpoint's files is on disk.
    checkpoints = tmp_path / "run" / "checkpoints"
    partial = checkpoints / ".tmp-step-0000008"
    trainer = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in trainer.stdout:
        if line.startswith("checkpoint step-0000008: writing"):
            while not (partial.is_dir() and any(partial.iterdir())) and not (checkpoints / "step-0000008").exists():
                if trainer.poll() is not None:
                    pytest.fail("the trainer ended during the step-8 checkpoint")
                time.sleep(0.001)  # a polling interval, not the kill point: that is the file's appearance
            os.kill(trainer.pid, signal.SIGKILL)
            break
    else:
        pytest.fail("the trainer ended without starting the step-8 checkpoint")
    assert trainer.wait(timeout=60) == -signal.SIGKILL
    trainer.stdout.close()
    newest = checkpoint.latest(checkpoints)
    # Usually the kill lands inside the write (tens of milliseconds here): step 8 is then a partial
    # .tmp- folder without DCP's .metadata, and the newest complete checkpoint is step 4. If the
    # write won the race, step 8 is complete and named in `latest`; either way a resume must
    # continue exactly.
    assert newest is not None and newest.name in ("step-0000004", "step-0000008")
    if newest.name == "step-0000004":
        assert not (checkpoints / "step-0000008").exists() and not (partial / ".metadata").exists()
        assert any(partial.iterdir())
    killed_records = len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines())

    # The same command again.
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed_at = int(newest.name.removeprefix("step-"))
    assert f"resumed from {newest} at step {resumed_at}" in done.stdout
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    resumed = {r["step"]: r["loss"] for r in records[killed_records:] if "loss" in r}
    assert sorted(resumed) == list(range(resumed_at + 1, 13))
    assert resumed == {s: loss for s, loss in reference.items() if s > resumed_at}  # bit for bit
    assert checkpoint.latest(checkpoints).name == "step-0000012"
    assert not list(checkpoints.glob(".tmp-*"))  # the partial write was cleared when step 8 was written again
