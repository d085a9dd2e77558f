"""The offline demo (``make demo``): build the synthetic store, train a small CNN on its scenes,
dissect two of its layers, write the report and print what the units detect.

Run as ``python -m dissect.demo [--out demo_out]``; ``--help`` lists the (size) knobs. Nothing
is downloaded. Deterministic for a fixed seed and thread count.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

log = logging.getLogger(__name__)

#: The layers the demo dissects (module names of :class:`SceneNet`).
DEMO_LAYERS = ("block2", "block4")

REAL_BRODEN_HELP = """\
The same on real Broden and real weights:
  broden build recipes/broden1_224.yaml --out broden1_224 --workers 8   # README: sources, downloads, licences
  dissect layers --model resnet18 --store broden1_224
  dissect run --store broden1_224 --model resnet18 --weights IMAGENET1K_V1 \\
      --layer layer3 --layer layer4 --out out_resnet18
  # out_resnet18/index.html is the report (dissect report out_resnet18 rewrites it)
or from Python:
  from dissect import Dissection
  result = Dissection(model, ["layer3", "layer4"], "broden1_224").run(out="out_resnet18")
"""


class SceneNet(nn.Module):
    """A small CNN: conv blocks (conv-BN-ReLU; the first with stride 2, the middle ones max-pooled),
    global average pooling and a linear classifier. Block outputs are named ``block1``, ``block2``, ...
    """

    def __init__(self, classes: int, widths: Sequence[int] = (32, 64, 96, 128)):
        super().__init__()
        c_in = 3
        self.names = []
        for i, w in enumerate(widths):
            layers = [nn.Conv2d(c_in, w, 3, stride=2 if i == 0 else 1, padding=1, bias=False), nn.BatchNorm2d(w),
                      nn.ReLU(inplace=False)]
            if 0 < i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            self.add_module(f"block{i + 1}", nn.Sequential(*layers))
            self.names.append(f"block{i + 1}")
            c_in = w
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for n in self.names:
            x = getattr(self, n)(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def demo_recipe(images: int, size: int, seg: int, seed: int = 0, min_frequency: int = 10):
    """recipes/synthetic.yaml's settings (its 1,000 images; the size is the demo's choice) as a Recipe."""
    from broden_builder.recipe import recipe_from_dict

    return recipe_from_dict({
        "name": "synthetic", "size": size, "segmentation_size": seg, "min_frequency": min_frequency, "min_coverage": 0.5 if min_frequency >= 10 else 0.0,
        "splits": {"train": 0.7, "val": 0.3}, "color": True,
        "description": "Synthetic scenes with labels in all six categories (demo, tests, benchmarks).",
        "sources": [{"type": "synthetic", "count": images, "seed": seed}],
    }, origin="dissect.demo")


def build_demo_store(path: Path, images: int, size: int, seg: int, workers: int, quiet: bool, min_frequency: int = 10):
    """Build the synthetic store at ``path``, or reuse it when a complete one with the same recipe is there."""
    from broden_builder import BrodenStore
    from broden_builder.build import build_store

    recipe = demo_recipe(images, size, seg, min_frequency=min_frequency)
    if (path / "index.csv").exists():
        try:
            st = BrodenStore(path)
            want = recipe.to_dict()
            if all(st.build_info.get("recipe", {}).get(k) == want[k] for k in ("sources", "min_frequency", "min_coverage")) and \
                    st.build_info.get("image_size") == size and st.build_info.get("segmentation_size") == seg:
                return st, True
        except Exception:  # an unreadable old store: rebuild it
            pass
    build_store(recipe, path, workers=workers, quiet=quiet)
    return BrodenStore(path), False


def load_scene_data(store, input_size: int):
    """All images (normalised, at ``input_size``), scene class targets and the train mask.

    Returns ``(x float[N,3,S,S], y long[N], train bool[N], class_names)``; images without
    a scene label are dropped.
    """
    from broden_builder import BrodenDataset

    ds = BrodenDataset(store, with_labels=False, image_size=input_size)
    scenes = sorted({n for i in range(len(store)) for n in store.image_labels(i, "scene")})
    if len(scenes) < 2:
        raise ValueError(f"{store.root}: needs at least two scene labels to train on, found {len(scenes)}")
    cls = {n: k for k, n in enumerate(scenes)}
    xs, ys, train = [], [], []
    for i in range(len(store)):
        labs = store.image_labels(i, "scene")
        if not labs:
            continue
        xs.append(ds.load_image(i))
        ys.append(cls[labs[0]])
        train.append(store.rows[i].split == "train")
    names = [store.label_by_number[n].name for n in scenes]
    return torch.stack(xs), torch.tensor(ys), torch.tensor(train), names


def train_scene_net(x, y, train, classes: int, epochs: int, seed: int = 0, batch_size: int = 32,
                    quiet: bool = False, widths: Sequence[int] = (32, 64, 96, 128)) -> tuple:
    """Train SceneNet with Adam (fixed seed, random flips); return (model in eval mode, val accuracy, seconds)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SceneNet(classes, widths)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    xt, yt = x[train], y[train]
    steps = epochs * ((len(xt) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=max(1, steps))
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    from tqdm import tqdm

    bar = tqdm(total=steps, desc="train", disable=quiet, unit="batch")
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=g)
        for s in range(0, len(xt), batch_size):
            idx = order[s:s + batch_size]
            xb = xt[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = loss_fn(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    acc = accuracy(model, x[~train], y[~train]) if bool((~train).any()) else float("nan")
    return model, acc, time.perf_counter() - t0


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 100) -> float:
    model.eval()
    right = sum(int((model(x[s:s + batch_size]).argmax(1) == y[s:s + batch_size]).sum()) for s in range(0, len(x), batch_size))
    return right / max(1, len(x))


def summary_table(results: dict, categories: Sequence[str]) -> str:
    """Detectors (and unique concepts) per category per layer, as aligned text."""
    from dissect.report.summary import layer_summary

    rows = [("layer", "units", "detectors") + tuple(categories)]
    for name, res in results.items():
        s = layer_summary(res.units, categories, float(res.settings.get("iou_threshold", 0.04)))
        rows.append((name, str(s["units"]), str(s["detectors"]))
                    + tuple(f"{s['per_category'].get(c, 0)} ({s['unique'].get(c, 0)})" for c in categories))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines) + "\n(detector units per category; in brackets: distinct concepts among them)"


