"""The README's command-line examples, run as written where they can run offline (issue 24, item 7).

The commands are read from the README's "Command line" block, not copied here, so a wrong
example (a layer name the installed transformers does not have) fails this test. They run in a
folder where ``broden1_224`` is the 60-image synthetic store, ``mynet.py``/``mynet.pth``, a
small Hugging Face ViT saved as ``./vit-base-local`` (12 layers, as vit-base) and ``feats.npy``
are made here; examples that need downloaded weights (``IMAGENET1K_V1``, timm) or files this
test does not make are listed and skipped by name. Also: BrodenStore's public members are
documented with what they return.
"""
from __future__ import annotations

import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
NEEDS_NETWORK_OR_FILES = ("IMAGENET1K_V1", "timm:", "program.pt2", "scripted.pt")

def readme_commands() -> list:
    """The `dissect ...` commands of the README block that follows "**Command line.**"."""
    text = (REPO / "README.md").read_text("utf-8")
    start = text.index("**Command line.**")
    block = text[text.index("```\n", start) + 4:]
    block = block[:block.index("```")]
    block = block.replace("\\\n", " ")
    cmds = []
    for line in block.splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("dissect "):
            cmds.append(line)
    return cmds


def _mynet(tmp: Path):
    from torch import nn

    src = (  # the README's layer features.8: a Sequential of 9 modules
        "import torch\nfrom torch import nn\n\n\n"
        "class MyNet(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),\n"
        "                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 6, 1))\n\n"
        "    def forward(self, x):\n"
        "        return self.features(x)\n\n\n"
        "def build():\n"
        "    return MyNet()\n")
    (tmp / "mynet.py").write_text(src)
    ns: dict = {}
    exec(compile(src, "mynet.py", "exec"), ns)
    torch.manual_seed(1)
    torch.save(ns["build"]().state_dict(), tmp / "mynet.pth")
    assert isinstance(ns["build"]().features[8], nn.Conv2d)


def _vit(tmp: Path, image_size: int):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(num_hidden_layers=12, hidden_size=16, num_attention_heads=2, intermediate_size=16,
                                 image_size=image_size, patch_size=16)
    torch.manual_seed(0)
    transformers.ViTModel(cfg).save_pretrained(tmp / "vit-base-local")


@pytest.fixture(scope="module")
def workdir(synthetic_store, tmp_path_factory):
    from broden_builder import BrodenStore

    tmp = tmp_path_factory.mktemp("readme")
    os.symlink(synthetic_store, tmp / "broden1_224")
    store = BrodenStore(synthetic_store)
    _mynet(tmp)
    _vit(tmp, store.rows[0].ih)
    r0 = store.rows[0]
    np.save(tmp / "feats.npy", np.random.default_rng(0).standard_normal((len(store), 3, r0.sh // 4, r0.sw // 4))
            .astype(np.float32))
    return tmp


def test_readme_commands_are_found():
    cmds = readme_commands()
    assert any(c.startswith("dissect layers") for c in cmds) and any(c.startswith("dissect report") for c in cmds)
    assert any("hf:" in c for c in cmds)


@pytest.mark.parametrize("k", range(len(readme_commands())))
def test_readme_command_runs(workdir, k):
    cmd = readme_commands()[k]
    skip = [w for w in NEEDS_NETWORK_OR_FILES if w in cmd]
    if skip:
        pytest.skip(f"needs downloaded weights or files this test does not make: {skip[0]}")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if cmd.startswith("dissect report") and not (workdir / "out").is_dir():
        pytest.skip("no results yet (an earlier example failed)")
    args = shlex.split(cmd)[1:]
    res = subprocess.run([sys.executable, "-m", "dissect", *args], cwd=workdir, env=env, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, f"README example failed: {cmd}\n{res.stderr}"
    if args[0] == "run":
        layer = args[args.index("--layer") + 1]
        from dissect.results import has_result, layer_folder

        assert has_result(layer_folder(workdir / "out", layer))
    if args[0] == "layers":
        assert re.search(r"^layer4\s", res.stdout, re.M)


def test_broden_store_members_are_documented_with_their_returns(synthetic_store):
    """Every public method and property has a docstring; those giving arrays state their shape
    ([ih, iw, 3], [sh, sw]); the class docstring names every public attribute."""
    from broden_builder import BrodenStore

    store = BrodenStore(synthetic_store)
    doc = inspect.getdoc(BrodenStore)
    for attr in (a for a in vars(store) if not a.startswith("_")):
        assert f"``{attr}``" in doc, f"BrodenStore attribute {attr} is not documented"
    for name, member in inspect.getmembers(BrodenStore):
        if name.startswith("_"):
            continue
        fn = member.fget if isinstance(member, property) else member
        assert inspect.getdoc(fn), f"BrodenStore.{name} has no docstring"
    for name in ("load_image", "load_label_png", "pixel_layers", "segmentation"):
        assert re.search(r"\[[a-z]+, [a-z]+", inspect.getdoc(getattr(BrodenStore, name))), name
