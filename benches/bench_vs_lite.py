"""Whole-process comparison: `dissect score` (default settings, with and without the report)
against NetDissect-Lite's quantile + tally (benches/lite_reimpl.py), on the same store and the
same activations, alternating runs, medians, peak RSS; the IoUs are checked to agree.

    python benches/bench_vs_lite.py [--workdir /tmp/bench_vs_lite] [--quick] [--repeats 3]
                                    [--cases 1k7 4k7 1k56] [--baseline REV] [--json results.json]
                                    [--load N]

Cases: 1k7 / 4k7 = 1,000 / 4,000 images of ResNet-18 layer4 (512 x 7 x 7); 1k56 = 1,000
images of ResNet-18 layer1 (64 x 56 x 56). The synthetic stores (224 / 112) are built once
under --workdir and the activations computed once (torchvision resnet18, seeded random
weights; float32 .npy). Each timed run is a fresh process (python -m dissect.cli score ... or
python benches/lite_reimpl.py ...) with a fresh --out; the variants run in rotating order in
every repeat ("ours_omp1" is the default run under OMP_NUM_THREADS=1, which the defaults must
never be slower than). Peak RSS is the child's ru_maxrss (os.wait4: the largest of the process and
its DataLoader workers). --baseline REV also times `dissect score --no-report` of git revision
REV (a detached worktree under --workdir) as "today". --quick: one repeat, cases 1k7 and 1k56.
--load N: a loaded machine made on purpose: N processes that only spin (pure-Python loops) run
for the whole measurement, so every variant competes with the same steady load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASES = {"1k7": (1000, "layer4"), "4k7": (4000, "layer4"), "1k56": (1000, "layer1")}


def ensure_store(work: Path, n: int) -> Path:
    path = work / f"store{n}"
    if not (path / "index.csv").is_file():
        subprocess.run([sys.executable, __file__, "--_store", str(path), str(n)], check=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    return path


def build(path: Path, n: int) -> None:
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict

    recipe = recipe_from_dict({"name": "bench", "size": 224, "segmentation_size": 112,
                               "sources": [{"type": "synthetic", "count": n, "seed": 0}]})
    print(f"building {path} ...", flush=True)
    build_store(recipe, path, workers=len(os.sched_getaffinity(0)), quiet=True)


def ensure_activations(work: Path, store: Path, n: int, layers) -> dict:
    """resnet18 (seeded random weights) features of every image, one forward pass, float32 .npy.
    Computed in a child process: a forked child's peak RSS starts at its parent's, so the
    parent of the timed runs must stay small."""
    paths = {l: work / f"acts{n}_{l}.npy" for l in layers}
    if not all(p.is_file() for p in paths.values()):
        subprocess.run([sys.executable, __file__, "--_activations", str(work), str(store), str(n)] + list(layers),
                       check=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    return paths


def compute_activations(work: Path, store: Path, n: int, layers) -> None:
    paths = {l: work / f"acts{n}_{l}.npy" for l in layers}
    import torch
    import torchvision
    from torch.utils.data import DataLoader

    from broden_builder.store.reader import BrodenStore
    from broden_builder.torch_dataset import BrodenDataset, collate_broden

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    got = {}
    for l in layers:
        getattr(model, l).register_forward_hook(lambda m, i, o, l=l: got.__setitem__(l, o))
    ds = BrodenDataset(BrodenStore(store), with_labels=False)
    arrays = {}
    print(f"computing activations of {n} images ...", flush=True)
    with torch.no_grad():
        lo = 0
        for batch in DataLoader(ds, batch_size=32, num_workers=1, collate_fn=collate_broden):
            model(batch["image"])
            for l in layers:
                a = got[l].numpy()
                if l not in arrays:
                    arrays[l] = np.lib.format.open_memmap(str(paths[l]) + ".part", "w+", np.float32, (n,) + a.shape[1:])
                arrays[l][lo: lo + len(a)] = a
            lo += len(a)
    for l in layers:
        arrays[l].flush()
        del arrays[l]
        os.replace(str(paths[l]) + ".part", paths[l])


def start_load(n: int) -> list:
    """N busy processes (a reproducible loaded machine; killed by stop_load)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def stop_load(procs: list) -> None:
    for p in procs:
        p.kill()
        p.wait()


def timed(cmd, env=None) -> dict:
    """One whole process: wall s, CPU s (user + sys of it and its reaped children, e.g. DataLoader
    workers), peak RSS MiB, load average at start and end. Its stderr goes to a temporary file (a
    pipe read only after the exit could fill and block a talkative child); SystemExit with its tail
    when it fails. bench_full_scale uses it too."""
    import tempfile

    load = os.getloadavg()[0]
    with tempfile.TemporaryFile() as log:
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        log.seek(0)
        err = log.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{err[-3000:]}")
    return {"wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "rss_mib": ru.ru_maxrss / 1024, "load": load,
            "load_at_end": os.getloadavg()[0]}


