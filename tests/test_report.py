"""Static HTML reports: masks against a plain numpy reference, pages over a fabricated results folder."""
from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from report_fixture import LAYER_A, LAYER_B, fabricate

from dissect.report import write_reports
from dissect.results import ResultsError
from dissect.report.masks import overlay, unit_mask, unit_strip, upsample_map


def ref_bilinear(a: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Plain loops: bilinear with half-pixel centres (align_corners=False), edges clamped."""
    ih, iw = a.shape
    out = np.zeros((oh, ow), np.float64)
    for y in range(oh):
        sy = max((y + 0.5) * ih / oh - 0.5, 0.0)
        y0 = min(int(np.floor(sy)), ih - 1)
        y1 = min(y0 + 1, ih - 1)
        wy = sy - y0
        for x in range(ow):
            sx = max((x + 0.5) * iw / ow - 0.5, 0.0)
            x0 = min(int(np.floor(sx)), iw - 1)
            x1 = min(x0 + 1, iw - 1)
            wx = sx - x0
            out[y, x] = ((1 - wy) * ((1 - wx) * a[y0, x0] + wx * a[y0, x1])
                         + wy * ((1 - wx) * a[y1, x0] + wx * a[y1, x1]))
    return out


def ref_overlay(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = rgb.astype(np.float64)
    h, w = mask.shape
    for y in range(h):
        for x in range(w):
            if not mask[y, x]:
                out[y, x] = out[y, x] * 0.3 + 44.8
            else:
                nb = [(y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)]
                if any(not (0 <= a < h and 0 <= b < w) or not mask[a, b] for a, b in nb):
                    out[y, x] = (255, 230, 0)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def test_upsample_and_mask_match_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 7)).astype(np.float32)
    ref = ref_bilinear(a, 23, 31)
    assert np.allclose(upsample_map(a, 23, 31), ref, atol=1e-5)
    t = float(np.quantile(ref, 0.8))
    m = unit_mask(a, t, 23, 31)
    away = np.abs(ref - t) > 1e-4  # ignore float ties at the threshold
    assert np.array_equal(m[away], (ref > t)[away])
    assert 0 < m.sum() < m.size


def test_overlay_hand_example():
    rgb = np.full((5, 5, 3), 100, np.uint8)
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    out = overlay(rgb, mask)
    assert tuple(out[2, 2]) == (100, 100, 100)  # interior untouched
    assert tuple(out[1, 1]) == (255, 230, 0)  # boundary outlined
    assert tuple(out[0, 0]) == (75, 75, 75)  # 100 * 0.3 + 44.8 = 74.8
    assert np.array_equal(out, ref_overlay(rgb, mask))


def test_overlay_of_a_stack_equals_the_reference_per_image():
    """overlay() draws a stack [N, h, w, 3] at once: each image as the plain per-pixel reference,
    whatever the values (all 256 channel values occur) and the mask shape (odd widths, empty, full);
    the RGBX layout (32-bit pixels) draws the same colours."""
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (4, 9, 13, 3), dtype=np.uint8)
    rgb[0].reshape(-1)[:256] = np.arange(256)
    mask = rng.random((4, 9, 13)) > 0.5
    mask[1], mask[2] = False, True
    out = overlay(rgb, mask)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    for i in range(4):
        assert np.array_equal(out[i], ref_overlay(rgb[i], mask[i])), i
    rgbx = np.concatenate([rgb, np.full_like(rgb[..., :1], 7)], -1)  # RGBX: the padding byte is ignored
    assert np.array_equal(overlay(rgbx, mask)[..., :3], out)


def test_draw_strip_tiles_are_overlays_side_by_side():
    """masks.draw_strip (the report's strips) = the per-pixel reference overlay of each tile, placed
    left to right with 2 white pixels between; tiles of different widths; RGBX in, RGBX out."""
    from dissect.report.masks import dim_table, draw_strip

    rng = np.random.default_rng(8)
    tiles = [rng.integers(0, 256, (12, w, 3), dtype=np.uint8) for w in (7, 12, 5)]
    masks = [rng.random(t.shape[:2]) > 0.5 for t in tiles]
    rgbx = [np.concatenate([t, np.zeros_like(t[..., :1])], -1) for t in tiles]
    strip = draw_strip(rgbx, [np.take(dim_table(0.3), t) for t in rgbx], masks, 12)
    assert strip.shape == (12, 7 + 12 + 5 + 2 * 2, 4)
    x = 0
    for t, m in zip(tiles, masks):
        assert np.array_equal(strip[:, x:x + t.shape[1], :3], ref_overlay(t, m))
        if x + t.shape[1] < strip.shape[1]:
            assert np.all(strip[:, x + t.shape[1]:x + t.shape[1] + 2, :3] == 255)
        x += t.shape[1] + 2
    same = draw_strip(rgbx[:1] * 2, [np.take(dim_table(0.3), rgbx[0])] * 2, [masks[0], ~masks[0]], 12)
    assert np.array_equal(same[:, 9:, :3], ref_overlay(tiles[0], ~masks[0]))  # equal widths: one outline pass
    assert draw_strip([], [], [], 12).shape == (12, 12, 3)


def test_unit_strip_layout_and_content():
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 255, (20, 20, 3), dtype=np.uint8), rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)]
    maps = [rng.normal(size=(4, 4)).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)]
    strip = unit_strip(imgs, maps, 0.3, thumb=20, gap=2)
    assert strip.shape == (20, 20 + 2 + 30, 3)
    assert np.all(strip[:, 20:22] == 255)
    for img, act, x0 in zip(imgs, maps, (0, 22)):
        mask = ref_bilinear(act, *img.shape[:2]) > 0.3
        ref = ref_overlay(img, mask)
        assert np.array_equal(strip[:, x0:x0 + img.shape[1]], ref)


@pytest.fixture(scope="module")
def report_dir(synthetic_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "O"
    from broden_builder import BrodenStore

    n = len(BrodenStore(synthetic_store))
    arrays = fabricate(out, synthetic_store, n)
    index = write_reports(out)
    return out, index, arrays, synthetic_store


def _units_in_page(page: Path) -> list:
    return [int(x) for x in re.findall(r'<section class="unit"[^>]*data-unit="(\d+)"', page.read_text("utf-8"))]


def test_pages_sorted_by_iou_and_offline(report_dir):
    out, index, _, _ = report_dir
    assert index == out / "index.html"
    for layer, spec in (("layer2", LAYER_A), ("layer10", LAYER_B)):
        page = out / layer / "report.html"
        text = page.read_text("utf-8")
        # hand-sorted: best IoU first
        expected = [i + 1 for i, _ in sorted(enumerate(spec), key=lambda t: (-t[1][2], t[0]))]
        assert _units_in_page(page) == expected
        assert not re.search(r"https?://|<link\b|@import|//cdn", text), "page must load nothing from the network"
        for src in re.findall(r'src="([^"]+)"', text):
            assert (page.parent / src).is_file(), src
        assert (out / layer / "report_files" / "detectors.svg").stat().st_size > 500
        assert 'src="report_files/detectors.svg"' in text
        assert 'id="cat"' in text and 'id="q"' in text
        for lab, cat, _, _ in spec:  # display name without the -c/-s suffix; the raw label kept for search
            shown = lab[:-2] if lab.endswith(("-c", "-s")) else lab
            assert f'data-label="{shown}" data-raw="{lab}" data-category="{cat}"' in text
            assert f'<span class="label" title="{lab}">{shown}</span>' in text
    assert _units_in_page(out / "layer2" / "report.html") == [2, 1, 4, 5, 3, 6]


def test_index_page_counts_and_layer_order(report_dir):
    out, index, _, _ = report_dir
    text = index.read_text("utf-8")
    links = re.findall(r'<a href="([^"]+)">', text)
    assert [l for l in links if l.endswith("report.html")] == ["layer2/report.html", "layer10/report.html"]  # natural order
    assert "layer2/tally.csv" in links and "layer10/result.json" in links
    row = re.search(r'<tr><td><a href="layer2/report.html">.*?</tr>', text).group(0)
    cells = re.findall(r"<td>([^<]*)</td>", row)
    # units, detectors, concepts covered, then color, object, part, material, scene, texture: detectors / unique concepts
    assert cells == ["6", "4", "3", "1 / 1", "2 / 1", "0 / 0", "1 / 1", "0 / 0", "0 / 0"]
    row = re.search(r'<tr><td><a href="layer10/report.html">.*?</tr>', text).group(0)
    assert re.findall(r"<td>([^<]*)</td>", row) == ["4", "4", "3", "1 / 1", "2 / 1", "1 / 1", "0 / 0", "0 / 0", "0 / 0"]
    svg = (out / "report_files" / "unique_detectors.svg").read_text("utf-8")
    assert "layer2" in svg and "layer10" in svg
    # hand-counted unique detectors (the table above): one bar per (layer, category), height by count
    bars = _svg_bars(svg)
    got = {(b["data-name"], b["data-category"]): int(b["data-count"]) for b in bars}
    assert got[("layer2", "object")] == 1 and got[("layer10", "part")] == 1 and got[("layer10", "material")] == 0
    assert len(bars) == 2 * 6
    _heights_proportional(bars)


def test_strip_images_show_masked_top_images(report_dir):
    out, _, arrays, store_path = report_dir
    from broden_builder import BrodenStore

    store = BrodenStore(store_path)
    a = arrays["layer2"]
    for unit in (0, 3):
        strip = np.asarray(Image.open(out / "layer2" / "report_files" / f"unit_{unit + 1:04d}.jpg").convert("RGB"))
        x = 0
        for j, row in enumerate(a["indices"][unit]):
            rgb = np.asarray(Image.open(store.root / "images" / store.rows[int(row)].image).convert("RGB"))
            # drawn on the thumbnail: the image shrunk (or grown) to 112 px, the mask computed at that
            # size (no segmentation size is recorded here), outlined there
            thumb = np.asarray(Image.fromarray(rgb).resize((112, 112), Image.BILINEAR))
            mask = ref_bilinear(a["maps"][unit, j].astype(np.float32), 112, 112) > a["thresholds"][unit]
            ref = ref_overlay(thumb, mask)
            tile = strip[:, x:x + 112].astype(float)
            assert np.abs(tile - ref).mean() < 6, (unit, j)  # JPEG noise only
            x += 114
        assert strip.shape[1] == 3 * 112 + 2 * 2


def _svg_bars(svg: str) -> list:
    """The chart's bars as attribute dicts (XML-parsed, so the SVG must be well formed)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(svg)
    return [r.attrib for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.get("class") == "bar"]


def _heights_proportional(bars: list) -> None:
    """Every bar's height is its count times one scale, and all bars stand on one baseline."""
    per = {round(float(b["height"]) / int(b["data-count"]), 1) for b in bars if int(b["data-count"])}
    assert len(per) == 1, per
    assert len({round(float(b["y"]) + float(b["height"]), 1) for b in bars}) == 1


def test_detector_bars_svg_has_concepts(tmp_path):
    from dissect.report.plots import CATEGORY_COLORS, detector_bars

    counts = {"object": {"disc": 3, "square": 1, "a&b": 4}, "color": {"red-c": 2}, "part": {}}
    paths = detector_bars(counts, tmp_path / "d")
    assert [p.name for p in paths] == ["d.svg"]
    svg = paths[0].read_text("utf-8")
    bars = _svg_bars(svg)
    # hand-ordered: by category as given, then most detectors first; nothing for the empty category
    assert [(b["data-category"], b["data-name"], int(b["data-count"])) for b in bars] == [
        ("object", "a&b", 4), ("object", "disc", 3), ("object", "square", 1), ("color", "red-c", 2)]
    assert [b["fill"] for b in bars] == [CATEGORY_COLORS["object"]] * 3 + [CATEGORY_COLORS["color"]]
    _heights_proportional(bars)
    xs = [float(b["x"]) for b in bars]
    assert xs == sorted(xs)
    assert "object (3)" in svg and "color (1)" in svg and "part (" not in svg
    assert "a&amp;b" in svg and "a&b<" not in svg  # labels escaped
    # integer y ticks 0..4 (hand: max 4 -> steps of 1)
    assert re.findall(r'<g class="yticks"[^>]*>(.*?)</g>', svg)[0].count("<text") == 5
    empty = detector_bars({"object": {}}, tmp_path / "e")[0].read_text("utf-8")
    assert "no detectors" in empty and not _svg_bars(empty)


def test_y_ticks_hand_values():
    from dissect.report.plots import y_ticks

    assert y_ticks(0) == [0, 1] and y_ticks(4) == [0, 1, 2, 3, 4]
    assert y_ticks(7) == [0, 2, 4, 6, 8] and y_ticks(23) == [0, 5, 10, 15, 20, 25]
    assert y_ticks(130) == [0, 50, 100, 150]


def test_report_does_not_import_matplotlib(tmp_path, synthetic_store):
    """The report's plots are SVG templates: writing a report imports no plotting library."""
    import subprocess
    import sys

    from report_fixture import fabricate_layer

    fabricate_layer(tmp_path / "O", "conv", synthetic_store, 10, LAYER_B, k=2)
    code = ("import sys; from dissect.report import write_reports; write_reports(sys.argv[1]); "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "O")], capture_output=True, text=True,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "O" / "conv" / "report_files" / "detectors.svg").is_file()


