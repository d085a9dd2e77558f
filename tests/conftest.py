"""Shared fixtures: the real-data folder and small synthetic stores."""
from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# each source's offline test (and its dummy-data makers, used by other tests too) lives in tests/sources/
sys.path.insert(0, str(Path(__file__).resolve().parent / "sources"))


def find_realdata() -> Path:
    """The folder of real source samples (never committed): ``$BRODEN_REALDATA`` when set, else the
    first ``shared/realdata`` found in the checkout or a folder above it (a workspace holding several
    checkouts). When none exists the returned path is absent and the tests that need it skip."""
    env = os.environ.get("BRODEN_REALDATA")
    if env:
        return Path(env)
    for d in (REPO, *REPO.parents):
        if (d / "shared" / "realdata").is_dir():
            return d / "shared" / "realdata"
    return REPO / "realdata-not-found"


#: The one definition of where the real samples are; every test that needs them imports this.
REALDATA = find_realdata()
# readers cache label indexes in the user's cache folder: one per test session, not the home folder,
# removed when the session ends (when this session made it)
if "BRODEN_CACHE_DIR" not in os.environ:
    os.environ["BRODEN_CACHE_DIR"] = _SESSION_CACHE = tempfile.mkdtemp(prefix="broden-cache-")
    atexit.register(shutil.rmtree, _SESSION_CACHE, True)


@pytest.fixture(scope="session")
def realdata() -> Path:
    """The real source samples (see :func:`find_realdata`); skips when absent."""
    if not REALDATA.is_dir():
        pytest.skip(f"real source files not available: {REALDATA} is absent (set BRODEN_REALDATA; they are never committed)")
    return REALDATA


def build_synthetic(out: Path, count: int = 60, seed: int = 0, size: int = 64, seg: int = 32, workers: int = 1, **extra):
    """Build a small synthetic store (min_frequency 1, so every concept survives)."""
    from broden_builder.build import build_store
    from broden_builder.recipe import recipe_from_dict

    recipe = recipe_from_dict({
        "name": "test-synthetic", "size": size, "segmentation_size": seg, "min_frequency": extra.pop("min_frequency", 1),
        "min_coverage": extra.pop("min_coverage", 0.0), "color": extra.pop("color", True),
        "sources": [{"type": "synthetic", "count": count, "seed": seed}],
    })
    return build_store(recipe, out, workers=workers, quiet=extra.pop("quiet", True), **extra)


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> Path:
    """A 60-image synthetic store at 64/32 (read-only: copy it before changing anything)."""
    out = tmp_path_factory.mktemp("synthetic") / "store"
    build_synthetic(out)
    return out
