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
    """The dissection settings; choices and defaults come from dissect.config.DissectConfig."""
    from .config import UNIONS, UPSAMPLE_MODES, default

    g = p.add_argument_group("dissection settings")
    g.add_argument("--device", default=default("device"), help="auto (cuda when available), cpu, cuda or cuda:N (default auto)")
    g.add_argument("--batch-size", type=int, default=default("batch_size"), help=f"images per batch (default {default('batch_size')})")
    g.add_argument("--workers", type=int, default=default("workers"),
                   help=f"DataLoader worker processes for decoding images and labels (default {default('workers')})")
    g.add_argument("--quantile", type=float, default=default("quantile"),
                   help=f"top quantile that sets each unit's threshold (default {default('quantile')})")
    g.add_argument("--iou-threshold", type=float, default=default("iou_threshold"),
                   help=f"IoU at which a unit counts as a detector (default {default('iou_threshold')})")
    g.add_argument("--union", choices=UNIONS, default=default("union"),
                   help="which images count toward a unit's activation area: original (images carrying the label's "
                        "category), lite (only where such a label lies inside the mask), all (every image)")
    g.add_argument("--categories", action="append", metavar="CAT[,CAT...]",
                   help="categories to score (default: all of the store's)")
    g.add_argument("--top-k", type=int, default=default("top_k"),
                   help=f"top-activating images kept per unit (default {default('top_k')})")
    g.add_argument("--split", default=default("split"), help="only images of this split (train/val; default all)")
    g.add_argument("--upsample", choices=UPSAMPLE_MODES, default=default("upsample"),
                   help=f"how activation maps are upsampled to the segmentation size (default {default('upsample')})")
    g.add_argument("--checkpoint-every", type=int, default=default("checkpoint_every"), metavar="N",
                   help="save the statistics every N batches so a killed run resumes "
                        f"(0 = never; default {default('checkpoint_every')})")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--verbose", action="store_true", help="log progress details")
    g.add_argument("--no-report", action="store_true", help="do not write the HTML report (dissect report OUT writes it later)")


def _add_model(p: argparse.ArgumentParser) -> None:
    from .models import UNSAFE_HELP

    p.add_argument("--model", required=True,
                   help="a torchvision model name (resnet18, vgg16, ...), path/to/file.py:function returning an "
                        "nn.Module, or a TorchScript file")
    p.add_argument("--weights", default=None,
                   help="torchvision weight enum name (IMAGENET1K_V1, DEFAULT), 'none' (random init), or a checkpoint "
                        "path (a state_dict or {'state_dict': ...}; 'module.' prefixes are removed)")
    p.add_argument("--unsafe-unpickle", action="store_true", help=UNSAFE_HELP)


def _add_preprocessing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-size", type=_size, default=None, metavar="SIZE|HxW",
                   help="resize images to this network input size (default: the store's image size)")
    p.add_argument("--mean", type=_floats3, default=None, metavar="R,G,B",
                   help="normalisation mean of [0,1] RGB (default torchvision's ImageNet 0.485,0.456,0.406)")
    p.add_argument("--std", type=_floats3, default=None, metavar="R,G,B",
                   help="normalisation std (default torchvision's ImageNet 0.229,0.224,0.225)")


def build_parser() -> argparse.ArgumentParser:
    from .config import CACHE_DTYPES, default

    parser = argparse.ArgumentParser(prog="dissect", description="Network Dissection: score every unit of a "
                                     "PyTorch layer against a Broden store.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a network over the store and score its layers (one pass over the images)")
    run.add_argument("--store", required=True, help="Broden store folder (with index.csv)")
    _add_model(run)
    run.add_argument("--layer", action="append", required=True, help="module name (layer4, features.28, ...); repeatable")
    run.add_argument("--out", required=True, help="output folder: results go to OUT/<layer>/")
    _add_preprocessing(run)
    _add_shared(run)
    run.add_argument("--cache-dtype", choices=CACHE_DTYPES, default=default("cache_dtype"),
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

    report = sub.add_parser("report", help="write the HTML report (OUT/index.html, OUT/<layer>/report.html)")
    report.add_argument("out", help="results folder of dissect run/score (holds <layer>/result.json)")
    report.add_argument("--store", default=None, help="store for the images (default: the path recorded in each result)")
    report.add_argument("--thumb", type=int, default=112, help="height of the image thumbnails in pixels (default 112)")
    report.add_argument("--images", type=int, default=None, help="top images shown per unit (default: all kept)")
    report.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _config(args, **extra):
    from .config import DissectConfig

    return DissectConfig(
        quantile=args.quantile, iou_threshold=args.iou_threshold, union=args.union,
        categories=_categories(args.categories), top_k=args.top_k, split=args.split,
        upsample=args.upsample, batch_size=args.batch_size, workers=args.workers, device=args.device,
        checkpoint_every=args.checkpoint_every, quiet=args.quiet, **extra)


def _cmd_run(args) -> int:
    from .distributed import init_from_env
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
        for res in results.values():
            print(res.summary_line())
        print(f"results in {Path(args.out)}")
        _report(args, list(results.values()))
    return 0


def _report(args, results) -> None:
    """Write the HTML report of these LayerResults, from memory (and the index over all of OUT) unless --no-report."""
    if args.no_report:
        return
    from .report import write_reports

    try:
        index = write_reports(args.out, store=args.store, quiet=args.quiet, results=results,
                              layers=[r.path.name for r in results])
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
        _report(args, [res])
    return 0


def _cmd_layers(args) -> int:
    import torch

    from .hooks import list_layers
    from .models import load_model

    size = args.input_size
    if size is None and args.store:
        from broden_builder.store.reader import BrodenStore

        st = BrodenStore(args.store)
        if st.rows:
            size = (st.rows[0].ih, st.rows[0].iw)
    size = size or (224, 224)
    lm = load_model(args.model, args.weights, unsafe_unpickle=args.unsafe_unpickle)
    dev = torch.device(args.device)
    lm.module.to(dev)
    try:
        rows = list_layers(lm.module, size, device=dev)
    except Exception as e:
        from .errors import DissectError

        raise DissectError(f"model {args.model} fails on input size {size[0]}x{size[1]}: {type(e).__name__}: {e}") from None
    width = max((len(n) for n, _, _ in rows), default=5)
    print(f"{'layer':<{width}}  {'type':<24}  output shape (input 1x3x{size[0]}x{size[1]})")
    for name, typ, shape in rows:
        print(f"{name:<{width}}  {typ:<24}  {'x'.join(map(str, shape)) if shape else '-'}")
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

    from .errors import DissectError

    handlers = {"run": _cmd_run, "score": _cmd_score, "layers": _cmd_layers, "report": _cmd_report}
    try:
        return handlers[args.command](args)
    except (DissectError, StoreFormatError, FileNotFoundError, ValueError) as e:
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
