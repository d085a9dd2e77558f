"""Cost of the permutation null (issue 20): `dissect score` with and without `--null N`, against
a plain loop that reruns the tally once per permutation, all as whole processes.

    python benches/bench_null.py [--workdir /tmp/bench_null] [--null 100] [--plain 5] [--repeats 1]

The store (1,000 synthetic images, 224 / 112) and the activations (ResNet-18 layer4, seeded
random weights, 512 x 7 x 7, float32 .npy) are those of benches/bench_vs_lite.py, built once
under --workdir. Timed, each a fresh process with default settings:

- ``score``: `python -m dissect.cli score --store S --activations A --out O --no-report`;
- ``score --null N``: the same with `--null N` (its result.json "timings.null" is the null pass);
- ``plain loop``: one process that, for permutations k = 0 .. --plain - 1 (numpy
  default_rng([0, k]), the null's own permutations), moves the activations to their partner
  image and reruns score_activations (pass 1 + pass 2, default settings) on them: the tally of
  one permuted pairing per iteration. Its time per permutation (after the first, which also
  imports and warms up) times N is the plain loop's cost of N permutations, in wall and in CPU
  seconds (user + system of the process and its reaped DataLoader workers, per permutation).

Prints the machine, the load (os.getloadavg) before and after, and a JSON line per variant.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benches"))


def timed(cmd: list) -> dict:
    """Wall and CPU seconds of a child process (``cmd``), its stdout."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t = time.perf_counter()
    r0 = os.times()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    r1 = os.times()
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    cpu = (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system)
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "stdout": p.stdout.strip().splitlines()[-3:]}


def plain_loop(store: str, acts: str, count: int) -> None:
    """The plain loop (run as a child): prints the seconds of each permuted rescoring."""
    import numpy as np

    from dissect import DissectConfig
    from dissect.engine import score_activations

    a = np.load(acts, mmap_mode="r")
    times, cpus = [], []
    cpu = lambda: sum(os.times()[:4])  # this process and its reaped children (DataLoader workers)
    for k in range(count):
        t, c = time.perf_counter(), cpu()
        perm = np.random.default_rng([0, k]).permutation(a.shape[0])
        moved = np.empty(a.shape, a.dtype)
        moved[perm] = a  # label image perm[i] gets the activations of image i
        score_activations(moved, store, DissectConfig(quiet=True))
        times.append(time.perf_counter() - t)
        cpus.append(cpu() - c)
    rounded = lambda xs: [round(x, 2) for x in xs]
    print(json.dumps({"per_permutation_s": rounded(times), "per_permutation_cpu_s": rounded(cpus)}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/bench_null")
    ap.add_argument("--null", type=int, default=100)
    ap.add_argument("--plain", type=int, default=5, help="permutations the plain loop runs (then extrapolated)")
    ap.add_argument("--_plain", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._plain:
        plain_loop(a._plain[0], a._plain[1], int(a._plain[2]))
        return 0
    import bench_vs_lite as b

    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    store = b.ensure_store(work, 1000)
    acts = b.ensure_activations(work, store, 1000, ["layer4"])["layer4"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs; load before {os.getloadavg()}")
    py = sys.executable
    base = [py, "-m", "dissect.cli", "score", "--store", str(store), "--activations", str(acts), "--quiet", "--no-report"]
    out = {"score": timed(base + ["--out", str(work / "o_plain")])}
    out[f"score --null {a.null}"] = timed(base + ["--out", str(work / "o_null"), "--null", str(a.null)])
    doc = json.loads((work / "o_null" / acts.stem / "result.json").read_text())
    out[f"score --null {a.null}"]["null_pass_s"] = round(doc["timings"]["null"], 2)
    loop = timed([py, __file__, "--_plain", str(store), str(acts), str(a.plain)])
    plain = json.loads(loop["stdout"][-1])
    per, per_cpu = plain["per_permutation_s"], plain["per_permutation_cpu_s"]
    steady, steady_cpu = per[1:] or per, per_cpu[1:] or per_cpu
    loop["per_permutation_s"], loop["per_permutation_cpu_s"] = per, per_cpu
    loop[f"extrapolated_{a.null}_cpu_s"] = round(sum(steady_cpu) / len(steady_cpu) * a.null, 1)
    loop[f"extrapolated_{a.null}_s"] = round(sum(steady) / len(steady) * a.null, 1)
    out[f"plain loop ({a.plain} permutations)"] = loop
    for k, v in out.items():
        print(k, json.dumps(v))
    null_cost = out[f"score --null {a.null}"]["wall_s"] - out["score"]["wall_s"]
    print(f"--null {a.null} adds {null_cost:.1f} s wall (null pass {doc['timings']['null']:.1f} s); the plain loop "
          f"needs {loop[f'extrapolated_{a.null}_s']:.0f} s for {a.null} permutations: "
          f"{loop[f'extrapolated_{a.null}_s'] / max(null_cost, 1e-9):.1f}x (added time), "
          f"{loop[f'extrapolated_{a.null}_s'] / out[f'score --null {a.null}']['wall_s']:.1f}x (whole run with --null)")
    null_cpu = out[f"score --null {a.null}"]["cpu_s"] - out["score"]["cpu_s"]
    plain_cpu = loop[f"extrapolated_{a.null}_cpu_s"]
    print(f"CPU: --null {a.null} adds {null_cpu:.1f} s; the plain loop needs {plain_cpu:.0f} s "
          f"(steady permutations): {plain_cpu / max(null_cpu, 1e-9):.1f}x")
    print(f"load after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
