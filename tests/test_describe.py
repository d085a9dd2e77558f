"""dissect describe: CLIP-Dissect's SoftWPMI words per unit.

Oracles: a plain loop over units, words and images written here from the paper's formulas
(Oikarinen & Weng, ICLR 2023, eq. 5-6); an image-text model that embeds each store image by the
objects it holds (read from the store's own label planes) and each word by its concept, with units
planted to fire on one object each; a tiny random transformers CLIP run through the command line.
"""
from __future__ import annotations

import csv
import json
import hashlib
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from broden_builder import BrodenStore
from dissect.cli import main
from dissect.describe import read_descriptions, soft_wpmi


def _plain_soft_wpmi(sims, acts, top_k, a=10.0, lam=1.0, p_start=0.998, p_end=0.97, min_prob=1e-7):
    """By the paper's formulas, one unit, word and image at a time (float64 lists)."""
    N, T = len(sims), len(sims[0])
    U = len(acts[0])
    p_t_x = []
    for i in range(N):
        z = sum(math.exp(a * sims[i][t]) for t in range(T))
        p_t_x.append([math.exp(a * sims[i][t]) / z for t in range(T)])
    log_given = []
    for u in range(U):
        order = sorted(range(N), key=lambda i: -acts[i][u])[:min(top_k, N)]
        row = []
        for t in range(T):
            total = 0.0
            for r, i in enumerate(order):
                p_r = p_start - r / top_k * (p_start - p_end)  # rank r's chance to belong to the concept
                total += math.log(1 - p_r + p_r * p_t_x[i][t] + min_prob)
            row.append(total)
        log_given.append(row)
    prior = [math.log(sum(math.exp(log_given[u][t]) for u in range(U)) / U) for t in range(T)]
    return [[log_given[u][t] - lam * prior[t] for t in range(T)] for u in range(U)]


@pytest.mark.parametrize("N,T,U,top_k,a,lam", [(30, 7, 5, 10, 10.0, 1.0), (12, 4, 3, 100, 2.0, 0.6), (50, 9, 8, 50, 10.0, 1.0)])
def test_soft_wpmi_matches_the_formula(N, T, U, top_k, a, lam):
    g = torch.Generator().manual_seed(N * 7 + T)
    sims = torch.rand(N, T, generator=g, dtype=torch.float64) * 2 - 1
    acts = torch.rand(N, U, generator=g, dtype=torch.float64)
    got = soft_wpmi(sims, acts, top_k=top_k, a=a, lam=lam, budget=7)  # tiny budget: several unit chunks
    want = torch.tensor(_plain_soft_wpmi(sims.tolist(), acts.tolist(), top_k, a, lam), dtype=torch.float64)
    assert torch.allclose(got.double(), want, rtol=1e-4, atol=1e-4)


ORACLE = '''
import hashlib, numpy as np, torch
class Oracle:
    def __init__(self):
        z = np.load({table!r}, allow_pickle=False)
        self.words = [str(w) for w in z["words"]]
        self.images = {{k: z[k] for k in z.files if k != "words"}}
    def encode_image(self, x):
        keys = [hashlib.sha1((im * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy().tobytes()).hexdigest()
                for im in x]
        return torch.stack([torch.from_numpy(self.images["k" + k]).float() for k in keys])
    def encode_text(self, words):
        return torch.eye(len(self.words))[[self.words.index(w) for w in words]]
def make():
    return Oracle()
'''


