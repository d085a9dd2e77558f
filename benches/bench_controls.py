"""Cost of ``--controls`` in the demo's dissection step, and the demo's rotation finding.

Usage: python benches/bench_controls.py DEMO_OUT [--repeats 3]
DEMO_OUT is a finished ``python -m dissect.demo --out DEMO_OUT`` (its store and scenenet.pt).
Prints (1) the dissection of block2+block4 without and with the controls, interleaved, medians;
(2) trained / rotated (--rotate 0) / random-init detectors of block4 at IoU thresholds 0.04-0.20,
with the participation ratio of block4's activation covariance (the layer's effective dimension).
Numbers and the machine's load: benches/RESULTS.md ("The demo's controls").
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _model(src: Path):
    from dissect.demo import SceneNet

    state = torch.load(src / "scenenet.pt", weights_only=True)
    m = SceneNet(state["fc.weight"].shape[0])  # as many classes as the world has scenes
    m.load_state_dict(state)
    return m.eval()


def _dissect(src: Path, out: Path, controls: bool):
    from dissect import Dissection

    return Dissection(_model(src), ["block2", "block4"], str(src / "store"), input_size=64, top_k=8, device="cpu",
                      batch_size=100, workers=0, quiet=True, checkpoint_every=0).run(out=out, report=False,
                                                                                       controls=controls)


def cost(src: Path, repeats: int) -> None:
    times = {False: [], True: []}
    for _ in range(repeats):
        for controls in (False, True):
            tmp = Path(tempfile.mkdtemp(prefix="bench_controls_"))
            t = time.perf_counter()
            _dissect(src, tmp / "o", controls)
            times[controls].append(time.perf_counter() - t)
            shutil.rmtree(tmp)
    for c, ts in times.items():
        print(f"dissect block2+block4 {'with' if c else 'without'} controls: median {statistics.median(ts):.1f} s "
              f"({', '.join(f'{t:.1f}' for t in ts)})")


def block4(src: Path, random: bool):
    """block4's activations float[N, 96, 16, 16] on the store's images (trained or random-init SceneNet)."""
    from broden_builder import BrodenStore
    from broden_builder.torch_dataset import IMAGENET_MEAN, IMAGENET_STD
    from dissect.demo import SceneNet

    store = BrodenStore(src / "store")
    x = torch.stack([torch.from_numpy(np.array(store.load_image(i))).permute(2, 0, 1).float() / 255
                     for i in range(len(store.rows))])
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    trained = _model(src)
    torch.manual_seed(0)
    m = SceneNet(trained.fc.out_features).eval() if random else trained
    seen = {}
    m.block4.register_forward_hook(lambda mod, i, o: seen.__setitem__("a", o.detach()))
    with torch.no_grad():
        m(x)
    return seen["a"]


def participation_ratio(src: Path, random: bool) -> float:
    """(sum of eigenvalues)^2 / sum of squares, of block4's covariance over every probe position."""
    a = block4(src, random)
    a = a.permute(0, 2, 3, 1).reshape(-1, a.shape[1]).double()
    a = a - a.mean(0)
    ev = torch.linalg.eigvalsh(a.T @ a / len(a)).clamp(min=0)
    return float(ev.sum() ** 2 / (ev ** 2).sum())


def loudness(src: Path) -> dict:
    """Mean norm of block4's activation vector (trained) at the positions of each object and material
    label, and at unlabelled positions ("(none)"): where any mix of the units has its largest values.
    The store's 32 px planes are sampled at the layer's 16 x 16 grid (every second pixel)."""
    from broden_builder import BrodenStore

    store = BrodenStore(src / "store")
    norm = block4(src, False).pow(2).sum(1).sqrt().numpy()
    names = {lab.number: lab.name for lab in store.labels}
    out = {}
    for cat in ("object", "material"):
        found: dict = {}
        for i in range(len(store.rows)):
            planes = store.pixel_layers(i, cat)
            plane = planes[0][::2, ::2] if planes else np.zeros(norm.shape[1:], np.int64)
            for v in np.unique(plane):
                found.setdefault(names.get(int(v), "(none)"), []).append(norm[i][plane == v])
        out[cat] = {k: float(np.concatenate(v).mean()) for k, v in sorted(found.items())}
    return out


def sweep(src: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench_controls_"))
    res = _dissect(src, tmp / "o", True)
    runs = {"trained": res.layers["block4"], "rotated": res.controls.rotated["block4"],
            "random init": res.controls.random["block4"]}
    for t in (0.04, 0.06, 0.08, 0.10, 0.15, 0.20):
        cells = []
        for name, r in runs.items():
            det = [u for u in r.units if u["iou"] >= t]
            cells.append(f"{name} {len(det):3d} ({len({u['label'] for u in det}):2d})")
        print(f"block4 IoU >= {t:.2f}: " + "   ".join(cells))
    print(f"participation ratio of block4 (96 units): trained {participation_ratio(src, False):.1f}, "
          f"random init {participation_ratio(src, True):.1f}")
    for cat, by_label in loudness(src).items():
        print(f"block4 activation norm at {cat} pixels: " + ", ".join(f"{k} {v:.1f}" for k, v in by_label.items()))
    shutil.rmtree(tmp)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("demo_out", type=Path)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"load average {os.getloadavg()[0]:.1f} at start")
    if args.repeats:  # --repeats 0: only the sweep, participation ratio and loudness
        cost(args.demo_out, args.repeats)
    sweep(args.demo_out)
    print(f"load average {os.getloadavg()[0]:.1f} at end")


if __name__ == "__main__":
    main()
