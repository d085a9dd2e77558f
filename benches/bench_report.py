"""What the HTML report adds to `dissect score` (issue 16, item 2): whole processes, alternating.

    python benches/bench_report.py --store S --activations A.npy [--workdir /tmp/bench_report]
                                   [--repeats 3] [--baseline-tree DIR] [--json out.json]

For each source tree (this checkout, and --baseline-tree: a checkout of an older revision, e.g.
``git worktree add --detach DIR REV``) and each repeat, in rotating order:

- ``score``: ``python -m dissect.cli score --store S --activations A --out FRESH --quiet`` with and
  without ``--no-report`` (default settings otherwise), wall and CPU (user + sys of the child and
  its DataLoader workers, from os.times);
- ``write_reports``: a fresh process that imports the report and rewrites the pages of one
  no-report output in place (``dissect.report.write_reports``), timed inside (wall, process CPU):
  the report alone, without the run around it.

Prints medians and the ratio with / without the report (target <= 1.25). Each tree runs with
PYTHONPATH=<tree> and the tree as working directory, under the interpreter running this script.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_INPROC = ("import sys, time, torch; torch.set_num_threads(1); t0 = time.perf_counter(); c0 = time.process_time()\n"
           "from dissect.report import write_reports\n"
           "write_reports(sys.argv[1], store=sys.argv[2], quiet=True)\n"
           "print(time.perf_counter() - t0, time.process_time() - c0)")


def timed(cmd: list, tree: Path) -> tuple:
    """(wall s, stdout) of one fresh process run from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.perf_counter()
    # cwd = the tree: ``python -m``/``-c`` put the working directory before PYTHONPATH on sys.path
    p = subprocess.Popen(cmd, env=env, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return wall, out


def run_once(tree: Path, variant: str, args, out: Path) -> dict:
    """One timed run of ``variant`` (score, score --no-report, write_reports) from ``tree``."""
    shutil.rmtree(out, ignore_errors=True)
    score = [sys.executable, "-m", "dissect.cli", "score", "--store", str(args.store),
             "--activations", str(args.activations), "--out", str(out), "--quiet"]
    if variant == "write_reports":
        timed(score + ["--no-report"], tree)  # untimed: the results to render
        wall, text = timed([sys.executable, "-c", _INPROC, str(out), str(args.store)], tree)
        inner_wall, inner_cpu = (float(x) for x in text.split())
        return {"wall": wall, "inner_wall": inner_wall, "inner_cpu": inner_cpu}
    before = os.times()  # children's CPU: the reaped child and its DataLoader workers
    wall, _ = timed(score + (["--no-report"] if variant == "no report" else []), tree)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"wall": wall, "cpu": cpu}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--activations", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_report"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-tree", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    trees = {"this": REPO} | ({"baseline": args.baseline_tree.resolve()} if args.baseline_tree else {})
    variants = [(t, v) for t in trees for v in ("no report", "report", "write_reports")]
    runs: dict = {f"{t}: {v}": [] for t, v in variants}
    for r in range(args.repeats):
        order = variants[r % len(variants):] + variants[:r % len(variants)]  # rotate the order
        for t, v in order:
            res = run_once(trees[t], v, args, args.workdir / f"{t}_{v.replace(' ', '_')}")
            res["load1"] = os.getloadavg()[0]
            runs[f"{t}: {v}"].append(res)
            print(f"{t:8s} {v:14s} " + " ".join(f"{k} {x:.2f}" for k, x in res.items()), flush=True)
    summary = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in runs.items()}
    for t in trees:
        ratio = summary[f"{t}: report"]["wall"] / summary[f"{t}: no report"]["wall"]
        summary[f"{t}: ratio"] = ratio
        print(f"{t}: median wall no report {summary[f'{t}: no report']['wall']:.2f} s, report "
              f"{summary[f'{t}: report']['wall']:.2f} s ({ratio:.2f}x); write_reports alone "
              f"{summary[f'{t}: write_reports']['inner_wall']:.2f} s wall, "
              f"{summary[f'{t}: write_reports']['inner_cpu']:.2f} s CPU")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": summary, "cpus": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
