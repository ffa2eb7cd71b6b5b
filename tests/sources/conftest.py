from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
DATA = REPO / "tests" / "data" / "sources"


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


def run_source(name, paths, config, output):
    """(documents in order, stats.json as a dict, dead letters) of source `name`'s plan run in this process."""
    from pipeline import sources
    from tests.jobs import run_in_process

    return run_in_process(sources.plan(name, config, str(output)), [str(p) for p in paths], output)
