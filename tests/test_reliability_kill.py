"""kill -9 and replay, and 1 vs 2 workers, through the `corpusmill` command as a subprocess.

A job's progress is its completion markers (OUTPUT/.work/<fingerprint>/done/<phase or barrier>/*.json,
pipeline/plan.py): the test waits until a given number of them exist, then SIGKILLs the job's whole
process group (the command and its Beam workers), reruns the same command, kills it again at a later
point, and finally lets it finish. Every output file must then have the bytes of an uninterrupted run.
"""
from __future__ import annotations

import glob
import gzip
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MALFORMED, WARCS

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
ONE_WORKER = ["--direct_num_workers=1", "--direct_running_mode=in_memory"]
TWO_WORKERS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
CCNET_INPUTS = WARCS + [str(MALFORMED / n) for n in (
    "chatnoir-resiliparse__clipped.warc.gz", "warcio__example-bad-non-chunked.warc.gz",
    "whirlwind-python__whirlwind.warc.wet.gz", "warcio__example-wrong-chunks.warc.gz", "pywb__bad.arc")]


def _split_lines(src: Path, folder: Path, name: str, parts: int) -> list[str]:
    """The bundled JSON-lines sample as `parts` gzip files (line i goes to file i % parts)."""
    lines = gzip.decompress(src.read_bytes()).splitlines(keepends=True)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(parts):
        (folder / f"{name}-{i}.jsonl.gz").write_bytes(gzip.compress(b"".join(lines[i::parts]), mtime=0))
    return [str(folder / f"{name}-*.jsonl.gz")]


def _stackexchange_sites(folder: Path) -> list[str]:
    """The bundled Posts.xml as three sites' dumps."""
    for site in ("a.stackexchange.com", "b.stackexchange.com", "c.stackexchange.com"):
        (folder / site).mkdir(parents=True)
        shutil.copy(SAMPLE / "stackexchange" / "coffee.stackexchange.com" / "Posts.xml", folder / site / "Posts.xml")
    return [str(folder / "*" / "Posts.xml")]


def _wikipedia(folder: Path) -> list[str]:
    folder.mkdir(parents=True)
    for p in sorted((SAMPLE / "wikipedia").glob("*.xml.bz2")):
        shutil.copy(p, folder / p.name)
    import bz2

    (folder / "enwiki-plain.xml").write_bytes(bz2.decompress((SAMPLE / "wikipedia" / "enwiki-first-pages.xml.bz2").read_bytes()))
    return [str(folder / "*.xml*")]


# job -> (its arguments given the input folder, kill points as numbers of completion markers)
JOBS = {
    "c4": (lambda d: ["source", "c4", "--input", *_split_lines(SAMPLE / "c4" / "c4-00000.json.gz", d, "c4", 3)], (1, 4, 6)),
    "github": (lambda d: ["source", "github", "--input", *_split_lines(SAMPLE / "github" / "github-sample.jsonl.gz", d, "gh", 3)], (1, 4, 6)),
    "books": (lambda d: ["source", "books", "--input", str(SAMPLE / "books" / "*.txt.gz")], (2, 6, 8)),
    "wikipedia": (lambda d: ["source", "wikipedia", "--input", *_wikipedia(d)], (1, 2)),
    "arxiv": (lambda d: ["source", "arxiv", "--input", str(SAMPLE / "arxiv" / "*")], (1, 2)),
    "stackexchange": (lambda d: ["source", "stackexchange", "--input", *_stackexchange_sites(d)], (1, 2)),
}


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO))


def corpusmill(args: list[str], output: Path, workers: list[str]) -> list[str]:
    return [sys.executable, "-m", "beam_jobs.cli", *args, "--output", str(output), *workers]


def markers(output: Path) -> int:
    return len(glob.glob(str(output / ".work" / "*" / "done" / "*" / "*.json")))


def run_to_end(cmd: list[str]) -> None:
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def kill_when(cmd: list[str], reached, what: str, timeout: float = 300) -> None:
    """Start the job in its own process group, SIGKILL the group once `reached()` (the job's own progress)."""
    job = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while not reached():
            if job.poll() is not None:
                pytest.fail(f"the job ended (exit {job.returncode}) before {what}: {job.stderr.read().decode()[-500:]}")
            assert time.time() < deadline, f"no progress to {what} in {timeout} s"
            time.sleep(0.005)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        job.stderr.close()
    assert job.returncode == -signal.SIGKILL, f"the job ended on its own (exit {job.returncode}) before the kill at {what}"


def kill_at(cmd: list[str], output: Path, point: int, timeout: float = 300) -> None:
    """SIGKILL the job's process group once `point` completion markers exist."""
    kill_when(cmd, lambda: markers(output) >= point, f"{point} completion markers", timeout)


def files(output: Path) -> dict[str, bytes]:
    """Every file the job left in its folder, by path relative to it (sub-folders included); the work
    folder must be gone, and no temporary file (`.tmp-*`, pipeline/runs.py) left anywhere."""
    assert not (output / ".work").exists()
    found = {p.relative_to(output).as_posix(): p for p in sorted(output.rglob("*"))}
    assert not [n for n in found if any(part.startswith(".tmp-") for part in n.split("/"))], sorted(found)
    return {n: p.read_bytes() for n, p in found.items() if p.is_file()}


def kill_and_replay(args: list[str], points, tmp: Path, workers: list[str]) -> None:
    reference, replayed = tmp / "reference", tmp / "replayed"
    run_to_end(corpusmill(args, reference, ONE_WORKER))
    for point in points:
        kill_at(corpusmill(args, replayed, workers), replayed, point)
        # Killed mid-job: the finished tasks' markers stay for the rerun, and there is no stats.json yet.
        assert markers(replayed) >= point and not (replayed / "stats.json").exists()
    run_to_end(corpusmill(args, replayed, workers))
    expected = files(reference)
    assert {"stats.json", "dead_letter.jsonl"} <= set(expected) and any(n.startswith("part-") for n in expected)
    got = files(replayed)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], f"{name} differs after kill -9 and replay"


@pytest.mark.slow
@pytest.mark.parametrize("job", list(JOBS))
def test_source_job_killed_and_replayed_gives_the_same_bytes(job, tmp_path):
    make_args, points = JOBS[job]
    kill_and_replay(make_args(tmp_path / "input"), points, tmp_path, ONE_WORKER)


@pytest.mark.slow
def test_ccnet_killed_with_its_workers_and_replayed_gives_the_same_bytes(tmp_path, lm_dir):
    # Two worker processes: the kill takes the whole process group, as a machine going down would.
    args = ["ccnet", "--input", *CCNET_INPUTS, "--lm-dir", lm_dir]
    kill_and_replay(args, (2, 9, 16), tmp_path, TWO_WORKERS)


@pytest.mark.slow
@pytest.mark.parametrize("job", ["c4", "wikipedia", "arxiv", "stackexchange"])
def test_one_and_two_workers_give_the_same_bytes(job, tmp_path):
    args = JOBS[job][0](tmp_path / "input")
    run_to_end(corpusmill(args, tmp_path / "one", ONE_WORKER))
    run_to_end(corpusmill(args, tmp_path / "two", TWO_WORKERS))
    one, two = files(tmp_path / "one"), files(tmp_path / "two")
    assert any(n.startswith("part-") for n in one) and sorted(one) == sorted(two)
    for name in one:
        assert one[name] == two[name], f"{job}: {name} differs between 1 and 2 workers"
