"""Time opening a 63,305-row index (the size of broden1_224) with BrodenStore.

Usage: python benches/bench_reader.py [--rows 63305]
Writes a store with a full-size index.csv and label tables (no image files) to a temp dir.
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from broden_builder import BrodenStore


def make_index(root: Path, rows: int) -> None:
    cats = ["color", "object", "part", "material", "scene", "texture"]
    with open(root / "index.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "split", "ih", "iw", "sh", "sw"] + cats)
        for i in range(rows):
            b = f"ade20k/ADE_train_{i:08d}"
            w.writerow([b + ".jpg", "train" if i % 10 < 7 else "val", 224, 224, 112, 112,
                        b + "_color.png", b + "_object.png", f"{b}_part_1.png;{b}_part_2.png", "", str(1 + i % 400), ""])
    with open(root / "label.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
        for n in range(1, 1198):
            w.writerow([n, f"label{n}", "object(10)", 10, "1.000000", ""])
    with open(root / "category.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "first", "last", "count", "frequency"])
        w.writerow(["object", 1, 1197, 1197, 11970])
    with open(root / "c_object.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["code", "number", "name", "frequency", "coverage"])
        for n in range(1, 1198):
            w.writerow([n, n, f"label{n}", 10, "1.000000"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=63305)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        make_index(root, args.rows)
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            store = BrodenStore(root)
            times.append(time.perf_counter() - t)
        assert len(store) == args.rows
        print(f"open {args.rows}-row index: best {min(times):.3f} s, mean {sum(times) / len(times):.3f} s (target < 2 s)")


if __name__ == "__main__":
    main()