def test_bad_results_folder_errors(tmp_path, synthetic_store):
    with pytest.raises(ResultsError, match="no layer results"):
        write_reports(tmp_path)
    from report_fixture import fabricate_layer

    fabricate_layer(tmp_path, "bad", synthetic_store, 10, LAYER_B, k=2)
    doc = json.loads((tmp_path / "bad" / "result.json").read_text())
    del doc["units"][1]["iou"]
    (tmp_path / "bad" / "result.json").write_text(json.dumps(doc))
    with pytest.raises(ResultsError, match=r"result\.json: units\[1\] lacks 'iou'"):
        write_reports(tmp_path)
    fabricate_layer(tmp_path, "bad", synthetic_store, 10, LAYER_B, k=2)
    z = dict(np.load(tmp_path / "bad" / "topk.npz"))
    z["indices"][2, 1] = 10_000
    np.savez(tmp_path / "bad" / "topk.npz", **z)
    with pytest.raises(ResultsError, match=r"topk\.npz: unit 3 names image row 10000"):
        write_reports(tmp_path)


def test_missing_store_writes_page_without_images(tmp_path, caplog):
    fabricate_layer_args = (tmp_path, "l1", tmp_path / "nowhere", 10, LAYER_B)
    from report_fixture import fabricate_layer

    fabricate_layer(*fabricate_layer_args, k=2)
    write_reports(tmp_path)
    text = (tmp_path / "l1" / "report.html").read_text("utf-8")
    assert "unit_0001.jpg" not in text and _units_in_page(tmp_path / "l1" / "report.html") == [1, 4, 3, 2]
    assert any("not found" in r.getMessage() for r in caplog.records)


