"""The store format: encodings, the format document's example rows, CRLF/LF, the original reader."""
from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from broden_builder import BrodenStore, StoreFormatError
from broden_builder.store.format import decode_label_png, encode_label_png, split_for, split_hash
from original_reader import OriginalStyleReader


def test_png_encoding_round_trip_and_hand_values():
    labels = np.array([[0, 1, 255], [256, 300, 65535]])
    rgb = encode_label_png(labels)
    # hand-computed: 300 = 44 + 256 * 1; 65535 = 255 + 256 * 255
    assert rgb[1, 1].tolist() == [44, 1, 0]
    assert rgb[1, 2].tolist() == [255, 255, 0]
    assert (decode_label_png(rgb) == labels).all()
    with pytest.raises(ValueError):
        encode_label_png(np.array([[70000]]))


def test_split_hash_is_md5_prefix_big_endian():
    path = "ade20k/ADE_train_00000001.jpg"
    digest = hashlib.md5(path.encode()).hexdigest()
    expected = int(digest[:16], 16) / 2**64
    assert split_hash(path) == pytest.approx(expected, abs=0)
    assert split_for(path) == ("train" if expected <= 0.7 else "val")


def _minimal_store(root, newline="\r\n", with_syns=True, with_readme=False):
    (root / "images" / "src").mkdir(parents=True)
    from PIL import Image
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / "src" / "a.jpg")
    seg = np.zeros((4, 4), np.int32)
    seg[:2] = 10
    seg[2:, :2] = 21
    Image.fromarray(encode_label_png(seg)).save(root / "images" / "src" / "a_color.png")
    lab_header = "number,name,category,frequency,coverage" + (",syns" if with_syns else "")
    rows = ["10,red-c,color(289),289,9.140027" + ("," if with_syns else ""),
            "21,fabric,material(36);object(3),39,4.225474" + (",cloth" if with_syns else "")]
    files = {
        "label.csv": [lab_header] + rows,
        "category.csv": ["name,first,last,count,frequency", "color,10,10,1,289", "material,21,21,1,36", "object,21,21,1,3"],
        "c_color.csv": ["code,number,name,frequency,coverage", "1,10,red-c,289,9.140027"],
        "c_material.csv": ["code,number,name,frequency,coverage", "1,21,fabric,36,4.0"],
        "c_object.csv": ["code,number,name,frequency,coverage", "1,21,fabric,3,0.225474"],
        "index.csv": ["image,split,ih,iw,sh,sw,color,object,material,scene",
                      "src/a.jpg,train,8,8,4,4,src/a_color.png,,,0"],
    }
    for name, lines in files.items():
        (root / name).write_bytes((newline.join(lines) + newline).encode())
    if with_readme:
        (root / "README.txt").write_text("hello")
    return root


@pytest.mark.parametrize("newline", ["\r\n", "\n"])
def test_format_document_example_rows_decode(tmp_path, newline):
    store = BrodenStore(_minimal_store(tmp_path / "s", newline=newline))
    red = store.label("red-c")
    assert (red.number, red.categories, red.frequency, red.coverage, red.syns) == (10, {"color": 289}, 289, 9.140027, ())
    fabric = store.label(21)
    assert fabric.categories == {"material": 36, "object": 3}
    assert list(fabric.categories) == ["material", "object"]
    assert (fabric.frequency, fabric.coverage, fabric.syns) == (39, 4.225474, ("cloth",))
    assert store.label("cloth").number == 21
    assert store.categories == ["color", "object", "material", "scene"]
    assert store.image_level_categories == {"scene"}
    layers = store.pixel_layers(0, "color")
    assert len(layers) == 1 and layers[0][0, 0] == 10 and layers[0][3, 0] == 21 and layers[0][3, 3] == 0
    assert store.image_labels(0, "scene") == []  # 0 means "no label"
    assert store.primary_category(21) == "material"


def test_reader_tolerates_missing_optional_files(tmp_path):
    store = BrodenStore(_minimal_store(tmp_path / "s", with_syns=False))
    assert store.label(21).syns == ()


def test_reader_errors_name_file_and_row(tmp_path):
    root = _minimal_store(tmp_path / "s")
    text = (root / "label.csv").read_text()
    (root / "label.csv").write_text(text.replace("21,fabric,material(36);object(3),39", "21,fabric,material(36);object(3),x39"))
    with pytest.raises(StoreFormatError) as e:
        BrodenStore(root)
    assert "label.csv" in str(e.value) and "row 2" in str(e.value) and "x39" in str(e.value)
    (root / "label.csv").write_text(text)
    (root / "index.csv").write_text("image,split,ih\nsrc/a.jpg,train,8\n")
    with pytest.raises(StoreFormatError, match="index.csv.*malformed header"):
        BrodenStore(root)
    (root / "index.csv").unlink()
    with pytest.raises(StoreFormatError, match="index.csv: file is missing"):
        BrodenStore(root)


