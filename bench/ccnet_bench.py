"""Benchmarks of `corpusmill ccnet` (not a test): speed against datatrove, worker scaling, memory.

All runs are whole processes on this machine, interleaved within one invocation (absolute times drift
on shared machines: compare only within a run). Inputs are the shared corpus's 5 WARC files, and for
scale N copies of them as symlinks (the same pages N times: that is replication, not new data).

  speed:   1 core (taskset), corpusmill vs datatrove 0.10.1 (../shared/anchors/datatrove) and, with
           --before SRC, corpusmill at another checkout (e.g. the commit before a refactor); then
           1 vs 2 workers at 4x input. Each run also prints the machine's busy, idle and stolen
           core-seconds (/proc/stat) while it ran: a 2-worker run's idle cores are the part that does
           not divide, and the busy core-seconds of the same work show the machine's own drift.
  memory:  peak resident memory of all processes together (the job and its workers), 1x vs 16x input,
           2 workers; and the bytes of the largest census range (the most duplicate-table bytes any
           one worker holds).
Usage: python bench/ccnet_bench.py {speed,memory} --lm-dir DIR [--quality-model BIN] [--datatrove-python PY]
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import psutil

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SHARED = os.environ.get("CORPUSMILL_SHARED", os.path.join(REPO, "..", "shared", "corpus"))
ANCHOR = os.path.join(REPO, "..", "shared", "anchors", "datatrove", "run_baseline.py")


def replicate(copies: int, folder: str) -> list[str]:
    originals = sorted(glob.glob(os.path.join(SHARED, "commoncrawl", "crawl-*.warc.gz")))
    os.makedirs(folder, exist_ok=True)
    out = []
    for k in range(copies):
        for path in originals:
            link = os.path.join(folder, f"copy{k:02d}-{os.path.basename(path)}")
            if not os.path.exists(link):
                os.symlink(os.path.abspath(path), link)
            out.append(link)
    return out


def machine_cpu() -> dict:
    """Core-seconds this machine has spent busy, idle and stolen (by its host) since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
    return {"busy": (user + nice + system + irq + softirq) / hz, "idle": (idle + iowait) / hz, "steal": steal / hz}


