"""The ``dissect`` command: ``dissect run``, ``dissect score``, ``dissect layers``, ``dissect report``.

Examples::

    dissect run --store broden1_224 --model resnet18 --weights IMAGENET1K_V1 --layer layer4 --out out/
    dissect score --store broden1_224 --activations feats.npy --out out/
    dissect layers --model resnet18 --input-size 224
    dissect report out/                                   # out/index.html + out/<layer>/report.html
    torchrun --nproc_per_node 4 -m dissect.cli run ...   # shards images over 4 processes

Exit status: 0 on success, 2 on bad input (the message names the file, layer or value).
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence


def _floats3(text: str) -> tuple:
    try:
        vals = tuple(float(x) for x in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}") from None
    if len(vals) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers (R,G,B), got {text!r}")
    return vals


def _size(text: str) -> tuple:
    parts = text.lower().replace("x", ",").split(",")
    try:
        vals = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE or HxW, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"expected SIZE or HxW with positive sizes, got {text!r}")
    return vals


def _categories(values: Optional[Sequence[str]]):
    if not values:
        return None
    out = []
    for v in values:
        out += [c.strip() for c in v.split(",") if c.strip()]
    return tuple(out)


def _add_shared(p: argparse.ArgumentParser) -> None:
    from broden_builder.torch_dataset import IMAGENET_MEAN, IMAGENET_STD

    from .runner import default_workers

    g = p.add_argument_group("dissection settings")
    g.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N (default auto)")
    g.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    g.add_argument("--workers", type=int, default=default_workers(),
                   help=f"DataLoader worker processes for decoding images and labels (default {default_workers()})")
    g.add_argument("--quantile", type=float, default=0.005, help="top quantile that sets each unit's threshold (default 0.005)")
    g.add_argument("--iou-threshold", type=float, default=0.04, help="IoU at which a unit counts as a detector (default 0.04)")
    g.add_argument("--union", choices=("original", "lite", "all"), default="original",
                   help="which images count toward a unit's activation area: original (images carrying the label's "
                        "category), lite (only where such a label lies inside the mask), all (every image)")
    g.add_argument("--categories", action="append", metavar="CAT[,CAT...]",
                   help="categories to score (default: all of the store's)")
    g.add_argument("--top-k", type=int, default=10, help="top-activating images kept per unit (default 10)")
    g.add_argument("--split", default=None, help="only images of this split (train/val; default all)")
    g.add_argument("--upsample", choices=("bilinear", "nearest", "bicubic"), default="bilinear",
                   help="how activation maps are upsampled to the segmentation size (default bilinear)")
    g.add_argument("--checkpoint-every", type=int, default=50, metavar="N",
                   help="save the statistics every N batches so a killed run resumes (0 = never; default 50)")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--verbose", action="store_true", help="log progress details")
    g.add_argument("--no-report", action="store_true", help="do not write the HTML report (dissect report OUT writes it later)")
    p.set_defaults(_mean=IMAGENET_MEAN, _std=IMAGENET_STD)  # noqa: the model's preprocessing may replace them


def _add_model(p: argparse.ArgumentParser) -> None:
    from .models import UNSAFE_HELP

    p.add_argument("--model", required=True,
                   help="a torchvision model name (resnet18, vit_b_16, ...), timm:NAME, hf:FOLDER (a Hugging Face "
                        "transformers vision model saved locally), path/to/file.py:function returning an nn.Module, "
                        "a TorchScript file, or a torch.export .pt2 program")
    p.add_argument("--weights", default=None,
                   help="required for torchvision and timm names: a torchvision weight name (DEFAULT, IMAGENET1K_V1), "
                        "a checkpoint path (.pth/.pt/.safetensors state_dict; 'module.' prefixes are removed), or "
                        "'none' for a random initialisation (stated in the output and the report)")
    p.add_argument("--unsafe-unpickle", action="store_true", help=UNSAFE_HELP)


def _add_layout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", choices=("nchw", "nhwc", "tokens"), default=None,
                   help="how layer outputs are read: nchw [B,C,H,W], nhwc channels-last [B,H,W,C], tokens "
                        "[B,(class/register +) h*w,C] laid out on the patch grid (default: detected per layer)")


def _add_preprocessing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-size", type=_size, default=None, metavar="SIZE|HxW",
                   help="resize images to this network input size (default: the store's image size)")
    p.add_argument("--mean", type=_floats3, default=None, metavar="R,G,B",
                   help="normalisation mean of [0,1] RGB (default: the model's preprocessing, else ImageNet's "
                        "0.485,0.456,0.406)")
    p.add_argument("--std", type=_floats3, default=None, metavar="R,G,B",
                   help="normalisation std (default: the model's preprocessing, else ImageNet's 0.229,0.224,0.225)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dissect", description="Network Dissection: score every unit of a "
                                     "PyTorch layer against a Broden store.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a network over the store and score its layers (one pass over the images)")
    run.add_argument("--store", required=True, help="Broden store folder (with index.csv)")
    _add_model(run)
    run.add_argument("--layer", action="append", required=True,
                     help="module name (layer4, features.28, ...), NAME#K for the K-th call of a module called more "
                          "than once, NAME:KEY for one tensor of a tuple/dict output (block:1, backbone:p2); "
                          "repeatable. `dissect layers` lists them")
    run.add_argument("--out", required=True, help="output folder: results go to OUT/<layer>/")
    _add_preprocessing(run)
    _add_shared(run)
    run.add_argument("--cache-dtype", choices=("float16", "float32"), default="float16",
                     help="dtype of the on-disk activation cache; every statistic uses these rounded values (default float16)")
    run.add_argument("--cache-dir", default=None,
                     help="keep the activation cache here for reuse (default: OUT/.dissect_cache, removed after success)")
    run.add_argument("--keep-cache", action="store_true", help="keep the default activation cache after success")

    score = sub.add_parser("score", help="score activations extracted elsewhere (N x units x h x w in index.csv order)")
    score.add_argument("--store", required=True, help="Broden store folder (with index.csv)")
    score.add_argument("--activations", required=True, help=".npy (memory-mapped) or .pt file, shape N x units x h x w")
    score.add_argument("--out", required=True, help="output folder: results go to OUT/NAME/")
    score.add_argument("--name", default=None, help="result folder name (default: the activation file's stem)")
    _add_shared(score)

    layers = sub.add_parser("layers", help="list the model's module names with their output shapes")
    _add_model(layers)
    layers.add_argument("--store", default=None, help="use this store's image size for the dummy input")
    layers.add_argument("--input-size", type=_size, default=None, metavar="SIZE|HxW",
                        help="dummy input size (default: the store's image size, else 224)")
    layers.add_argument("--device", default="cpu", help="device for the dummy pass (default cpu)")
    _add_layout(layers)

    report = sub.add_parser("report", help="write the HTML report (OUT/index.html, OUT/<layer>/report.html)")
    report.add_argument("out", help="results folder of dissect run/score (holds <layer>/result.json)")
    report.add_argument("--store", default=None, help="store for the images (default: the path recorded in each result)")
    report.add_argument("--thumb", type=int, default=112, help="height of the image thumbnails in pixels (default 112)")
    report.add_argument("--images", type=int, default=None, help="top images shown per unit (default: all kept)")
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _config(args, **extra):
    from .runner import DissectConfig

    return DissectConfig(
        quantile=args.quantile, iou_threshold=args.iou_threshold, union=args.union,
        categories=_categories(args.categories), top_k=args.top_k, split=args.split,
        upsample=args.upsample, batch_size=args.batch_size, workers=args.workers, device=args.device,
        checkpoint_every=args.checkpoint_every, quiet=args.quiet, **extra)


def _cmd_run(args) -> int:
    from .distributed import dist_info, init_from_env
    from .models import load_model
    from .runner import dissect_model

    info = init_from_env(args.device)
    extra = {"input_size": args.input_size, "cache_dtype": args.cache_dtype, "cache_dir": args.cache_dir,
             "keep_cache": args.keep_cache}
    if args.mean is not None:
        extra["mean"] = args.mean
    if args.std is not None:
        extra["std"] = args.std
    cfg = _config(args, **extra)
    model = load_model(args.model, args.weights, unsafe_unpickle=args.unsafe_unpickle)
    results = dissect_model(model, args.layer, args.store, cfg, out=args.out)
    if info.rank == 0:
        print(f"model {model.spec}: {model.weights_text()}")
        for res in results.values():
            s = res.settings
            how = [f"selector {s['selector']}"] if s.get("selector") not in (None, res.layer) else []
            lay = s.get("layout") or {}
            if lay.get("kind") not in (None, "nchw"):
                how.append(f"layout {lay['kind']}" + (f" {lay['prefix']}+{lay['grid'][0]}x{lay['grid'][1]}"
                                                      if lay.get("kind") == "tokens" else ""))
            print(res.summary_line() + (f" [{', '.join(how)}]" if how else ""))
        print(f"results in {Path(args.out)}")
        _report(args, [res.layer for res in results.values()])
    return 0


def _report(args, layers) -> None:
    """Write the HTML report for these layers (and the index over all of OUT) unless --no-report."""
    if args.no_report:
        return
    from .report import write_reports

    try:
        index = write_reports(args.out, store=args.store, quiet=args.quiet, layers=layers)
    except Exception as e:  # the results are written; a report problem must not hide them
        print(f"dissect {args.command}: warning: report not written ({type(e).__name__}: {e}); "
              f"retry with: dissect report {args.out}", file=sys.stderr)
        return
    print(f"report: {index}")


def _cmd_score(args) -> int:
    from .distributed import init_from_env
    from .runner import score_activations

    info = init_from_env(args.device)
    name = args.name or Path(args.activations).stem
    res = score_activations(args.activations, args.store, _config(args), out=args.out, name=name)
    if info.rank == 0:
        print(res.summary_line().replace(f"{res.layer}:", f"{name}:", 1))
        print(f"results in {Path(args.out) / name}")
        _report(args, [name, res.layer])
    return 0


def _cmd_layers(args) -> int:
    import torch

    from .hooks import list_layers
    from .models import load_model

    lm = load_model(args.model, args.weights, unsafe_unpickle=args.unsafe_unpickle, require_weights=False)
    size = args.input_size
    fixed = (lm.preprocessing or {}).get("input_size")
    if size is None and fixed:
        size = tuple(fixed)
    if size is None and args.store:
        from broden_builder.store.reader import BrodenStore

        st = BrodenStore(args.store)
        if st.rows:
            size = (st.rows[0].ih, st.rows[0].iw)
    size = size or (224, 224)
    dev = torch.device(args.device)
    lm.module.to(dev)
    try:
        rows = list_layers(lm.module, size, device=dev, layout=args.layout)
    except Exception as e:  # only the model's own forward pass runs here
        from .runner import DissectError

        raise DissectError(f"model {args.model} fails on input size {size[0]}x{size[1]}: {type(e).__name__}: {e} "
                           f"(choose another --input-size)") from None
    table = []
    for r in rows:
        shapes = [t for t in r.tensors]
        first = shapes[0] if len(shapes) == 1 and shapes[0][0] == r.name else None
        table.append((r.name, r.type, str(r.calls), r.structure if r.calls else "not called",
                      "x".join(map(str, first[1])) if first else ("-" if not shapes else f"{len(shapes)} tensors"),
                      first[2] if first else ""))
        if not first:
            for sel, shape, lay in shapes:
                table.append(("  " + sel, "", "", "", "x".join(map(str, shape)), lay))
    head = ("layer", "type", "calls", "output", "shape", "layout")
    widths = [max(len(head[i]), *(len(t[i]) for t in table)) if table else len(head[i]) for i in range(6)]
    print(f"# input 1x3x{size[0]}x{size[1]}; a module called more than once is selected as NAME#K (K-th call), "
          f"a tensor inside a tuple/dict output as NAME:KEY")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip())
    return 0


def _cmd_report(args) -> int:
    from .report import write_reports

    index = write_reports(args.out, store=args.store, thumb=args.thumb, images_per_unit=args.images, quiet=args.quiet)
    print(f"report: {index}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    from broden_builder.store.errors import StoreFormatError

    from .hooks import UnknownLayerError
    from .models import ModelLoadError
    from .runner import DissectError

    from .report import ReportInputError

    handlers = {"run": _cmd_run, "score": _cmd_score, "layers": _cmd_layers, "report": _cmd_report}
    try:
        return handlers[args.command](args)
    except (DissectError, ModelLoadError, UnknownLayerError, StoreFormatError, ReportInputError, FileNotFoundError,
            ValueError) as e:
        print(f"dissect {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(main())