def test_cli_report(tmp_path, synthetic_store, capsys):
    from report_fixture import fabricate_layer

    from dissect.cli import main

    fabricate_layer(tmp_path / "O", "conv", synthetic_store, 10, LAYER_B, k=2)
    assert main(["report", str(tmp_path / "O"), "--store", str(synthetic_store), "--thumb", "40", "--quiet"]) == 0
    assert f"report: {tmp_path / 'O' / 'index.html'}" in capsys.readouterr().out
    with Image.open(tmp_path / "O" / "conv" / "report_files" / "unit_0001.jpg") as im:
        assert im.size == (40 * 2 + 2, 40)
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "notes").mkdir()  # a folder of no results: refused, and left as it was (no .lock)
    assert main(["report", str(tmp_path / "notes")]) == 1
    assert "no layer results found" in capsys.readouterr().err and list((tmp_path / "notes").iterdir()) == []


def test_cli_run_writes_report_by_default(tmp_path, synthetic_store, capsys):
    from dissect.cli import main

    (tmp_path / "net.py").write_text(
        "import torch\nfrom torch import nn\n\ndef build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU())\n", "utf-8")
    args = ["run", "--store", str(synthetic_store), "--model", f"{tmp_path / 'net.py'}:build", "--layer", "0",
            "--device", "cpu", "--workers", "0", "--quiet", "--top-k", "2", "--checkpoint-every", "0"]
    assert main(args + ["--out", str(tmp_path / "O")]) == 0
    assert f"report: {tmp_path / 'O' / 'index.html'}" in capsys.readouterr().out
    assert _units_in_page(tmp_path / "O" / "0" / "report.html") != []
    assert main(args + ["--out", str(tmp_path / "P"), "--no-report"]) == 0
    assert not (tmp_path / "P" / "index.html").exists() and (tmp_path / "P" / "0" / "result.json").is_file()