def _oracle_setup(store_path: Path, tmp: Path):
    """Oracle model (image -> its objects, word -> its concept), planted unit maps, vocabulary file."""
    store = BrodenStore(store_path)
    objects = sorted({l.name for l in store.labels if store.primary_category(l.number) == "object"})
    words = objects + ["banana", "cloud", "violin"]  # distractors no image holds
    table, maps = {"words": np.array(words)}, []
    for i in range(len(store)):
        planes = store.pixel_layers(i, "object")
        names = {store.label(int(n)).name for p in planes for n in np.unique(p) if n}
        vec = np.array([1.0 if w in names else 0.0 for w in words], np.float32)
        vec[words.index("banana")] += 0.05  # no image is without any concept
        rgb = store.load_image(i)
        table["k" + hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()] = vec
        # unit u fires on object u's pixels (a planted detector), faintly elsewhere
        m = np.stack([sum(((p == store.label(o).number) for p in planes), np.zeros(planes[0].shape, bool)).astype(np.float32)
                      if planes else np.zeros((store.rows[i].sh, store.rows[i].sw), np.float32) for o in objects])
        maps.append(m + 0.01 * np.random.default_rng(i).random(m.shape, dtype=np.float32))
    np.savez(tmp / "table.npz", **table)
    (tmp / "oracle.py").write_text(ORACLE.format(table=str(tmp / "table.npz")))
    np.save(tmp / "planted.npy", np.stack(maps))
    (tmp / "words.txt").write_text("\n".join(words) + "\n")
    return objects


