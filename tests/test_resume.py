"""A killed web job resumes where it stopped: real SIGKILLs of the job's whole process group at points
chosen by the job's own progress (its completion markers), then the same command again."""
import glob
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, WARCS

COPIES = 8  # the two bundled WARC files, 8 times each (symlinks): 16 input files, 48 file tasks; enough work
# that the fixed start-up (interpreter, Beam, models: about 2 CPU seconds) does not decide the CPU assertion
FILE_PHASES = 3  # prepare, score, finish (pipeline/ccnet.py)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("copies")
    for k in range(COPIES):
        for path in WARCS:
            os.symlink(path, folder / f"copy{k}-{os.path.basename(path)}")
    return sorted(str(p) for p in folder.iterdir())


def command(inputs, output, lm_dir):
    return [sys.executable, "-m", "beam_jobs.cli", "ccnet", "--input", *inputs, "--output", str(output), "--lm-dir", lm_dir,
            "--direct_num_workers=1", "--no-quality", "--dedup-group-files=1"]  # copies do not dedup each other away


def run(cmd, kill_at_markers: int | None = None, output=None) -> tuple[int, float]:
    """(exit status, CPU seconds of the job and its worker processes). With `kill_at_markers`, the
    process group is killed once that many file tasks have finished."""
    proc = subprocess.Popen(cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_at_markers is not None:
        while proc.poll() is None and file_tasks_done(output) < kill_at_markers:
            time.sleep(0.01)
        assert proc.poll() is None, "the job finished before the kill point"
        os.killpg(proc.pid, signal.SIGKILL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def file_tasks_done(output) -> int:
    """The job's own progress: its file tasks' completion markers (pipeline/plan.py)."""
    return sum(len(glob.glob(f"{output}/.work/*/done/{phase}/*.json")) for phase in ("prepare", "score", "finish"))


def outputs(folder) -> dict:
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder)) if not f.startswith(".")}


@pytest.fixture(scope="module")
def uninterrupted(inputs, tmp_path_factory, lm_dir):
    out = tmp_path_factory.mktemp("whole")
    code, cpu = run(command(inputs, out, lm_dir))
    assert code == 0
    return out, cpu


@pytest.mark.slow
@pytest.mark.parametrize("share", [0.25, 0.5, 0.9])
def test_killed_run_resumes_to_the_same_bytes(inputs, uninterrupted, tmp_path, lm_dir, share):
    whole, whole_cpu = uninterrupted
    total = len(inputs) * FILE_PHASES
    code, _ = run(command(inputs, tmp_path, lm_dir), kill_at_markers=round(share * total), output=tmp_path)
    assert code == -signal.SIGKILL
    assert not os.path.exists(tmp_path / "stats.json")  # killed before the close
    kept = len(glob.glob(f"{tmp_path}/.work/*/done/prepare/*.json"))
    code, rerun_cpu = run(command(inputs, tmp_path, lm_dir))
    assert code == 0
    got, want = outputs(tmp_path), outputs(whole)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], (name, got[name][:3000], want[name][:3000])
    assert not os.path.exists(tmp_path / ".work")  # the work folder goes once the run is complete
    assert kept > 0
    if share >= 0.5:
        assert rerun_cpu <= 0.6 * whole_cpu, (rerun_cpu, whole_cpu)