def test_unit_masks_batched_equal_per_map_reference():
    """masks.unit_masks (all units in one step) = the plain bilinear reference per map, thresholded,
    then enlarged by integer nearest-neighbour indexing."""
    from dissect.report.masks import unit_masks

    rng = np.random.default_rng(5)
    maps = rng.normal(size=(3, 2, 4, 5)).astype(np.float32)
    thr = np.array([0.1, -0.2, 0.4], np.float32)
    got = unit_masks(maps, thr, (8, 10), (16, 25), units_per_step=2)
    iy, ix = (np.arange(16) * 8) // 16, (np.arange(25) * 10) // 25
    for u in range(3):
        for j in range(2):
            small = ref_bilinear(maps[u, j], 8, 10) > thr[u]
            away = np.abs(ref_bilinear(maps[u, j], 8, 10) - thr[u]) > 1e-5  # float rounding at T aside
            assert np.array_equal(got[u, j][np.ix_(np.arange(16), np.arange(25))][away[iy][:, ix]],
                                  small[iy][:, ix][away[iy][:, ix]])
    assert got.shape == (3, 2, 16, 25) and 0 < got.sum() < got.size


def test_layer_page_summary_links_model_name_and_collapsed_settings(report_dir):
    """Hand-counted from report_fixture: layer2's detectors are disc x2, red-c, grass -> 4 units, 3 concepts."""
    out, _, _, _ = report_dir
    text = (out / "layer2" / "report.html").read_text("utf-8")
    assert '<span id="concepts">4 units cover 3 concepts.</span>' in text
    assert "of <code>fabricated (random init)</code>" in text  # short model name: name (weights)
    for name in ("tally.csv", "result.json"):
        assert f'<a href="{name}">{name}</a>' in text and (out / "layer2" / name).is_file()
    # the settings come last and collapsed, after the unit list
    assert text.index('<details class="settings">') > text.index('<div id="units">')
    assert "<dt>quantile</dt><dd>0.005</dd>" in text.split('<details class="settings">')[1]
    assert "<details class=\"settings\" open" not in text
    text10 = (out / "layer10" / "report.html").read_text("utf-8")
    assert '<span id="concepts">4 units cover 3 concepts.</span>' in text10  # square x2, rim, blue-c


