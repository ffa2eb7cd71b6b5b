"""Running a job's plan in this process, as the tests do (the in-process executor of pipeline/plan.py)."""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.job import run_plan


def run_in_process(plan, paths, output) -> tuple[pa.Table | None, dict, list[dict]]:
    """(the documents of every shard in order, stats.json, dead letters) of the plan run into `output`."""
    stats = run_plan(plan, list(paths), str(output), {}, force=True, progress=False)
    tables = [pq.read_table(os.path.join(output, f)) for f in stats["files"]]
    with open(os.path.join(output, "dead_letter.jsonl")) as f:
        dead = [json.loads(line) for line in f]
    return (pa.concat_tables(tables) if tables else None), stats, dead