def test_planted_detectors_get_their_concept_as_top_word(synthetic_store, tmp_path, capsys):
    objects = _oracle_setup(synthetic_store, tmp_path)
    out = tmp_path / "out"
    assert main(["-q", "score", "--store", str(synthetic_store), "--activations", str(tmp_path / "planted.npy"),
                 "--out", str(out), "--no-report"]) == 0
    assert main(["-q", "describe", "--store", str(synthetic_store), "--activations", str(tmp_path / "planted.npy"),
                 "--clip", f"{tmp_path / 'oracle.py'}:make", "--vocabulary", str(tmp_path / "words.txt"),
                 "--out", str(out), "--device", "cpu"]) == 0
    with open(out / "planted" / "descriptions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["unit"]) for r in rows] == list(range(1, len(objects) + 1))
    for r, concept in zip(rows, objects):
        words = r["words"].split(";")
        assert words[0] == concept and len(words) == 5
        # the IoU label of the same folder's dissection, and whether it is among the words, checked by hand
        assert r["iou_label_in_top5"] == str(int(r["iou_label"].lower() in words))
    assert "among the top 5 words for" in capsys.readouterr().out
    assert main(["-q", "report", str(out)]) == 0
    page = (out / "planted" / "report.html").read_text("utf-8")
    assert objects[0] in page and "open vocabulary" in page and "top 5 words" in page


def _tiny_clip(folder: Path, words: list) -> None:
    from transformers import BertTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + sorted({w.lower() for w in words})
    folder.mkdir(parents=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    cfg = CLIPConfig(text_config={"vocab_size": len(vocab), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                  "num_attention_heads": 2, "max_position_embeddings": 16, "pad_token_id": 0,
                                  "bos_token_id": 2, "eos_token_id": 3},
                     vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                    "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                     projection_dim=8)
    CLIPModel(cfg).save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)


NET = '''
import torch
def make():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(6, 4, 3, stride=2))
'''


def test_tiny_random_clip_end_to_end(synthetic_store, tmp_path, monkeypatch):
    store = BrodenStore(synthetic_store)
    from dissect.describe import store_words

    words = store_words(store)
    _tiny_clip(tmp_path / "clip", words)
    (tmp_path / "net.py").write_text(NET)
    out = tmp_path / "out"
    args = ["-q", "describe", "--store", str(synthetic_store), "--model", f"{tmp_path / 'net.py'}:make", "--layer", "2",
            "--clip", f"hf:{tmp_path / 'clip'}", "--vocabulary", "store", "--out", str(out), "--device", "cpu"]
    assert main(args) == 0
    got = read_descriptions(out / "2")
    assert sorted(got) == [1, 2, 3, 4]
    assert all(len(d["words"]) == 5 and set(d["words"]) <= set(words) and math.isfinite(d["similarity"]) for d in got.values())
    cached = sorted(p.name for p in (out / ".describe-cache").iterdir())
    assert len(cached) == 2 and cached[0].startswith("image-") and cached[1].startswith("text-")
    # a second run reads the embeddings from the cache: the model is never asked to embed again
    import dissect.describe._clip as clip_mod

    real = clip_mod._features
    monkeypatch.setattr(clip_mod, "_features", lambda *a: pytest.fail("embeddings recomputed despite the cache"))
    assert main(args) == 0
    assert read_descriptions(out / "2") == got
    monkeypatch.setattr(clip_mod, "_features", real)


def test_hub_id_not_cached_is_one_line(tmp_path, monkeypatch, capsys, synthetic_store):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    np.save(tmp_path / "a.npy", np.zeros((len(BrodenStore(synthetic_store)), 2), np.float32))
    (tmp_path / "w.txt").write_text("car\n")
    rc = main(["describe", "--store", str(synthetic_store), "--activations", str(tmp_path / "a.npy"),
               "--clip", "hf:openai/clip-vit-base-patch32", "--vocabulary", str(tmp_path / "w.txt"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "save_pretrained" in err[0] and "openai/clip-vit-base-patch32" in err[0]


def test_wordfreq_vocabulary_is_common_words():
    from dissect.describe import common_words

    w = common_words(500)
    assert len(w) == 500 and len(set(w)) == 500 and all(x.isalpha() and len(x) >= 3 for x in w)
    assert {"the", "and", "people", "time"} <= set(w)


def test_open_clip_checkpoint_loads_its_weights(tmp_path):
    """open_clip:ARCH:CHECKPOINT: a tiny registered architecture; the embeddings are those of the saved weights."""
    open_clip = pytest.importorskip("open_clip")
    import json

    from dissect.describe import load_image_text

    cfg = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "tiny-clip-test.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(tmp_path / "tiny-clip-test.json")
    torch.manual_seed(1)
    ref = open_clip.create_model("tiny-clip-test").eval()
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    model = load_image_text(f"open_clip:tiny-clip-test:{tmp_path / 'w.pt'}")
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN)[None, :, None, None]
    std = torch.tensor(open_clip.OPENAI_DATASET_STD)[None, :, None, None]
    with torch.no_grad():
        want_img = ref.encode_image((x - mean) / std)
        want_txt = ref.encode_text(open_clip.get_tokenizer("tiny-clip-test")(["car", "tree"]))
        assert torch.allclose(model.encode_image(x), want_img, atol=1e-5)
        assert torch.allclose(model.encode_text(["car", "tree"]), want_txt, atol=1e-5)
    assert model.identity["sha256"] == hashlib.sha256((tmp_path / "w.pt").read_bytes()).hexdigest()


def test_sae_features_get_the_concept_of_the_unit_they_read(synthetic_store, tmp_path, capsys):
    """``--sae LAYER=FOLDER``: feature f of an SAE whose encoder reads planted unit perm[f] (a permutation,
    no bias, relu) is described by that unit's concept; the words go to OUT/<layer>.sae/."""
    from dissect.sae import save_sae

    objects = _oracle_setup(synthetic_store, tmp_path)
    U = len(objects)
    perm = list(reversed(range(U)))
    W = np.zeros((U, U), np.float32)
    for f, u in enumerate(perm):
        W[u, f] = 1.0
    save_sae(tmp_path / "sae", {"W_enc": W, "b_enc": np.zeros(U, np.float32), "b_dec": np.zeros(U, np.float32),
                                "W_dec": W.T.copy()}, {"activation": "relu", "layer": "planted"})
    out = tmp_path / "out"
    args = ["-q", "describe", "--store", str(synthetic_store), "--activations", str(tmp_path / "planted.npy"),
            "--clip", f"{tmp_path / 'oracle.py'}:make", "--vocabulary", str(tmp_path / "words.txt"),
            "--out", str(out), "--device", "cpu"]
    assert main(args + ["--sae", f"planted={tmp_path / 'sae'}"]) == 0
    assert f"{U} features described" in capsys.readouterr().out
    with open(out / "planted.sae" / "descriptions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["words"].split(";")[0] for r in rows] == [objects[u] for u in perm]
    assert not (out / "planted").exists()
    doc = json.loads((out / "planted.sae" / "descriptions.json").read_text())
    assert doc["settings"]["sae"]["features"] == U and doc["settings"]["dissected"] == "feature"
    assert main(args + ["--sae", f"other={tmp_path / 'sae'}"]) != 0
    assert "names layer(s) ['other'] but the layer described is 'planted'" in capsys.readouterr().err