def test_truncated_png_error_names_file_and_row(tmp_path):
    root = _minimal_store(tmp_path / "s")
    png = root / "images" / "src" / "a_color.png"
    png.write_bytes(png.read_bytes()[:30])
    store = BrodenStore(root)
    with pytest.raises(StoreFormatError, match=r"a_color\.png.*row 1"):
        store.pixel_layers(0, "color")


def test_original_style_reader_reads_our_store(synthetic_store):
    ours = BrodenStore(synthetic_store)
    orig = OriginalStyleReader(str(synthetic_store))
    assert len(orig.image) == len(ours)
    assert set(orig.category) == set(ours.categories)
    for lab in ours.labels:
        o = orig.label[lab.number]
        assert o["name"] == lab.name and o["category"] == lab.categories and o["frequency"] == lab.frequency
    for cat in ours.categories:
        for e in ours.category_maps[cat]:
            assert orig.category_labels[cat][e.code]["number"] == e.number
    for i in range(0, len(ours), 7):
        seg = orig.segmentation(i)
        for cat in ours.categories:
            if cat in ours.image_level_categories:
                assert seg[cat] == ours.image_labels(i, cat)
            else:
                layers = ours.pixel_layers(i, cat)
                assert seg[cat].shape[0] == len(layers)
                for k, layer in enumerate(layers):
                    assert (seg[cat][k] == layer).all()


def test_our_store_uses_crlf_excel_csv(synthetic_store):
    raw = (synthetic_store / "index.csv").read_bytes()
    assert raw.startswith(b"image,split,ih,iw,sh,sw,")
    assert b"\r\n" in raw and raw.count(b"\n") == raw.count(b"\r\n")


def test_reads_the_original_archive_layout(tmp_path):
    """A store laid out like broden1_224: six columns in the released order, part layers _part_1/_part_2,
    image-level cells with several numbers and a stray 0, files written by csv with CRLF."""
    import csv
    from PIL import Image

    root = tmp_path / "broden1_224"
    img_dir = root / "images" / "ade20k"
    img_dir.mkdir(parents=True)
    Image.fromarray(np.full((224, 224, 3), 90, np.uint8)).save(img_dir / "ADE_train_00000001.jpg")
    p1 = np.zeros((112, 112), np.int32)
    p1[:10, :10] = 300
    p2 = np.zeros((112, 112), np.int32)
    p2[50:, 50:] = 7
    Image.fromarray(encode_label_png(p1)).save(img_dir / "ADE_train_00000001_part_1.png")
    Image.fromarray(encode_label_png(p2)).save(img_dir / "ADE_train_00000001_part_2.png")

    def write(name, header, rows):
        with open(root / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)

    write("index.csv", ["image", "split", "ih", "iw", "sh", "sw", "color", "object", "part", "material", "scene", "texture"],
          [["ade20k/ADE_train_00000001.jpg", "train", 224, 224, 112, 112, "", "",
            "ade20k/ADE_train_00000001_part_1.png;ade20k/ADE_train_00000001_part_2.png", "", "0;5", ""]])
    write("label.csv", ["number", "name", "category", "frequency", "coverage", "syns"],
          [[5, "street-s", "scene(1)", 1, "1.000000", ""], [7, "wheel", "part(1)", 1, "0.3", ""], [300, "handle", "part(1)", 1, "0.01", "grip;haft"]])
    write("category.csv", ["name", "first", "last", "count", "frequency"], [["scene", 5, 5, 1, 1], ["part", 7, 300, 2, 2]])
    write("c_scene.csv", ["code", "number", "name", "frequency", "coverage"], [[1, 5, "street-s", 1, "1.0"]])
    write("c_part.csv", ["code", "number", "name", "frequency", "coverage"], [[1, 7, "wheel", 1, "0.3"], [2, 300, "handle", 1, "0.01"]])
    s = BrodenStore(root)
    assert s.categories == ["color", "object", "part", "material", "scene", "texture"]
    assert s.image_level_categories == {"scene", "texture"}
    layers = s.pixel_layers(0, "part")
    assert [l[0, 0] for l in layers] == [300, 0] and layers[1][60, 60] == 7
    assert s.image_labels(0, "scene") == [5]
    assert s.image_labels(0, "texture") == [] and s.pixel_layers(0, "color") == []
    assert s.label("grip").number == 300
    assert s.images_with_label("wheel") == [0] and s.images_with_label("street-s") == [0]
    from broden_builder.store.validate import validate_store
    problems = validate_store(root)
    assert [p for p in problems if p.severity == "error"] == []
    # '0' is how the original wrote a source label the frequency filter dropped: valid, read as 'no label'
    assert not any("label 0" in p.message for p in problems)
