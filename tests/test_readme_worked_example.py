"""The README's worked example (segmenter + CLIP words), run as written where it can run offline.

The ``python -c`` save commands are read from the README and run with the hub ids replaced by tiny
random models saved here with the same classes (so a save command the installed transformers does
not accept fails here); the saved folders must load with the segmenter's and describe's loaders.
The recipe is read from the README and built with ``broden build`` on a small saved dataset, and
``broden stats`` must name the model of the predicted labels. Commands that need the network
(``load_dataset`` of a hub id, torchvision's downloaded weights) and the dissect commands that use
ImageNet weights are skipped by name.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SEGFORMER, CLIP = "nvidia/segformer-b0-finetuned-ade-512-512", "openai/clip-vit-base-patch32"


def _section() -> str:
    text = (REPO / "README.md").read_text("utf-8")
    start = text.index("### Worked example: your images, a real segmenter, CLIP words")
    return text[start:text.index("\n### ", start + 10)]


def _blocks(section: str, lang: str = "") -> list:
    """The fenced blocks of ``section`` whose fence names ``lang`` ("" : unnamed), in order."""
    out, current, opened = [], None, None
    for line in section.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, opened = [], line[3:].strip()
            else:
                if opened == lang:
                    out.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return out


def _python_commands(section: str) -> list:
    block = _blocks(section)[0].replace("\\\n", " ")
    return [line.split("   #")[0].strip() for line in block.splitlines() if line.strip().startswith("python -c")]


def _tiny_sources(tmp: Path) -> dict:
    """Tiny random stand-ins of the README's hub models, saved as the hub holds them."""
    from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer,
                              SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor)

    torch.manual_seed(0)
    seg = tmp / "hub" / "segformer"
    classes = ["table", "plate"]
    cfg = SegformerConfig(num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[8, 16],
                          patch_sizes=[7, 3], strides=[4, 2], num_attention_heads=[1, 1], mlp_ratios=[2, 2],
                          decoder_hidden_size=16, num_labels=2, id2label=dict(enumerate(classes)),
                          label2id={c: i for i, c in enumerate(classes)})
    SegformerForSemanticSegmentation(cfg).save_pretrained(seg)
    SegformerImageProcessor(size={"height": 64, "width": 64}).save_pretrained(seg)
    clip = tmp / "hub" / "clip"
    clip.mkdir(parents=True)
    (clip / "vocab.json").write_text('{"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3}')
    (clip / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(clip / "vocab.json"), str(clip / "merges.txt"))
    ccfg = CLIPConfig(text_config={"vocab_size": 4, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": 1,
                                   "bos_token_id": 0, "eos_token_id": 1},
                      vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "image_size": 32, "patch_size": 8}, projection_dim=8)
    CLIPModel(ccfg).save_pretrained(clip)
    CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
                  tokenizer=tok).save_pretrained(clip)
    return {SEGFORMER: str(seg), CLIP: str(clip)}


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def _run(cmd: str, cwd: Path) -> str:
    r = subprocess.run(cmd, shell=True, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_worked_example_save_commands_recipe_and_build(tmp_path):
    section = _section()
    hub = _tiny_sources(tmp_path)
    commands = _python_commands(section)
    ran = 0
    for cmd in commands:
        if "load_dataset(" in cmd or "weights='IMAGENET1K_V1'" in cmd:
            continue  # the network (a hub dataset, torchvision's weights)
        for hub_id, local in hub.items():
            cmd = cmd.replace(f"'{hub_id}'", repr(local))
        _run(cmd.replace("python -c", f"{sys.executable} -c", 1), tmp_path)
        ran += 1
    assert ran == 2
    from broden_builder.sources.segmenter.models import load_segmenter
    from dissect.describe._clip import load_image_text

    seg = load_segmenter(f"hf:{tmp_path / 'models' / 'segformer-ade'}", "cpu")
    assert list(seg.classes) == ["table", "plate"]
    clip = load_image_text(f"hf:{tmp_path / 'models' / 'clip-b32'}", "cpu")
    assert clip.encode_image(torch.rand(2, 3, 40, 40)).shape[0] == 2

    # the dataset the recipe reads (the README saves Food-101's validation split; here 8 random photos)
    import datasets

    rng = np.random.default_rng(0)
    photos = [Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)) for _ in range(8)]
    ds = datasets.Dataset.from_dict({"image": photos}, features=datasets.Features({"image": datasets.Image()}))
    ds.save_to_disk(str(tmp_path / "data" / "food101-val"))
    recipe = yaml.safe_load(_blocks(section, "yaml")[0])
    recipe["size"], recipe["segmentation_size"] = 32, 16  # small, for the test's time; the rest as written
    (tmp_path / "food.yaml").write_text(yaml.safe_dump(recipe))
    shell = _blocks(section)[1].replace("\\\n", " ")
    broden = [line.split("#")[0].strip() for line in shell.splitlines() if line.strip().startswith("broden ")]
    assert broden[0] == "broden build food.yaml --out food_store" and broden[1] == "broden stats food_store"
    _run(f"{sys.executable} -m broden_builder build food.yaml --out food_store -q", tmp_path)
    out = _run(f"{sys.executable} -m broden_builder stats food_store", tmp_path)
    assert "labels predicted by hf:models/segformer-ade:" in out
    dissect = [line for line in shell.splitlines() if line.strip().startswith("dissect ")]
    assert all("--store food_store" in line or line.startswith("dissect report") for line in dissect)
