"""The offline demo (``make demo``): the paper's central finding in about a minute on an idle 2-core CPU
(52 s measured; 148 s at load 1.4, much longer on a busy machine: benches/RESULTS.md).

It builds the synthetic store (broden_builder.sources.synthetic: scenes defined by the objects,
parts and materials they contain), trains a small CNN to classify *scenes* on fresh images of
the same world, dissects two of its layers on the store, writes the report and prints the best
detectors per category: units that were never told about objects, parts or materials detect them.

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

from broden_builder.shared import count

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
    """A small scene CNN: four conv-BN-ReLU blocks (the first with stride 2, the second max-pooled),
    global *max* pooling and a linear classifier. Block outputs are named ``block1`` ... ``block4``;
    block3 and block4 keep 1/4 of the input resolution (16 x 16 for the demo's 64 px images).

    Global max pooling asks "is there a car anywhere?", which is what a scene defined by its
    objects needs: with it the demo's units become object detectors in a few epochs (with
    average pooling the same budget grows only material and colour detectors).
    """

    def __init__(self, classes: int, widths: Sequence[int] = (16, 32, 64, 96)):
        super().__init__()
        c_in = 3
        self.names = []
        for i, w in enumerate(widths):
            layers = [
                nn.Conv2d(c_in, w, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=False),
            ]
            if i == 1:
                layers.append(nn.MaxPool2d(2))
            self.add_module(f"block{i + 1}", nn.Sequential(*layers))
            self.names.append(f"block{i + 1}")
            c_in = w
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for n in self.names:
            x = getattr(self, n)(x)
        return self.fc(torch.flatten(x.amax(dim=(2, 3)), 1))


def demo_recipe(images: int, size: int, seg: int, seed: int = 0, min_frequency: int = 10):
    """recipes/synthetic.yaml's settings with the demo's image count and sizes, as a Recipe."""
    from broden_builder.recipe import recipe_from_dict

    return recipe_from_dict(
        {
            "name": "synthetic",
            "size": size,
            "segmentation_size": seg,
            "min_frequency": min_frequency,
            "min_coverage": 0.5 if min_frequency >= 10 else 0.0,
            "splits": {"train": 0.7, "val": 0.3},
            "color": True,
            "description": "Synthetic scenes with labels in all six categories (demo, tests, benchmarks).",
            "sources": [{"type": "synthetic", "count": images, "seed": seed}],
        },
        origin="dissect.demo",
    )


def build_demo_store(path: Path, images: int, size: int, seg: int, workers: int, quiet: bool, min_frequency: int = 10):
    """Build the synthetic store at ``path``, or reuse it when a complete one with the same recipe and
    the same version of the synthetic world is there."""
    from broden_builder import BrodenStore
    from broden_builder.build import build_store

    from broden_builder.sources.synthetic.source import WORLD_VERSION

    recipe = demo_recipe(images, size, seg, min_frequency=min_frequency)
    if (path / "index.csv").exists():
        try:
            st = BrodenStore(path)
            want = recipe.to_dict()
            if (
                all(
                    st.build_info.get("recipe", {}).get(k) == want[k]
                    for k in ("sources", "min_frequency", "min_coverage")
                )
                and st.build_info.get("image_size") == size
                and st.build_info.get("segmentation_size") == seg
                and [s.get("version") for s in st.build_info.get("sources", [])] == [WORLD_VERSION]
            ):  # same world
                return st, True
        except Exception:  # an unreadable old store: rebuild it
            pass
    build_store(recipe, path, workers=workers, quiet=quiet)
    return BrodenStore(path), False


def generate_scene_data(count: int, size: int, seed: int):
    """``count`` fresh scenes of the synthetic world (not the store's: another seed), normalised.

    Returns ``(x float[N,3,S,S], y long[N], class_names)``; x is normalised with the ImageNet
    mean/std that the dissection applies to the store's images.
    """
    import numpy as np

    from broden_builder.sources.synthetic.source import SCENE_NAMES, generate_scene
    from broden_builder.torch_dataset import IMAGENET_MEAN, IMAGENET_STD

    rgb = np.empty((count, size, size, 3), np.uint8)
    y = np.empty(count, np.int64)
    for i in range(count):
        img, _, _, _, scene, _ = generate_scene(seed, i, size)
        rgb[i], y[i] = img, scene - 1
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).float().div_(255)
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    return x.contiguous(), torch.from_numpy(y), list(SCENE_NAMES)


def train_scene_net(
    x,
    y,
    classes: int,
    epochs: int,
    seed: int = 0,
    batch_size: int = 32,
    quiet: bool = False,
    widths: Sequence[int] = (16, 32, 64, 96),
    val: Optional[tuple] = None,
    lr: float = 8e-3,
) -> tuple:
    """Train SceneNet with Adam and a one-cycle schedule (fixed seed, random horizontal flips).

    ``x`` float[N,3,S,S], ``y`` long[N]; ``val`` an optional (x, y) pair scored at the end.
    Returns (model in eval mode, validation accuracy or NaN, seconds).
    """
    from broden_builder.shared import progress

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = SceneNet(classes, widths)
    opt = torch.optim.Adam(model.parameters(), lr=lr / 4, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps))
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.perf_counter()
    bar = progress(total=steps, quiet=quiet, desc="train", unit="batch", leave=False)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=g)
        for s in range(0, len(x), batch_size):
            idx = order[s : s + batch_size]
            xb = x[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = loss_fn(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()
    acc = accuracy(model, *val) if val is not None and len(val[0]) else float("nan")
    return model, acc, time.perf_counter() - t0


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 100) -> float:
    model.eval()
    right = sum(
        int((model(x[s : s + batch_size]).argmax(1) == y[s : s + batch_size]).sum())
        for s in range(0, len(x), batch_size)
    )
    return right / max(1, len(x))


def _counts(res, categories: Sequence[str]) -> tuple:
    """(detectors, unique concepts) of one LayerResult, as :func:`dissect.results.summarise` counts them."""
    from dissect.results import summarise

    s = summarise(res.units, categories, float(res.settings.get("iou_threshold", 0.04)))
    return s["detectors"], sum(s["unique_detectors"].values())


def controls_sentence(controls, categories: Sequence[str], layer: Optional[str] = None) -> str:
    """One sentence saying what the controls show for ``layer`` (default: the last, deepest one),
    made from their counts: is the trained layer ahead of random weights (Bau et al. 2017, sec. 4.2)
    and of a random rotation of its units (sec. 3.2, where rotation lowers the unique detectors)?

    ``controls``: a :class:`dissect.tools.ControlRuns`. The paper's measure of a basis is the number of
    unique detectors (distinct concepts); the sentence names both counts.
    """
    layer = layer or list(controls.trained)[-1]
    (td, tc), (rd, rc), (od, oc) = (
        _counts(runs[layer], categories) for runs in (controls.trained, controls.random, controls.rotated)
    )
    first = f"Random weights leave {layer} {rd} detectors ({rc} concepts) against the trained {td} ({tc}): " + (
        "training made them" if rd < td and rc < tc else "training did not add them all here"
    )
    word = lambda a, b: "fewer" if a < b else "as many" if a == b else "more"  # noqa: E731
    if od < td and oc < tc:
        how = "fewer of both, as in the paper (sec. 3.2)"
    elif oc < tc:
        how = (
            f"{word(od, td)} detectors but fewer concepts: the paper's loss of unique detectors (sec. 3.2) "
            "without its loss of detectors"
        )
    elif od < td:
        how = f"fewer detectors but {word(oc, tc)} concepts, unlike the paper (sec. 3.2)"
    else:
        how = (
            f"{word(od, td)} detectors and {word(oc, tc)} concepts, unlike the paper (sec. 3.2): here the trained "
            "basis is not more interpretable than a random one"
        )
    return f"{first}; a random rotation of its units leaves {od} ({oc}), {how}."


def summary_table(results: dict, categories: Sequence[str]) -> str:
    """Detectors (and unique concepts) per category per layer, as aligned text."""
    from dissect.results import summarise

    rows = [("layer", "units", "detectors") + tuple(categories)]
    for name, res in results.items():
        s = summarise(res.units, categories, float(res.settings.get("iou_threshold", 0.04)))
        rows.append(
            (name, str(s["units"]), str(s["detectors"]))
            + tuple(f"{s['per_category'].get(c, 0)} ({s['unique_detectors'].get(c, 0)})" for c in categories)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines) + "\n(detector units per category; in brackets: distinct concepts among them)"


from dissect.report.summary import display_name  # noqa: E402  (re-exported: the demo's names)


def best_by_category(results: dict, categories: Sequence[str], n: int = 3) -> list:
    """The ``n`` best detector units of each category over all layers, as text lines.

    A unit counts for its own (best-IoU) category only, as in the paper's counts.
    """
    lines = []
    width = max((len(c) for c in categories), default=0)
    for c in categories:
        found = []
        for name, res in results.items():
            thr = float(res.settings.get("iou_threshold", 0.04))
            found += [(u["iou"], name, u) for u in res.units if u["category"] == c and u["iou"] >= thr and u["label"]]
        found.sort(key=lambda t: (-t[0], t[1], t[2]["unit_index"]))
        text = (
            ", ".join(f"{display_name(u['label'])} {iou:.2f} ({name} unit {u['unit']})" for iou, name, u in found[:n])
            or "none"
        )
        lines.append(f"  {c.ljust(width)}  {text}")
    return lines


def say_results(result, cats: Sequence[str], say=print) -> None:
    """The demo's closing text: the table, the best detectors per category and, when the result has
    them, the controls (trained, random init, rotated) with the sentence saying what they show."""
    say(summary_table(result.layers, cats))
    say("")
    say("the three best detectors per category (IoU; a unit counts for its best category):")
    for line in best_by_category(result.layers, cats):
        say(line)
    if result.controls is not None:
        say("")
        say(
            "the paper's controls (Bau et al. 2017: random weights, sec. 4.2; "
            "a random rotation of the units, sec. 3.2):"
        )
        say(result.controls.table)
        say(controls_sentence(result.controls, cats))


def _train_step(
    out: Path,
    train_images: int,
    input_size: int,
    epochs: int,
    widths: Sequence[int],
    seed: int,
    quiet: bool,
    timings: dict,
    say,
) -> tuple:
    """The demo's step 2: train SceneNet on fresh scenes (never the store's), save ``out/scenenet.pt``;
    (model, validation accuracy)."""
    t = time.perf_counter()
    n_val = max(1, train_images // 5)
    x, y, names = generate_scene_data(train_images, input_size, 1000 + seed)
    val = generate_scene_data(n_val, input_size, 2000 + seed)[:2]
    model, acc, secs = train_scene_net(x, y, len(names), epochs, seed=seed, quiet=quiet, widths=widths, val=val)
    del x, val
    timings["train"] = time.perf_counter() - t
    ckpt = out / "scenenet.pt"
    from broden_builder.shared import atomic_write_bytes
    import io

    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(ckpt, buf.getvalue())
    say(
        f"[2/4] trained SceneNet on {train_images} fresh scenes ({len(names)} classes, {epochs} epochs at "
        f"{input_size} px) in {timings['train']:.0f} s: accuracy {acc:.0%} on {n_val} more "
        f"(chance {1 / len(names):.0%})"
    )
    return model, acc


def _dissect_step(
    model,
    layers: Sequence[str],
    store,
    input_size: int,
    top_k: int,
    quiet: bool,
    controls: bool,
    out: Path,
    timings: dict,
    say,
):
    """The demo's step 3: dissect ``layers`` on the store (with the controls when asked), no report yet."""
    from dissect.api import Dissection

    t = time.perf_counter()
    result = Dissection(
        model,
        list(layers),
        store,
        input_size=input_size,
        top_k=top_k,
        device="cpu",
        batch_size=100,
        workers=0,
        quiet=quiet,
        checkpoint_every=0,
    ).run(out=out / "dissect", report=False, controls=controls)
    timings["dissect"] = time.perf_counter() - t
    say(
        f"[3/4] dissected {', '.join(layers)} on the store in {timings['dissect']:.0f} s"
        + (" (with the random-init and rotated controls)" if controls else "")
    )
    return result


