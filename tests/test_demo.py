"""The demo pipeline at tiny sizes (the full `make demo` and its numbers are in benches/RESULTS.md)."""
from __future__ import annotations

import torch

from dissect.demo import DEMO_LAYERS, best_by_category, display_name, run_demo


def test_demo_pipeline_tiny(tmp_path):
    lines = []
    torch.set_num_threads(1)
    kw = dict(images=40, train_images=48, size=32, seg=16, epochs=1, widths=(8, 8, 8, 8), workers=1, quiet=True,
              top_k=3, min_frequency=1)
    out = run_demo(tmp_path / "demo", say=lines.append, **kw)
    text = "\n".join(lines)
    assert out["index"] == tmp_path / "demo" / "dissect" / "index.html" and out["index"].is_file()
    for layer in DEMO_LAYERS:
        assert (tmp_path / "demo" / "dissect" / layer / "report.html").is_file()
        assert layer in out["results"]
        assert out["results"][layer].iou.shape[0] == 8  # the layer's units as built
    assert "accuracy" in text and lines[-1].startswith("open the report: ")
    header = next(l for l in lines if l.startswith("layer"))
    assert all(c in header for c in ("color", "object", "part", "material", "scene", "texture"))
    # the closing block: one line per category of the store, in store order
    start = lines.index("the three best detectors per category (IoU; a unit counts for its best category):")
    block = [l.split()[0] for l in lines[start + 1:start + 7]]
    assert block == list(out["store"].categories)
    # the controls beside the table: trained, random init and rotated rows per layer, counts as on disk
    import json

    flat = "\n".join(lines).splitlines()
    start = next(i for i, l in enumerate(flat) if l.startswith("the paper's controls"))
    rows = flat[start + 2:start + 2 + 3 * len(DEMO_LAYERS)]
    for kind, folder in (("trained", ""), ("random init", "controls/random/"), ("rotated (seed 0)", "controls/rotated/")):
        for layer in DEMO_LAYERS:
            doc = json.loads((tmp_path / "demo" / "dissect" / f"{folder}{layer}" / "result.json").read_text())
            det = [u for u in doc["units"] if u["iou"] >= 0.04]
            row = next(r for r in rows if f" {kind} " in r and f" {layer} " in r).split()
            i = row.index(layer)
            assert row[i + 1:i + 6] == [str(len(doc["units"])), str(len(det)), str(len({u["label"] for u in det})), "-",
                                       f"{sum(u['iou'] for u in doc['units']) / len(doc['units']):.3f}"]
    assert flat[start + 2 + 3 * len(DEMO_LAYERS)].startswith("Random weights")  # the one sentence
    # a second run reuses the store
    again = run_demo(tmp_path / "demo", say=lines.append, **kw)
    assert any("(reused)" in l for l in lines) and again["index"].is_file()


class _Res:
    settings = {"iou_threshold": 0.04}

    def __init__(self, units):
        self.units = units


def _u(i, label, cat, iou):
    return {"unit": i + 1, "unit_index": i, "label": label, "category": cat, "iou": iou}


def test_best_by_category_ranks_detectors_over_layers():
    """Hand-made units: the best three per category over both layers, non-detectors left out."""
    a = _Res([_u(0, "red-c", "color", 0.30), _u(1, "house", "object", 0.10), _u(2, "wheel", "part", 0.03)])
    b = _Res([_u(0, "car", "object", 0.25), _u(1, "house", "object", 0.05), _u(2, "tree", "object", 0.12),
              _u(3, "white-c", "color", 0.04)])
    lines = best_by_category({"l1": a, "l2": b}, ["color", "object", "part"])
    assert lines[0].split(None, 1)[1] == "red 0.30 (l1 unit 1), white 0.04 (l2 unit 4)"
    assert lines[1].split(None, 1)[1] == "car 0.25 (l2 unit 1), tree 0.12 (l2 unit 3), house 0.10 (l1 unit 2)"
    assert lines[2].split(None, 1)[1] == "none"
    assert display_name("street-s") == "street" and display_name("wheel") == "wheel"


def _layer(labels_ious):
    return _Res([_u(i, lab, "object" if not lab.endswith("-c") else "color", iou) for i, (lab, iou) in enumerate(labels_ious)])


def test_controls_sentence_is_made_from_the_counts():
    """The sentence states what the numbers show, whichever way they go (counts by hand: IoU >= 0.04,
    distinct labels): trained 4 detectors of 3 concepts; random 1 (1); rotated 2 (1), 5 (3) or 5 (2)."""
    from types import SimpleNamespace

    from dissect.demo import controls_sentence

    trained = {"l1": _layer([("car", 0.5)]), "l4": _layer([("car", 0.2), ("car", 0.1), ("tree", 0.05), ("red-c", 0.3),
                                                           ("boat", 0.039)])}
    random = {"l1": _layer([("car", 0.01)]), "l4": _layer([("car", 0.04), ("tree", 0.01), ("tree", 0.0)])}
    fewer = {"l1": _layer([]), "l4": _layer([("car", 0.3), ("car", 0.05), ("tree", 0.01)])}
    as_many = {"l1": _layer([]), "l4": _layer([("car", 0.3), ("car", 0.05), ("tree", 0.2), ("red-c", 0.04),
                                               ("car", 0.1)])}
    cats = ["color", "object"]
    s = controls_sentence(SimpleNamespace(trained=trained, random=random, rotated=fewer), cats)
    assert s == ("Random weights leave l4 1 detectors (1 concepts) against the trained 4 (3): training made them; a random "
                 "rotation of its units leaves 2 (1), fewer of both, as in the paper (sec. 3.2).")
    s = controls_sentence(SimpleNamespace(trained=trained, random=random, rotated=as_many), cats)
    assert "leaves 5 (3), more detectors and as many concepts, unlike the paper (sec. 3.2): here the trained" in s
    more_fewer = {"l4": _layer([("car", 0.3), ("car", 0.05), ("car", 0.2), ("red-c", 0.04), ("car", 0.1)])}
    s = controls_sentence(SimpleNamespace(trained=trained, random=random, rotated=more_fewer), cats, layer="l4")
    assert "leaves 5 (2), more detectors but fewer concepts: the paper's loss of unique detectors" in s
    s = controls_sentence(SimpleNamespace(trained=trained, random=trained, rotated=fewer), cats, layer="l1")
    assert s.startswith("Random weights leave l1 1 detectors (1 concepts) against the trained 1 (1): training did not")
    assert "leaves 0 (0), fewer of both" in s


def test_a_store_of_another_world_version_is_rebuilt(tmp_path):
    """The demo reuses its store only when build.json names the synthetic world's current version: a store
    whose build.json says version "1" (an older world: other scenes for the same seed) is built again."""
    import json

    from broden_builder.sources.synthetic.source import WORLD_VERSION
    from dissect.demo import build_demo_store

    kw = dict(images=12, size=32, seg=16, workers=1, quiet=True, min_frequency=1)
    path = tmp_path / "store"
    assert build_demo_store(path, **kw)[1] is False
    assert build_demo_store(path, **kw)[1] is True
    info = json.loads((path / "build.json").read_text())
    assert [s["version"] for s in info["sources"]] == [WORLD_VERSION]
    info["sources"][0]["version"] = "1"
    (path / "build.json").write_text(json.dumps(info))
    assert build_demo_store(path, **kw)[1] is False
    assert [s["version"] for s in json.loads((path / "build.json").read_text())["sources"]] == [WORLD_VERSION]