def score_cmd(python, store, acts, out, report=False, extra=()):
    return [python, "-m", "dissect.cli", "score", "--store", str(store), "--activations", str(acts), "--out", str(out),
            "--quiet"] + ([] if report else ["--no-report"]) + list(extra)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--_store":
        build(Path(sys.argv[2]), int(sys.argv[3]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--_activations":
        compute_activations(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/bench_vs_lite")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=None)
    ap.add_argument("--baseline", default=None, help="git revision timed as 'today' (dissect score --no-report)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--load", type=int, default=0, help="busy processes running during the measurement")
    a = ap.parse_args()
    cases = a.cases or (["1k7", "1k56"] if a.quick else list(CASES))
    repeats = 1 if a.quick else a.repeats
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    env = dict(os.environ, PYTHONPATH=str(REPO))
    base_env = None
    if a.baseline:
        base = work / f"baseline_{a.baseline[:12]}"
        if not base.is_dir():
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), a.baseline], check=True)
        base_env = dict(os.environ, PYTHONPATH=str(base))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
          f"load average {os.getloadavg()}, python {platform.python_version()}", flush=True)
    report = {"machine": {"cores": os.cpu_count(), "load_start": os.getloadavg(), "busy_processes": a.load},
              "cases": {}}
    for case in cases:
        n, layer = CASES[case]
        store = ensure_store(work, n)
        ensure_activations(work, store, n, ["layer4", "layer1"] if n == 1000 else ["layer4"])
    load = start_load(a.load)
    try:
        run_cases(a, cases, repeats, work, py, env, base_env, report)
    finally:
        stop_load(load)
    report["machine"]["load_end"] = os.getloadavg()
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))
    return 0


def run_cases(a, cases, repeats, work, py, env, base_env, report) -> None:
    for case in cases:
        n, layer = CASES[case]
        store = ensure_store(work, n)
        layers = ["layer4", "layer1"] if n == 1000 else ["layer4"]
        acts = ensure_activations(work, store, n, layers)[layer]
        outs = work / f"out_{case}"
        variants = {
            "ours": lambda o: timed(score_cmd(py, store, acts, o), env),
            "ours+report": lambda o: timed(score_cmd(py, store, acts, o, report=True), env),
            "ours_omp1": lambda o: timed(score_cmd(py, store, acts, o), dict(env, OMP_NUM_THREADS="1")),
            "lite": lambda o: timed([py, str(REPO / "benches" / "lite_reimpl.py"), "--store", str(store),
                                     "--features", str(acts), "--out", str(o / "iou.npy")], env),
        }
        if base_env:
            variants["today"] = lambda o: timed(score_cmd(py, store, acts, o), base_env)
        runs = {k: [] for k in variants}
        names = list(variants)
        for r in range(repeats):
            for k in names[r % len(names):] + names[: r % len(names)]:  # rotate the order every repeat
                o = outs / k.replace("+", "_")
                shutil.rmtree(o, ignore_errors=True)
                o.mkdir(parents=True)
                res = variants[k](o)
                runs[k].append(res)
                print(f"  {case} {k:12s} run {r + 1}: {res['wall_s']:.1f} s wall, {res['cpu_s']:.1f} s CPU, "
                      f"{res['rss_mib']:.0f} MiB, load {res['load']:.1f}", flush=True)
        med = {k: {m: statistics.median(x[m] for x in v) for m in ("wall_s", "cpu_s", "rss_mib")}
               | {"min_wall_s": min(x["wall_s"] for x in v), "max_wall_s": max(x["wall_s"] for x in v)}
               for k, v in runs.items()}
        # IoU agreement: ours with the lite union vs Lite (its own sketch thresholds, and ours)
        chk = outs / "check"
        shutil.rmtree(chk, ignore_errors=True)
        subprocess.run(score_cmd(py, store, acts, chk, extra=["--union", "lite"]), env=env, check=True,
                       stdout=subprocess.DEVNULL)
        name = Path(acts).stem
        ours_iou = np.load(chk / name / "iou.npy").astype(np.float64)
        ours_thr = chk / name / "thresholds.npy"
        numbers = [x["number"] for x in json.loads((chk / name / "result.json").read_text())["labels"]]
        subprocess.run([py, str(REPO / "benches" / "lite_reimpl.py"), "--store", str(store), "--features", str(acts),
                        "--out", str(chk / "lite_same_thr.npy"), "--thresholds", str(ours_thr)], env=env, check=True)
        lite_own = np.load(outs / "lite" / "iou.npy")[:, numbers]
        lite_same = np.load(chk / "lite_same_thr.npy")[:, numbers]
        lite_thr = np.load(outs / "lite" / "iou_thresholds.npy")
        agree = {
            "same_thresholds_max_abs_iou_diff": float(np.abs(lite_same - ours_iou).max()),
            "same_thresholds_best_label_agreement": float((lite_same.argmax(1) == ours_iou.argmax(1)).mean()),
            "lite_thresholds_max_abs_iou_diff": float(np.abs(lite_own - ours_iou).max()),
            "lite_thresholds_best_label_agreement": float((lite_own.argmax(1) == ours_iou.argmax(1)).mean()),
            "lite_threshold_rel_diff_median": float(np.median(np.abs(lite_thr - np.load(ours_thr)) /
                                                              np.maximum(np.abs(np.load(ours_thr)), 1e-12))),
        }
        ratio = {k: med["lite"]["wall_s"] / med[k]["wall_s"] for k in med if k != "lite"}
        extra = (med["ours+report"]["wall_s"] / med["ours"]["wall_s"] - 1) * 100
        report["cases"][case] = {"images": n, "layer": layer, "shape": list(np.load(acts, mmap_mode="r").shape[1:]),
                                 "median": med, "runs": runs, "lite_over_ours": ratio,
                                 "report_adds_pct": extra, "iou_agreement": agree}
        print(f"{case}: " + ", ".join(f"{k} {v['wall_s']:.1f} s ({v['rss_mib']:.0f} MiB)" for k, v in med.items())
              + f"; Lite/ours {ratio['ours']:.2f}x, report +{extra:.0f}%; IoU check {agree}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