def run_demo(
    out: Path,
    images: int = 600,
    train_images: int = 4000,
    size: int = 64,
    seg: int = 32,
    input_size: Optional[int] = None,
    epochs: int = 8,
    layers: Sequence[str] = DEMO_LAYERS,
    widths: Sequence[int] = (16, 32, 64, 96),
    workers: int = 2,
    seed: int = 0,
    quiet: bool = False,
    top_k: int = 8,
    min_frequency: int = 10,
    controls: bool = True,
    say=print,
) -> dict:
    """The whole demo; returns {"store", "results" {layer: LayerResult}, "index", "accuracy", "timings"}.

    ``images``: the store (seed 0, what is dissected); ``train_images``: fresh scenes of another
    seed the network is trained on (it never sees the store's images); ``seed``: training seed.
    ``controls``: also dissect the random-init and rotated baselines (dissect/controls/ in ``out``)
    and print them beside the table.
    """
    out = Path(out)
    input_size = input_size or size
    timings = {}
    t = time.perf_counter()
    store, reused = build_demo_store(out / "store", images, size, seg, workers, quiet, min_frequency)
    timings["store"] = time.perf_counter() - t
    say(
        f"[1/4] synthetic store: {len(store)} images at {size}/{seg} px in {out / 'store'}"
        + (" (reused)" if reused else f" (built in {timings['store']:.0f} s)")
    )

    model, acc = _train_step(out, train_images, input_size, epochs, widths, seed, quiet, timings, say)
    result = _dissect_step(model, layers, store, input_size, top_k, quiet, controls, out, timings, say)

    t = time.perf_counter()
    index = result.report(out / "dissect", store=store, quiet=quiet)
    timings["report"] = time.perf_counter() - t
    say(f"[4/4] report written in {timings['report']:.0f} s")
    say("")
    say_results(result, list(store.categories), say)
    say("")
    say(f"open the report: {index.resolve()}")
    return {"store": store, "results": result.layers, "index": index, "accuracy": acc, "timings": timings}


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dissect.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    p.add_argument("--images", type=int, default=600, help="synthetic images in the dissected store (default 600)")
    p.add_argument("--train-images", type=int, default=4000, help="fresh scenes to train on (default 4000)")
    p.add_argument("--size", type=int, default=64, help="image size of the store and the network (default 64)")
    p.add_argument("--seg", type=int, default=32, help="store segmentation size (default 32)")
    p.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes for the store build")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the CPU count, at most 4)")
    p.add_argument("--seed", type=int, default=0, help="training seed (the store is always seed 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-controls", action="store_true", help="skip the random-init and rotated controls")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads or max(1, min(4, os.cpu_count() or 1)))
    threads = torch.get_num_threads()  # training's; the dissection then sets its own (engine/_resources.py)
    t0, c0 = time.perf_counter(), time.process_time()
    from dissect import demo  # the importable module, so result.json names dissect.demo.SceneNet, not __main__

    demo.run_demo(
        Path(args.out),
        images=args.images,
        train_images=args.train_images,
        size=args.size,
        seg=args.seg,
        epochs=args.epochs,
        workers=args.workers,
        seed=args.seed,
        quiet=args.quiet,
        controls=not args.no_controls,
    )
    print(
        f"demo finished in {time.perf_counter() - t0:.0f} s (this process: {time.process_time() - c0:.0f} s CPU, "
        f"{count(threads, 'torch thread')} for training)"
    )
    print()
    print(REAL_BRODEN_HELP)
    return 0


if __name__ == "__main__":
    sys.exit(main())