def test_short_model_names():
    from dissect.report.html import model_name

    assert model_name({"name": "resnet18", "weights": "IMAGENET1K_V1", "sha256": "ab" * 32}) == "resnet18 (IMAGENET1K_V1)"
    assert model_name({"class": "dissect.demo.SceneNet", "checkpoint": "/a/b/scenenet.pt"}) == "SceneNet (scenenet.pt)"
    assert model_name({"kind": "module", "class": "__main__.Net", "state_sha256": "x"}) == "Net"
    assert model_name({}) == ""


def test_display_names():
    from dissect.report.summary import display_name

    assert [display_name(x) for x in ("red-c", "street-s", "wheel", "-c", "t-shirt")] == ["red", "street", "wheel", "-c", "t-shirt"]


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
@pytest.mark.parametrize("mask_size,size", [((112, 112), (112, 112)), ((23, 31), (40, 50)), ((9, 10), (9, 10))])
def test_unit_masks_skip_no_pixel_of_the_upsampled_plane(mode, mask_size, size):
    """The batched masks skip pixels that cannot pass T; they must still equal, bit for bit, the whole
    plane upsampled by the tally's upsampler and thresholded (the definition of the counted mask),
    also at ties: thresholds taken from the upsampled values themselves (and one ulp below the top
    value, where a skipping margin too small would drop it), T = 0 over exact zeros,
    negative maps. Enlargement: integer nearest indexing floor(y * n_in / n_out)."""
    import torch

    from dissect.report.masks import unit_masks
    from dissect.stats.upsample import upsample

    rng = np.random.default_rng(11)
    maps = rng.normal(size=(5, 3, 7, 7)).astype(np.float16).astype(np.float32)
    maps[1] = -np.abs(maps[1])  # all negative
    maps[2, :, :4] = 0.0  # exact zeros under T = 0
    full = upsample(torch.from_numpy(maps), mask_size, mode).numpy()  # [U, K, SH, SW]
    thr = np.array([full[0, 0].ravel()[37], np.quantile(full[1], 0.9), 0.0, full[3].max(),
                    np.nextafter(full[4].max(), np.float32(-np.inf))],  # only the maximum passes, by one ulp
                   np.float32)
    ref = full > thr[:, None, None, None]
    iy = (np.arange(size[0]) * mask_size[0]) // size[0]
    ix = (np.arange(size[1]) * mask_size[1]) // size[1]
    got = unit_masks(maps, thr, mask_size, size, mode, units_per_step=2)
    assert got.shape == (5, 3) + tuple(size)
    assert np.array_equal(got, ref[:, :, iy][:, :, :, ix])
    assert 0 < got.sum() < got.size and not got[3].any() and 0 < got[4].sum() <= got[4].size // 20


