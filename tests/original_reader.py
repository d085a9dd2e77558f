"""An independent re-statement of how the original NetDissect tools read a Broden store.

Written for these tests from the published behaviour of the original loader (csv.DictReader
over index.csv / label.csv / category.csv / c_*.csv, regex-decoded cells, PNG label =
R + 256 * G into an int16 array); it shares no code with broden_builder.
"""
from __future__ import annotations

import csv
import os
import re

import numpy as np
from PIL import Image


def decode_label_row(row):
    out = {}
    for key, val in row.items():
        if key == "category":
            out[key] = dict((c, int(n)) for c, n in [re.match(r"^([^(]*)\(([^)]*)\)$", f).groups() for f in val.split(";")])
        elif key == "name":
            out[key] = val
        elif key == "syns":
            out[key] = val.split(";")
        elif re.match(r"^\d+$", val):
            out[key] = int(val)
        elif re.match(r"^\d+\.\d*$", val):
            out[key] = float(val)
        else:
            out[key] = val
    return out


def decode_index_row(row):
    out = {}
    for key, val in row.items():
        if key in ("image", "split"):
            out[key] = val
        elif key in ("sw", "sh", "iw", "ih"):
            out[key] = int(val)
        else:
            items = [s for s in val.split(";") if s]
            out[key] = [int(v) if re.match(r"^\d+$", v) else v for v in items]
    return out


class OriginalStyleReader:
    def __init__(self, directory):
        self.directory = directory
        with open(os.path.join(directory, "index.csv"), newline="") as f:
            self.image = [decode_index_row(r) for r in csv.DictReader(f)]
        with open(os.path.join(directory, "category.csv"), newline="") as f:
            self.category = {r["name"]: r for r in csv.DictReader(f)}
        with open(os.path.join(directory, "label.csv"), newline="") as f:
            labels = [decode_label_row(r) for r in csv.DictReader(f)]
        self.label = [None] * (max(d["number"] for d in labels) + 1)
        for d in labels:
            self.label[d["number"]] = d
        self.category_labels = {}
        for cat in self.category:
            with open(os.path.join(directory, f"c_{cat}.csv"), newline="") as f:
                c_data = [decode_label_row(r) for r in csv.DictReader(f)]
            dense = [None] * (max(d["code"] for d in c_data) + 1)
            for d in c_data:
                dense[d["code"]] = d
            self.category_labels[cat] = dense

    def segmentation(self, i):
        m = self.image[i]
        out = {}
        for cat in self.category:
            d = m[cat]
            if all(isinstance(x, int) for x in d):
                out[cat] = d
                continue
            arr = np.empty((len(d), m["sh"], m["sw"]), dtype=np.int16)
            for k, channel in enumerate(d):
                rgb = np.asarray(Image.open(os.path.join(self.directory, "images", channel)).convert("RGB")).astype(np.int32)
                arr[k] = rgb[:, :, 0] + rgb[:, :, 1] * 256
            out[cat] = arr
        return out