def best_per_category(res, categories: Sequence[str]) -> str:
    """The best unit of each category (detector or not): ``object: unit 12 disc 0.051*`` (* = detector)."""
    thr = float(res.settings.get("iou_threshold", 0.04))
    parts = []
    for c in categories:
        best = max(res.units, key=lambda u: (u["per_category"].get(c, {}).get("iou", 0.0), -u["unit_index"]))
        pc = best["per_category"].get(c, {})
        if pc.get("label"):
            parts.append(f"{c}: unit {best['unit']} {pc['label']} {pc['iou']:.3f}{'*' if pc['iou'] >= thr else ''}")
    return "; ".join(parts)


def top_detectors(res, n: int = 8) -> str:
    det = sorted((u for u in res.units if u["detector"]), key=lambda u: (-u["iou"], u["unit_index"]))[:n]
    return ", ".join(f"unit {u['unit']} {u['label']} ({u['category']}, {u['iou']:.2f})" for u in det) or "none"


def run_demo(out: Path, images: int = 1000, size: int = 112, seg: int = 56, input_size: int = 112,
             epochs: int = 14, layers: Sequence[str] = DEMO_LAYERS, widths: Sequence[int] = (32, 64, 96, 128),
             workers: int = 2, seed: int = 0, quiet: bool = False, top_k: int = 8, min_frequency: int = 10,
             say=print) -> dict:
    """The whole demo; returns {"store", "results" {layer: LayerResult}, "index", "accuracy", "timings"}."""
    from dissect.api import Dissection

    out = Path(out)
    timings = {}
    t = time.perf_counter()
    store, reused = build_demo_store(out / "store", images, size, seg, workers, quiet, min_frequency)
    timings["store"] = time.perf_counter() - t
    say(f"[1/4] synthetic store: {len(store)} images at {size}/{seg} in {out / 'store'}"
        + (" (reused)" if reused else f" (built in {timings['store']:.0f} s)"))

    t = time.perf_counter()
    x, y, train, names = load_scene_data(store, input_size)
    model, acc, secs = train_scene_net(x, y, train, len(names), epochs, seed=seed, quiet=quiet, widths=widths)
    del x
    timings["train"] = time.perf_counter() - t
    ckpt = out / "scenenet.pt"
    from broden_builder.store.atomic import atomic_write_bytes
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(ckpt, buf.getvalue())
    say(f"[2/4] trained SceneNet on {int(train.sum())} images ({len(names)} scenes, {epochs} epochs at "
        f"{input_size}x{input_size}) in {secs:.0f} s: validation accuracy {acc:.1%} (chance {1 / len(names):.0%})")

    t = time.perf_counter()
    result = Dissection(model, list(layers), store, input_size=input_size, top_k=top_k, device="cpu",
                        batch_size=50, workers=min(1, max(0, workers - 1)), quiet=quiet,
                        checkpoint_every=0).run(out=out / "dissect", report=False)
    timings["dissect"] = time.perf_counter() - t
    say(f"[3/4] dissected {', '.join(layers)} in {timings['dissect']:.0f} s")

    t = time.perf_counter()
    index = result.report(out / "dissect", store=store, quiet=quiet)
    timings["report"] = time.perf_counter() - t
    say(f"[4/4] report written in {timings['report']:.0f} s")
    say("")
    say(summary_table(result.layers, list(store.categories)))
    for name, res in result.layers.items():
        say(f"best detectors of {name}: {top_detectors(res)}")
    for name, res in result.layers.items():
        say(f"best unit per category in {name} (* = detector): {best_per_category(res, list(store.categories))}")
    say("")
    say(f"open the report: {index.resolve()}")
    return {"store": store, "results": result.layers, "index": index, "accuracy": acc, "timings": timings}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dissect.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--images", type=int, default=1000, help="synthetic images (default 1000)")
    p.add_argument("--size", type=int, default=112,
                   help="store image size (default 112; recipes/synthetic.yaml's 224/112 works too but tallies 4x more pixels)")
    p.add_argument("--seg", type=int, default=56, help="store segmentation size (default 56)")
    p.add_argument("--input-size", type=int, default=112, help="network input size (default 112)")
    p.add_argument("--epochs", type=int, default=14, help="training epochs (default 14: 1-2 minutes on 2 free cores)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="processes for the store build")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPU count, at most 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads or max(1, min(8, os.cpu_count() or 1)))
    t0 = time.perf_counter()
    from dissect import demo  # the importable module, so result.json names dissect.demo.SceneNet, not __main__

    demo.run_demo(Path(args.out), images=args.images, size=args.size, seg=args.seg, input_size=args.input_size,
             epochs=args.epochs, workers=args.workers, seed=args.seed, quiet=args.quiet)
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    print()
    print(REAL_BRODEN_HELP)
    return 0


if __name__ == "__main__":
    sys.exit(main())
