"""Third-party sources through the ``broden_builder.sources`` entry point (a plug-in installed here)."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from broden_builder.build import build_store
from broden_builder.recipe import recipe_from_dict
from broden_builder.sources import get_source_class
from broden_builder.store.reader import BrodenStore
from broden_builder.store.validate import validate_store


# ----------------------------------------------------------------------------- plug-in
PLUGIN = '''
import numpy as np
from broden_builder.sources import ImageRecord, Resolved, Source


class StripesSource(Source):
    """Half the image is 'stripe', the other half unlabeled."""

    type_name = "stripes"

    def vocabulary(self):
        return {"pattern": {1: ("stripe", "band")}}

    def image_level_categories(self):
        return frozenset()

    def records(self):
        return [ImageRecord(f"s{i}", {"i": i}) for i in range(int(self.config.get("count", 4)))]

    def resolve(self, record):
        rgb = np.full((20, 20, 3), 10 * record.meta["i"], np.uint8)
        lab = np.zeros((20, 20), np.int32)
        lab[:, :10] = 1
        return Resolved(image=rgb, pixel={"pattern": [lab]})
'''


def test_plugin_through_entry_point(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "stripes_plugin").mkdir(parents=True)
    (pkg / "stripes_plugin" / "__init__.py").write_text(PLUGIN)
    (pkg / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=64"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "stripes-plugin"
        version = "0.0.1"
        [project.entry-points."broden_builder.sources"]
        stripes = "stripes_plugin:StripesSource"
        '''))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(pkg)], check=True)
    sys.path.insert(0, str(target))
    try:
        import importlib

        importlib.invalidate_caches()
        from broden_builder import sources as reg

        assert "stripes" in reg.available_sources()
        cls = get_source_class("stripes")
        assert cls.__name__ == "StripesSource"
        recipe = recipe_from_dict({"size": 16, "segmentation_size": 8, "min_frequency": 1, "min_coverage": 0, "color": False,
                                   "sources": [{"type": "stripes", "count": 4}]})
        build_store(recipe, tmp_path / "store", quiet=True)
        assert validate_store(tmp_path / "store") == []
        st = BrodenStore(tmp_path / "store")
        lab = st.label("band")
        assert lab.name == "stripe" and lab.categories == {"pattern": 4} and abs(lab.coverage - 2.0) < 1e-6
        layer = st.pixel_layers(0, "pattern")[0]
        assert (layer[:, :4] == lab.number).all() and (layer[:, 4:] == 0).all()
    finally:
        sys.path.remove(str(target))
        reg._REGISTRY.pop("stripes", None)
        for m in [m for m in sys.modules if m.startswith("stripes_plugin")]:
            del sys.modules[m]