def test_unreadable_top_image_is_a_clear_error_from_the_threads(tmp_path, synthetic_store, capsys):
    """A top image that cannot be decoded (read by the report's threads) stops the report with the
    file and its index.csv row named, through the API and as one line from `dissect report`."""
    import shutil

    from broden_builder import BrodenStore
    from broden_builder.store.errors import StoreFormatError
    from report_fixture import fabricate_layer

    from dissect.cli import main

    store = tmp_path / "store"
    shutil.copytree(synthetic_store, store)
    arrays = fabricate_layer(tmp_path / "O", "conv", store, 10, LAYER_B, k=2)
    row = int(arrays["indices"][2, 1])
    path = BrodenStore(store).image_path(row)
    path.write_bytes(b"not an image")
    with pytest.raises(StoreFormatError, match=rf"{re.escape(path.name)}.*row {row + 1}"):
        write_reports(tmp_path / "O")
    assert main(["report", str(tmp_path / "O"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert path.name in err and "Traceback" not in err


def test_svg_plots_stay_well_formed_xml_with_control_characters(tmp_path):
    """A label or layer name holding a character XML 1.0 forbids even escaped (a C0 control, U+FFFF;
    broden validate accepts such names) made the whole SVG unreadable. Oracle: an XML parser, and
    the names as written with U+FFFD in place of each such character."""
    import xml.etree.ElementTree as ET

    from dissect.report.plots import detector_bars, layer_lines

    name = "tab\there<b>&\x01bell\x07\uffff"
    svg = detector_bars({"object": {name: 2, "plain": 1}}, tmp_path / "d")[0]
    root = ET.parse(svg).getroot()
    names = [e.get("data-name") for e in root.iter() if e.get("data-name") is not None]
    assert names == ["tab here<b>&\ufffdbell\ufffd\ufffd", "plain"]  # a tab in an attribute reads as a space
    lines = layer_lines(["layer\x1b4", "fc"], {"object": [1, 2]}, tmp_path / "u")[0]
    texts = "".join(ET.parse(lines).getroot().itertext())
    assert "layer\ufffd4" in texts


def test_titles_show_short_names_and_provenance_keeps_the_identity(tmp_path):
    """Issue 24: the layer title printed the model as a raw dict with an absolute checkpoint path and
    a sha256, the index the absolute store path. Short names in titles; the full identity in the
    provenance block."""
    from dissect.report.html import index_page, model_name

    sha = "ab" * 32
    py = {"kind": "python", "file": "/home/u/proj/mynet.py", "function": "build", "sha256": sha,
          "weights": {"checkpoint": "/scratch/u/ckpt/epoch_10.pth", "sha256": sha}, "spec": "mynet.py:build"}
    assert model_name(py) == "mynet.py:build (epoch_10.pth)"
    assert model_name({"kind": "torchvision", "name": "resnet18", "weights": "ResNet18_Weights.IMAGENET1K_V1"}) == \
        "resnet18 (IMAGENET1K_V1)"
    assert model_name({"kind": "timm", "name": "convnext_tiny", "weights": "none (random init, seed 0)"}) == \
        "convnext_tiny (random init)"
    assert model_name({"kind": "hf", "ref": "/data/models/vit-base-patch16-224/", "weights": {"hf": "/data/x"}}) == \
        "vit-base-patch16-224 (x)"
    assert model_name({"kind": "torchscript", "file": "/m/scripted.pt", "sha256": sha}) == "scripted.pt"
    result = {"model": py, "store": {"path": "/very/long/abs/broden1_224", "images": 63305, "fingerprint": sha},
              "settings": {"iou_threshold": 0.04}, "units": []}
    page = index_page([("layer4", "layer4/report.html", {"units": 1, "detectors": 0, "per_category": {},
                                                         "unique": {}}, result)], [], None)
    head, prov = page.split('<details class="settings">')
    assert "/very/long" not in head and "/scratch" not in head and sha not in head and "{" not in head.split("<h1>")[1]
    assert "store broden1_224 (63305 images)" in head and "mynet.py:build (epoch_10.pth)" in head
    assert "/very/long/abs/broden1_224" in prov and "/scratch/u/ckpt/epoch_10.pth" in prov and sha in prov


def test_category_headers_do_not_overlap(tmp_path):
    """Headers of narrow categories (one concept each) stack in rows instead of overlapping; widths
    measured with the DejaVu Sans font file matplotlib ships (the SVG's font), not the code's bound."""
    import os

    matplotlib = pytest.importorskip("matplotlib")
    from PIL import ImageFont

    from dissect.report.plots import detector_bars

    font = ImageFont.truetype(os.path.join(matplotlib.get_data_path(), "fonts", "ttf", "DejaVuSans.ttf"), 9)
    counts = {"object": {f"thing{i}": 3 for i in range(9)}, "part": {"wheel": 1}, "material": {"wood": 2},
              "scene": {"street": 1}, "texture": {"Wmmmmmmm": 1}, "color": {"red-c": 1}}
    svg = detector_bars(counts, tmp_path / "d")[0].read_text("utf-8")
    heads = [(float(x), float(y), html.unescape(t)) for x, y, t in
             re.findall(r'<text class="category" x="([\d.]+)" y="([-\d.]+)"[^>]*>([^<]*)</text>', svg)]
    assert [t for _, _, t in heads] == ["object (9)", "part (1)", "material (1)", "scene (1)", "texture (1)",
                                        "color (1)"]
    boxes = [(x - font.getlength(t) / 2, x + font.getlength(t) / 2, y) for x, y, t in heads]
    for i, a in enumerate(boxes):
        assert a[0] >= 0
        for b in boxes[i + 1:]:
            assert a[2] != b[2] or a[1] <= b[0] or b[1] <= a[0], (a, b)  # same row: apart
    rows = {y for _, _, y in boxes}
    assert len(rows) > 1  # the one-concept headers could not share a row
    m = re.search(r'<g transform="translate\(0 ([\d.]+)\)">', svg)
    assert m and min(y for _, y, _ in heads) + float(m.group(1)) > 15  # below the top edge
