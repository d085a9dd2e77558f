"""A fast smoke test of the demo pipeline at tiny sizes (the full `make demo` is not run in CI)."""
from __future__ import annotations

import torch


def test_demo_pipeline_tiny(tmp_path):
    from dissect.demo import run_demo

    lines = []
    torch.set_num_threads(1)
    out = run_demo(tmp_path / "demo", images=40, size=48, seg=24, input_size=48, epochs=1, widths=(8, 8, 8, 8),
                   workers=1, quiet=True, top_k=3, min_frequency=1, say=lines.append)
    text = "\n".join(lines)
    assert out["index"] == tmp_path / "demo" / "dissect" / "index.html" and out["index"].is_file()
    for layer in ("block2", "block4"):
        assert (tmp_path / "demo" / "dissect" / layer / "report.html").is_file()
        assert layer in out["results"]
    assert "validation accuracy" in text and "open the report:" in text
    header = next(l for l in lines if l.startswith("layer"))
    assert "color" in header and "object" in header
    # units per layer as built: block2 has 8 units, block4 has 8
    assert [r.iou.shape[0] for r in out["results"].values()] == [8, 8]
    # a second run reuses the store
    again = run_demo(tmp_path / "demo", images=40, size=48, seg=24, input_size=48, epochs=1, widths=(8, 8, 8, 8),
                     workers=1, quiet=True, top_k=3, min_frequency=1, say=lines.append)
    assert any("(reused)" in l for l in lines) and again["index"].is_file()
