"""Compositional explanations (dissect.explain) of all 512 units of ResNet-18 layer4 (random
weights, seeded) over a 1,000-image synthetic store at 224 / 112, length 3, beam 5, on the CPU;
then the same search through a plain re-implementation of compexp's loop
(tests/explain_reference.py: per unit, Python loops over beam formulas x labels x operators on
bit-packed masks of the whole probe set) on --plain-units units, extrapolated to 512 units, in
the same process. Checks that both give the same formula and IoU on those units.

    python benches/bench_explain.py [--workdir /tmp/bench-explain] [--plain-units 8] [--threads 2]

Activations (N x 512 x 7 x 7, float16-rounded like the runner's cache) and thresholds
(exact top-0.005 quantile, dissect.stats.TopQuantile) are computed once and kept in --workdir.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def ensure_store(path: Path, n: int) -> None:
    if (path / "index.csv").is_file():
        return
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict

    recipe = recipe_from_dict({"name": "bench", "size": 224, "segmentation_size": 112, "color": True,
                               "sources": [{"type": "synthetic", "count": n, "seed": 0}]})
    build_store(recipe, path, workers=2, quiet=True)


def ensure_acts(work: Path, store) -> tuple:
    a_path, t_path = work / "layer4.npy", work / "thresholds.npy"
    if a_path.is_file() and t_path.is_file():
        return np.load(a_path, mmap_mode="r"), np.load(t_path)
    import torchvision
    from torch.utils.data import DataLoader

    from broden_builder.torch_dataset import BrodenDataset, collate_broden
    from dissect.capture._hooks import run_layers
    from dissect.stats import TopQuantile

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    ds = BrodenDataset(store, with_labels=False)
    out = np.lib.format.open_memmap(a_path, mode="w+", dtype=np.float16, shape=(len(ds), 512, 7, 7))
    tq = TopQuantile(512, 0.005, len(ds) * 49)
    lo = 0
    for batch in DataLoader(ds, batch_size=50, num_workers=2, collate_fn=collate_broden):
        with torch.no_grad():
            a = run_layers(model, batch["image"], ["layer4"])["layer4"].half()
        out[lo: lo + a.shape[0]] = a.numpy()
        lo += a.shape[0]
        tq.add(a.float())
    out.flush()
    np.save(t_path, tq.thresholds().numpy().astype(np.float32))
    return np.load(a_path, mmap_mode="r"), np.load(t_path)


def plain_label_masks(store, numbers, rows) -> np.ndarray:
    """Packed [L, N * S] masks read plainly from the store (pixel layers, image-level labels)."""
    col = {n: i for i, n in enumerate(numbers)}
    r0 = store.rows[rows[0]]
    S = r0.sh * r0.sw
    full = np.zeros((len(numbers), len(rows) * S), dtype=bool)
    for k, i in enumerate(rows):
        sl = slice(k * S, (k + 1) * S)
        for c in store.categories:
            if c in store.image_level_categories:
                for n in store.image_labels(i, c):
                    if n in col:
                        full[col[n], sl] = True
            else:
                for layer in store.pixel_layers(i, c):
                    flat = layer.reshape(-1)
                    for n in np.unique(flat):
                        if int(n) in col:
                            full[col[int(n)], sl] |= flat == n
    return np.packbits(full, axis=1)


def plain_unit_masks(acts, thr, units, size, batch=50) -> np.ndarray:
    from dissect.stats import upsample

    N = acts.shape[0]
    S = size[0] * size[1]
    full = np.zeros((len(units), N * S), dtype=bool)
    for lo in range(0, N, batch):
        a = torch.from_numpy(np.array(acts[lo: lo + batch][:, units], dtype=np.float32))
        up = upsample(a, size, "bilinear")  # [b, u, sh, sw]
        m = (up > torch.from_numpy(thr[units]).view(1, -1, 1, 1)).numpy()
        full[:, lo * S: (lo + a.shape[0]) * S] = m.transpose(1, 0, 2, 3).reshape(len(units), -1)
    return np.packbits(full, axis=1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="/tmp/bench-explain")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--plain-units", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--length", type=int, default=3)
    ap.add_argument("--beam", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    from broden_builder.store.reader import BrodenStore
    from dissect.explain.layer import explain_activations

    ensure_store(work / f"store{args.images}", args.images)
    store = BrodenStore(work / f"store{args.images}")
    acts, thr = ensure_acts(work, store)
    rss0 = rss_mib()

    t = time.perf_counter()
    ex = explain_activations(acts, thr, store, length=args.length, beam=args.beam, workers=args.workers,
                             device=args.device)
    wall = time.perf_counter() - t
    rss1 = rss_mib()
    rows = ex.rows()
    fast = {"wall_s": round(wall, 2), "timings_s": {k: round(v, 2) for k, v in ex.timings.items()},
            "peak_rss_mib": round(rss1), "rss_before_mib": round(rss0), "atoms": ex.settings["atoms"],
            "labels": ex.settings["candidate_labels"], "units": len(rows),
            "mean_iou": round(float(np.mean([r["iou"] for r in rows])), 4),
            "mean_single_iou": round(float(np.mean([r["single_iou"] for r in rows])), 4)}
    print(json.dumps({"fast": fast}), flush=True)

    # plain compexp-style loop on a subset of units
    from explain_reference import compexp_search

    units = list(np.linspace(0, 511, args.plain_units).round().astype(int))
    rws = list(range(len(store.rows)))
    t = time.perf_counter()
    lm = plain_label_masks(store, ex.numbers, rws)
    um = plain_unit_masks(acts, thr, units, (store.rows[0].sh, store.rows[0].sw))
    prep = time.perf_counter() - t
    t = time.perf_counter()
    same = 0
    for i, u in enumerate(units):
        f, v, _s, sv = compexp_search(lm, um[i], length=args.length, beam=args.beam)
        fast_f = ex.search.formula(u)
        same += (f is None and len(fast_f) == 0) or (f is not None and fast_f.labels == f[0] and fast_f.ops == f[1]
                                                      and ex.search.iou[u].item() == v)
    per_unit = (time.perf_counter() - t) / len(units)
    plain_total = per_unit * 512 + prep
    print(json.dumps({"plain": {"units": len(units), "s_per_unit": round(per_unit, 2),
                                "mask_prep_s": round(prep, 1), "extrapolated_512_s": round(plain_total),
                                "same_formula_and_iou": f"{same}/{len(units)}",
                                "ratio": round(plain_total / wall, 1)},
                      "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