def measure(cmd: list[str], env: dict | None = None, cwd: str = REPO, memory: bool = False) -> dict:
    """Wall seconds; the machine's busy, idle and stolen core-seconds during the run (this benchmark is
    the only load it should have: a slow run then says whether its cores were busier or idle); and
    with `memory`, peak RSS (sum over the process tree, and the largest process). Only a memory run
    samples: sampling the process tree every 50 ms costs about 3 % of a core (1.3 ms per sample),
    which a run with a worker on every core would pay and a 1-worker run would not."""
    proc = psutil.Popen(cmd, cwd=cwd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    peak = {"sum": 0, "max": 0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                procs = [proc] + proc.children(recursive=True)
                rss = []
                for p in procs:
                    try:
                        rss.append(p.memory_info().rss)
                    except psutil.Error:
                        pass
                peak["sum"] = max(peak["sum"], sum(rss))
                peak["max"] = max(peak["max"], max(rss, default=0))
            except psutil.Error:
                pass
            stop.wait(0.05)

    thread = threading.Thread(target=sample, daemon=True) if memory else None
    cpu_before = machine_cpu()
    start = time.perf_counter()
    if thread:
        thread.start()
    out, _ = proc.communicate()
    wall = time.perf_counter() - start
    cpu = {k: v - cpu_before[k] for k, v in machine_cpu().items()}
    stop.set()
    if thread:
        thread.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}... failed:\n{out.decode(errors='replace')[-3000:]}")
    result = {"wall": wall, "cpu": cpu, "output": out.decode(errors="replace")[-2000:]}
    return result | ({"peak_rss_sum": peak["sum"], "peak_rss_max": peak["max"]} if memory else {})


def corpusmill(src: str, inputs: list[str], output: str, args, workers: int, pin: bool, mode: str | None = None) -> list[str]:
    """The job as a user runs it; `mode` forces a DirectRunner running mode (default: the job's own
    choice, in_memory for one worker, worker processes for more)."""
    cmd = ([] if not pin else ["taskset", "-c", "0"]) + [sys.executable, "-m", "beam_jobs.cli", "ccnet", "--input", *inputs,
                                                           "--output", output, "--lm-dir", args.lm_dir, "--lid-model", args.lid_model,
                                                           f"--direct_num_workers={workers}", "--force"]
    cmd += [f"--direct_running_mode={mode}"] if mode else []
    cmd += ["--quality-model", args.quality_model] if args.quality_model else ["--no-quality"]
    return cmd


def datatrove(inputs_glob: str, work: str, args, workers: int, pin: bool) -> list[str]:
    return ([] if not pin else ["taskset", "-c", "0"]) + [args.datatrove_python, ANCHOR, "--mode", "once", "--extractor", "resiliparse",
                                                           "--tasks", str(workers), "--workers", str(workers), "--work-dir", work,
                                                           "--result-json", os.path.join(work, "r.json"), "--lid-model", args.lid_model,
                                                           "--input-glob", inputs_glob]


def speed(args) -> dict:
    tmp = tempfile.mkdtemp(prefix="ccnet-bench-")
    one = replicate(1, os.path.join(tmp, "x1"))
    four = replicate(4, os.path.join(tmp, "x4"))
    pages = 1344
    runs: dict[str, list] = {}
    cpus: dict[str, list] = {}

    def add(name, result):
        runs.setdefault(name, []).append(result["wall"])
        cpus.setdefault(name, []).append(result["cpu"])
        cpu = result["cpu"]
        print(f"  {name:<34} {result['wall']:7.2f} s   machine cores busy {cpu['busy']:6.2f} s, idle {cpu['idle']:5.2f} s, "
              f"stolen {cpu['steal']:4.2f} s", flush=True)

    for r in range(args.repeats + 1):  # the first round warms the caches and is not counted
        label = "warm-up" if r == 0 else f"round {r}"
        print(label, flush=True)
        res = {}
        res["corpusmill 1 core"] = measure(corpusmill(REPO, one, os.path.join(tmp, "o1"), args, 1, True))
        if args.before:
            res["corpusmill before, 1 core"] = measure(corpusmill(args.before, one, os.path.join(tmp, "ob"), args, 1, True),
                                                       env={"PYTHONPATH": args.before}, cwd=args.before)
        if args.datatrove_python:
            res["datatrove 1 core"] = measure(datatrove(os.path.join(tmp, "x1", "*.warc.gz"), os.path.join(tmp, f"dt{r}"), args, 1, True))
        # Scaling: the same worker processes (multi_processing) with 1 and with 2 workers; and the one
        # worker in this process (the job's default for 1 worker) for reference.
        res["corpusmill 4x, 1 worker process"] = measure(corpusmill(REPO, four, os.path.join(tmp, "o41"), args, 1, False, "multi_processing"))
        res["corpusmill 4x, 2 worker processes"] = measure(corpusmill(REPO, four, os.path.join(tmp, "o42"), args, 2, False))
        res["corpusmill 4x, 1 worker in process"] = measure(corpusmill(REPO, four, os.path.join(tmp, "o40"), args, 1, False))
        if r:
            for name, result in res.items():
                add(name, result)
    med = {name: statistics.median(v) for name, v in runs.items()}
    out = {"median_seconds": med, "pages_1x": pages, "machine_cpu_seconds": cpus}
    out["corpusmill_pages_per_s_per_core"] = pages / med["corpusmill 1 core"]
    if "datatrove 1 core" in med:
        out["datatrove_pages_per_s_per_core"] = pages / med["datatrove 1 core"]
        out["per_core_ratio"] = med["datatrove 1 core"] / med["corpusmill 1 core"]
    if "corpusmill before, 1 core" in med:
        out["before_over_after"] = med["corpusmill before, 1 core"] / med["corpusmill 1 core"]
    out["speedup_1_to_2_worker_processes_4x"] = med["corpusmill 4x, 1 worker process"] / med["corpusmill 4x, 2 worker processes"]
    # The same per round (its two runs minutes apart, not the whole benchmark): the load of this
    # shared machine drifts between rounds.
    out["speedup_1_to_2_per_round"] = [a / b for a, b in zip(runs["corpusmill 4x, 1 worker process"], runs["corpusmill 4x, 2 worker processes"])]
    if "datatrove 1 core" in med:
        out["per_core_ratio_per_round"] = [d / c for d, c in zip(runs["datatrove 1 core"], runs["corpusmill 1 core"])]
    # What does not divide between the workers shows as idle cores in the 2-worker run (its start
    # before the workers, the last file of a phase, the barriers); the ratio of the two runs' busy
    # core-seconds (the same work) shows what the machine itself moved between the two runs.
    one, two = cpus["corpusmill 4x, 1 worker process"], cpus["corpusmill 4x, 2 worker processes"]
    out["idle_core_seconds_2_worker_processes_4x"] = statistics.median(c["idle"] for c in two)
    out["busy_2_over_1_worker_processes_per_round"] = [b["busy"] / a["busy"] for a, b in zip(one, two)]
    out["speedup_1_in_process_to_2_worker_processes_4x"] = med["corpusmill 4x, 1 worker in process"] / med["corpusmill 4x, 2 worker processes"]
    return out


def memory(args) -> dict:
    tmp = tempfile.mkdtemp(prefix="ccnet-mem-")
    out = {}
    for copies in (1, 16):
        folder = os.path.join(tmp, f"x{copies}")
        inputs = replicate(copies, folder)
        output = os.path.join(tmp, f"o{copies}")
        res = measure(corpusmill(REPO, inputs, output, args, 2, False) + [f"--census-range-mb={args.census_range_mb}"], memory=True)
        with open(os.path.join(output, "stats.json")) as f:
            stats = json.load(f)
        out[f"{copies}x"] = {"inputs": len(inputs), "input_bytes": sum(os.path.getsize(p) for p in inputs), "wall": res["wall"],
                             "peak_rss_sum": res["peak_rss_sum"], "peak_rss_max": res["peak_rss_max"], "census": stats.get("census")}
        print(f"{copies:>3}x: {res['wall']:.1f} s, peak RSS all processes {res['peak_rss_sum'] / 1e6:.0f} MB, largest process "
              f"{res['peak_rss_max'] / 1e6:.0f} MB, census {stats.get('census')}", flush=True)
    out["ratio_16x_over_1x"] = out["16x"]["peak_rss_sum"] / out["1x"]["peak_rss_sum"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["speed", "memory"])
    parser.add_argument("--lm-dir", required=True)
    parser.add_argument("--lid-model", default=os.path.join(REPO, "models", "lid.176.ftz"))
    parser.add_argument("--quality-model", default=None)
    parser.add_argument("--datatrove-python", default=None, help="python of a venv with datatrove 0.10.1 (see the anchor's README)")
    parser.add_argument("--before", default=None, help="another checkout of corpusmill to time side by side")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--census-range-mb", type=int, default=512)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = speed(args) if args.mode == "speed" else memory(args)
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
