"""Load the report pages in headless Chromium: no console errors, no broken images, a screenshot.

Needs Debian's ``chromium`` (``make browser`` installs it, as root; .ci/run does); skips otherwise.
The screenshot goes to pytest's tmp dir (never into git).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from report_fixture import fabricate

from dissect.report import write_reports

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed: run `make browser` (as root; Debian's apt-get install -y chromium)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]


def chromium(profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def console_errors(stderr: str) -> list:
    """Page console errors / uncaught exceptions / failed loads that Chromium logs to stderr."""
    bad = []
    for line in stderr.splitlines():
        if "CONSOLE" in line and re.search(r"Uncaught|Error|error|Failed to load", line):
            bad.append(line)
        elif re.search(r"net::ERR_|Not allowed to load local resource", line):
            bad.append(line)
    return bad


@pytest.fixture(scope="module")
def pages(synthetic_store, tmp_path_factory):
    from broden_builder import BrodenStore

    out = tmp_path_factory.mktemp("browser") / "O"
    fabricate(out, synthetic_store, len(BrodenStore(synthetic_store)))
    write_reports(out)
    return out


def _dump(page: Path, profile: Path) -> str:
    res = chromium(profile, "--dump-dom", page.as_uri())
    assert res.returncode == 0, res.stderr[-3000:]
    errors = console_errors(res.stderr)
    assert not errors, "console errors:\n" + "\n".join(errors)
    return res.stdout


@pytest.mark.parametrize("rel", ["index.html", "layer2/report.html", "layer10/report.html"])
def test_page_loads_without_errors_or_broken_images(pages, rel, tmp_path):
    dom = _dump(pages / rel, tmp_path / "profile")
    html_tag = re.search(r"<html[^>]*>", dom).group(0)
    assert 'data-ready="ok"' in html_tag, f"images did not all load: {html_tag}"
    assert "data-js-errors" not in html_tag, html_tag
    n = int(re.search(r'data-images="(\d+)"', html_tag).group(1))
    assert n == len(re.findall(r"<img\b", dom)) and n >= 1
    if rel != "index.html":
        # the filter script ran: it wrote the count of units shown
        assert re.search(r'<span id="count">\d+ of \d+ units shown</span>', dom)


def test_broken_image_is_detected(pages, tmp_path):
    """The check itself can fail: a page with a missing image is reported as broken."""
    page = pages / "layer2" / "report.html"
    broken = page.with_name("broken.html")
    broken.write_text(page.read_text("utf-8").replace("unit_0001.jpg", "missing.jpg"), "utf-8")
    res = chromium(tmp_path / "profile", "--dump-dom", broken.as_uri())
    html_tag = re.search(r"<html[^>]*>", res.stdout).group(0)
    assert 'data-ready="broken"' in html_tag and "missing.jpg" in html_tag


def test_filter_by_category_and_search(pages, tmp_path):
    page = pages / "layer2" / "report.html"
    dom = _dump(Path(str(page)), tmp_path / "p1")
    # hash parameters pre-set the filter: object units whose label contains "dis"
    res = chromium(tmp_path / "p2", "--dump-dom", page.as_uri() + "#cat=object&q=dis")
    shown = re.findall(r'<section class="unit"(?![^>]*hidden)[^>]*data-unit="(\d+)"', res.stdout)
    assert shown == ["1", "5"], shown
    res = chromium(tmp_path / "p3", "--dump-dom", page.as_uri() + "#q=RED")
    shown = re.findall(r'<section class="unit"(?![^>]*hidden)[^>]*data-unit="(\d+)"', res.stdout)
    assert shown == ["2"], shown
    assert len(re.findall(r'<section class="unit"', dom)) == 6


def test_screenshot(pages, tmp_path):
    shot = tmp_path / "layer2.screenshot.png"
    res = chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,1600", (pages / "layer2" / "report.html").as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-3000:]
    with Image.open(shot) as im:
        assert im.size == (1280, 1600)
        extrema = im.convert("L").getextrema()
    assert extrema[0] < 100 < extrema[1], "screenshot is blank"


PROBE = """<script>
window.addEventListener('load', function(){ setTimeout(function(){
  var root=document.documentElement, out={};
  function order(){ return Array.prototype.map.call(document.querySelectorAll('#units .unit'),
                                                    function(u){return u.getAttribute('data-unit');}).join(','); }
  function click(sel){ document.querySelector(sel).dispatchEvent(new MouseEvent('click', {bubbles:true})); }
  out.initial=order();
  click('.sort button[data-sort="label"]'); out.label=order();
  click('.sort button[data-sort="label"]'); out.label_desc=order();
  click('.sort button[data-sort="unit"]'); out.unit=order(); out.hash=location.hash;
  click('.sort button[data-sort="category"]'); out.category=order();
  click('.sort button[data-sort="iou"]'); out.iou=order();
  var lb=document.getElementById('lightbox');
  out.lb_before=String(lb.hidden);
  click('#unit-4 img.strip');
  out.lb_open=String(lb.hidden); out.lb_src=document.getElementById('lightbox-img').getAttribute('src');
  out.lb_caption=document.getElementById('lightbox-caption').textContent;
  document.dispatchEvent(new KeyboardEvent('keydown', {key:'Escape'}));
  out.lb_after_escape=String(lb.hidden);
  click('#unit-2 img.strip'); click('#lightbox'); out.lb_after_click=String(lb.hidden);
  for (var k in out) { root.setAttribute('data-probe-'+k.replace(/_/g,'-'), out[k]); }
}, 0); });
</script>"""


def test_sort_buttons_and_lightbox(pages, tmp_path):
    """Real click events on the page's own controls; expected orders hand-sorted from report_fixture.LAYER_A:
    units 1 disc/object .12, 2 red-c/color .30, 3 meadow-s/scene .02, 4 grass/material .08,
    5 disc/object .05, 6 striped/texture .01."""
    page = pages / "layer2" / "report.html"
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text("utf-8").replace("</body>", PROBE + "</body>"), "utf-8")
    res = chromium(tmp_path / "profile", "--dump-dom", probe.as_uri())
    assert not console_errors(res.stderr), res.stderr[-2000:]
    tag = re.search(r"<html[^>]*>", res.stdout).group(0)
    got = dict(re.findall(r'data-probe-([a-z-]+)="([^"]*)"', tag))
    assert got["initial"] == "2,1,4,5,3,6"           # IoU, best first
    assert got["label"] == "1,5,4,3,2,6"             # disc, disc, grass, meadow, red, striped (ties: IoU)
    assert got["label-desc"] == "6,2,3,4,1,5"        # reversed by a second click (ties still by IoU)
    assert got["unit"] == "1,2,3,4,5,6" and got["hash"] == "#sort=unit-asc"
    assert got["category"] == "2,4,1,5,3,6"          # color, material, object x2, scene, texture
    assert got["iou"] == "2,1,4,5,3,6"
    assert got["lb-before"] == "true" and got["lb-open"] == "false"
    assert got["lb-src"] == "report_files/unit_0004.jpg" and got["lb-caption"].startswith("unit 4: grass (material")
    assert got["lb-after-escape"] == "true" and got["lb-after-click"] == "true"
    # the sort state in the hash is applied on load
    res = chromium(tmp_path / "p2", "--dump-dom", page.as_uri() + "#sort=label-desc")
    order = re.findall(r'<section class="unit"[^>]*data-unit="(\d+)"', res.stdout)
    assert order == ["6", "2", "3", "4", "1", "5"]


GRID_PROBE = """<script>
window.addEventListener('load', function(){ setTimeout(function(){
  var root=document.documentElement, out={}, box=document.getElementById('units');
  function visible(){  /* cards wholly inside the viewport, below the sticky controls */
    var top=document.querySelector('.controls').getBoundingClientRect().bottom, n=0;
    Array.prototype.forEach.call(box.querySelectorAll('.unit'), function(u){
      var r=u.getBoundingClientRect(); if(!u.hidden && r.top>=top && r.bottom<=window.innerHeight){n++;} });
    return n; }
  function at_units(){ window.scrollTo(0, box.getBoundingClientRect().top + window.scrollY
                                         - document.querySelector('.controls').offsetHeight); }
  at_units(); out.grid=visible(); out.hash=location.hash;
  document.querySelector('.view button[data-view="list"]').dispatchEvent(new MouseEvent('click', {bubbles:true}));
  at_units(); out.list=visible();
  document.querySelector('.view button[data-view="grid"]').dispatchEvent(new MouseEvent('click', {bubbles:true}));
  at_units();
  var strip=document.querySelector('#unit-7 img.strip'), r=strip.getBoundingClientRect();
  var tiles=strip.getAttribute('data-tiles').split(','), t1=tiles[1].split(':');
  var scale=r.width/parseInt(strip.getAttribute('width'),10);
  out.thumb_w=(parseInt(t1[1],10)*scale).toFixed(1);  /* the second image as shown in the card */
  strip.dispatchEvent(new MouseEvent('click', {bubbles:true, clientX:r.left+(parseInt(t1[0],10)+2)*scale,
                                                clientY:r.top+5}));
  var f=document.getElementById('lightbox-frame').getBoundingClientRect();
  out.lb_w=f.width.toFixed(1); out.lb_h=f.height.toFixed(1); out.win_w=window.innerWidth; out.win_h=window.innerHeight;
  out.caption=document.getElementById('lightbox-caption').textContent;
  document.dispatchEvent(new KeyboardEvent('keydown', {key:'ArrowRight'}));
  out.caption_next=document.getElementById('lightbox-caption').textContent;
  out.img_left=document.getElementById('lightbox-img').style.left;
  for (var k in out) { root.setAttribute('data-probe-'+k.replace(/_/g,'-'), out[k]); }
}, 0); });
</script>"""


@pytest.fixture(scope="module")
def wide_layer(synthetic_store, tmp_path_factory):
    """A layer of 120 units, 3 top images each (a real layer has hundreds)."""
    from broden_builder import BrodenStore
    from report_fixture import fabricate_layer

    out = tmp_path_factory.mktemp("wide") / "O"
    names = [("disc", "object"), ("red-c", "color"), ("grass", "material"), ("striped", "texture")]
    units = [(names[i % 4][0], names[i % 4][1], 0.02 + 0.001 * i, i % 3 == 0) for i in range(120)]
    fabricate_layer(out, "wide", synthetic_store, len(BrodenStore(synthetic_store)), units, k=3, hw=(8, 8), seed=4)
    write_reports(out)
    return out / "wide" / "report.html"


def test_grid_view_density_and_lightbox_one_image_enlarged(wide_layer, tmp_path):
    """Issue 24: one unit per row showed ~3 units a screen; the grid shows 20-30 or more at
    1280 x 900. The lightbox enlarges one image (not the whole strip at its size) to the window;
    the arrow key steps to the next image."""
    probe = wide_layer.with_name("probe.html")
    probe.write_text(wide_layer.read_text("utf-8").replace("</body>", GRID_PROBE + "</body>"), "utf-8")
    res = chromium(tmp_path / "profile", "--window-size=1280,900", "--dump-dom", probe.as_uri() + "#view=grid")
    assert not console_errors(res.stderr), res.stderr[-2000:]
    got = dict(re.findall(r'data-probe-([a-z-]+)="([^"]*)"', re.search(r"<html[^>]*>", res.stdout).group(0)))
    assert int(got["grid"]) >= 20, got
    assert int(got["list"]) <= 6 and int(got["grid"]) >= 4 * int(got["list"]), got
    assert "view=grid" in got["hash"]
    assert "image 2 of 3" in got["caption"] and "image 3 of 3" in got["caption-next"], got
    lb_w, lb_h, thumb_w = float(got["lb-w"]), float(got["lb-h"]), float(got["thumb-w"])
    assert lb_w > 3 * thumb_w, got  # one image, enlarged
    assert lb_w <= 0.96 * int(got["win-w"]) + 1 and lb_h <= 0.8 * int(got["win-h"]) + 1  # fits the window
    assert max(lb_w / (0.96 * int(got["win-w"])), lb_h / (0.8 * int(got["win-h"]))) > 0.98  # and fills it


def test_grid_screenshot_size(wide_layer, tmp_path):
    shot = tmp_path / "grid.png"
    res = chromium(tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,900",
                   wide_layer.as_uri() + "#view=grid")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-3000:]
    with Image.open(shot) as im:
        assert im.size == (1280, 900)
        extrema = im.convert("L").getextrema()
    assert extrema[0] < 100 < extrema[1], "screenshot is blank"
