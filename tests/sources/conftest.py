import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
DATA = REPO / "tests" / "data" / "sources"


@pytest.fixture(autouse=True, scope="session")
def _models_dir():
    # The lid.176 model lives in the main checkout's models/ when a worktree has none.
    if not (REPO / "models" / "lid.176.ftz").exists() and "CORPUSMILL_MODELS" not in os.environ:
        for parent in REPO.parents:
            if (parent / "main" / "models" / "lid.176.ftz").exists():
                os.environ["CORPUSMILL_MODELS"] = str(parent / "main" / "models")
                break
    yield


def read_all(module, path, config, file_index=0):
    from pipeline.accounting import StageStats

    stats, dead = StageStats("read"), []
    batches = [b for _, b in module.read(str(path), file_index, stats, dead, config)]
    return batches, stats, dead


def apply(steps, batch):
    out = []
    for step in steps:
        batch, s = step(batch)
        out.append(s)
    return batch, out
