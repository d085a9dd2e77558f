"""The ``dissect`` command: ``run``, ``score``, ``layers``, ``report``, ``explain``, ``describe``, ``compare``,
``ablate``.

Examples::

    dissect run --store broden1_224 --model resnet18 --weights IMAGENET1K_V1 --layer layer4 --out out/
    dissect score --store broden1_224 --activations feats.npy --out out/
    dissect layers --model resnet18 --input-size 224
    dissect report out/                                   # out/index.html + out/<layer>/report.html
    dissect explain --store broden1_224 --model resnet18 --weights IMAGENET1K_V1 --layer layer4 --out out/
    dissect describe --store broden1_224 --model resnet18 --weights IMAGENET1K_V1 --layer layer4 \\
        --clip hf:clip/ --out out/
    dissect compare out_resnet/ out_vgg/ out_rotated/ --out cmp/
    dissect ablate --model resnet18 --weights IMAGENET1K_V1 --layer layer4 --units 12,40 --data val/ --out out/
    torchrun --nproc_per_node 4 -m dissect.cli run ...   # shards images over 4 processes

Exit status: 0 on success, 1 on an error (one line ``error: ...`` naming the file, layer or value;
broden_builder.cli_errors), 2 on a usage error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence, cast

from broden_builder.shared import count


def _add_settings(p: argparse.ArgumentParser, command: str) -> None:
    """The DissectConfig fields that ``command`` offers, as options derived from their declarations
    (dissect.config.setting): ``--iou-threshold`` from ``iou_threshold``, its help, type and default."""
    import dataclasses
    import typing

    from .config import DissectConfig

    hints = typing.get_type_hints(DissectConfig)
    g = p.add_argument_group("dissection settings")
    for f in dataclasses.fields(DissectConfig):
        meta = f.metadata
        if command not in meta.get("cli", ()):
            continue
        kwargs = {"default": f.default, "help": meta["help"].replace("{default}", str(f.default))}
        kind = _plain_type(hints[f.name])
        if meta.get("action"):
            kwargs["action"] = meta["action"]
        elif kind is bool:
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = meta.get("type") or (kind if kind in (int, float) else None)
        kwargs.update({k: meta[k] for k in ("choices", "metavar") if meta.get(k) is not None})
        g.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def _plain_type(hint):
    """``Optional[int]`` -> int; any other hint as it is (a Literal's choices come from ``choices``)."""
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _add_shared(p: argparse.ArgumentParser, command: str) -> None:
    """The dissection settings of ``command`` (from dissect.config.DissectConfig) and --no-report."""
    _add_settings(p, command)
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE.yaml",
        help="read the settings from this YAML file, whose keys are dissect.DissectConfig's field names "
        "(quantile, iou_threshold, batch_size, categories, input_size, ...); options given on the "
        "command line win",
    )
    p.add_argument(
        "--no-report", action="store_true", help="do not write the HTML report (dissect report OUT writes it later)"
    )


WEIGHTS_HELP = (
    "required for torchvision and timm names: a torchvision weight name (DEFAULT, IMAGENET1K_V1; downloaded into "
    "the torch hub cache, $TORCH_HOME/hub/checkpoints, default ~/.cache/torch/hub/checkpoints, unless already "
    "there), a local checkpoint file (offline nodes: --weights /path/to/resnet18-f37072fd.pth for a torchvision "
    "name, a .safetensors or .pth for timm:NAME; a .pth/.pt/.safetensors state_dict, 'module.' prefixes removed), "
    "or 'none' for a random initialisation (seed 0; stated in the output and the report). hf:FOLDER and file.py "
    "models carry their own weights (a file.py function is called after torch.manual_seed(0), so it builds the "
    "same weights each time; it takes an optional checkpoint; 'none' records its own init as random; without "
    "--weights result.json records the weights as built by the function, with their state_dict sha256)"
)


def _device(spec: str):
    """--device as a torch.device ('auto' resolved as in a run; dissect.engine.resolve_device)."""
    from .engine import init_from_env, resolve_device

    return resolve_device(spec, init_from_env(spec))


def _add_model(p: argparse.ArgumentParser) -> None:
    from .capture import UNSAFE_HELP

    p.add_argument(
        "--model",
        required=True,
        help="a torchvision model name (resnet18, vit_b_16, ...), timm:NAME, hf:FOLDER (a Hugging Face "
        "transformers vision model saved locally), path/to/file.py:function returning an nn.Module "
        "(this imports and runs that file's code: only for code you trust), a TorchScript file, or a "
        "torch.export .pt2 program",
    )
    p.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    p.add_argument("--unsafe-unpickle", action="store_true", help=UNSAFE_HELP)


def _parser_run(sub) -> None:
    """``dissect run``."""
    run = sub.add_parser("run", help="run a network over the store and score its layers (one pass over the images)")
    run.add_argument("--store", required=True, help="Broden store folder (with index.csv)")
    _add_model(run)
    run.add_argument(
        "--layer",
        action="append",
        required=True,
        help="module name (layer4, features.28, ...), NAME#K for the K-th call of a module called more "
        "than once, NAME:KEY for one tensor of a tuple/dict output (block:1, backbone:p2); "
        "repeatable. `dissect layers` lists them",
    )
    run.add_argument("--out", required=True, help="output folder: results go to OUT/<layer>/")
    _add_shared(run, "run")
    run.add_argument(
        "--controls",
        action="store_true",
        help="also dissect the paper's two baselines into OUT/controls/: the same architecture with random "
        "weights (random/) and the trained layers in a random rotated basis (rotated/, --rotate 0), "
        "and compare the three (OUT/controls/compare.html; printed)",
    )


def _parser_score(sub) -> None:
    """``dissect score``."""
    score = sub.add_parser("score", help="score activations extracted elsewhere (N x units x h x w in index.csv order)")
    score.add_argument("--store", required=True, help="Broden store folder (with index.csv)")
    score.add_argument("--activations", required=True, help=".npy (memory-mapped) or .pt file, shape N x units x h x w")
    score.add_argument("--out", required=True, help="output folder: results go to OUT/NAME/")
    score.add_argument("--name", default=None, help="result folder name (default: the activation file's stem)")
    _add_shared(score, "score")


def _parser_layers(sub) -> None:
    """``dissect layers``."""
    from .config import size as parse_size

    layers = sub.add_parser("layers", help="list the model's module names with their output shapes")
    _add_model(layers)
    layers.add_argument("--store", default=None, help="use this store's image size for the dummy input")
    layers.add_argument(
        "--input-size",
        type=parse_size,
        default=None,
        metavar="SIZE|HxW",
        help="dummy input size (default: the store's image size, else 224)",
    )
    _add_settings(layers, "layers")


def _parser_explain(sub) -> None:
    """``dissect explain``."""
    from .config import LIMITS, bounded

    explain = sub.add_parser(
        "explain",
        help="compositional explanations: the best logical formula of concepts for "
        "every unit (Mu & Andreas 2020); writes OUT/<name>/explanations.csv",
    )
    explain.add_argument("--store", required=True, help="Broden store folder (with index.csv)")
    src = explain.add_mutually_exclusive_group(required=True)
    src.add_argument("--activations", help=".npy or .pt file, shape N x units x h x w (as for `dissect score`)")
    src.add_argument("--model", help="a model, as for `dissect run` (with --layer)")
    explain.add_argument("--weights", default=None, help=WEIGHTS_HELP)
    explain.add_argument("--unsafe-unpickle", action="store_true", help=argparse.SUPPRESS)
    explain.add_argument("--layer", default=None, help="the layer of --model to explain")
    explain.add_argument("--name", default=None, help="result folder name for --activations (default: the file's stem)")
    explain.add_argument(
        "--out",
        required=True,
        help="output folder; an existing OUT/<name>/ result is reused "
        "(its thresholds and settings), otherwise it is scored first",
    )
    explain.add_argument(
        "--length", type=bounded(1, LIMITS["length"]), default=3, help="most concepts in a formula (default 3)"
    )
    explain.add_argument(
        "--beam", type=bounded(1, LIMITS["beam"]), default=5, help="beam width of the formula search (default 5)"
    )
    _add_shared(explain, "explain")


def _parser_describe(sub) -> None:
    """``dissect describe``."""
    d = sub.add_parser(
        "describe",
        help="open-vocabulary words for every unit (CLIP-Dissect's SoftWPMI, Oikarinen & "
        "Weng 2023) with a local image-text model; writes OUT/<name>/descriptions.csv",
    )
    d.add_argument("--store", default=None, help="Broden store whose images are the probe set (index.csv order)")
    d.add_argument("--images", default=None, help="a folder of probe images instead of a store (with --model)")
    src = d.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--activations", help=".npy or .pt file, N x units x h x w (or N x units), one row per store image"
    )
    src.add_argument("--model", help="a model, as for `dissect run` (with --layer)")
    d.add_argument("--weights", default=None, help="weights of --model, as for `dissect run`")
    d.add_argument("--unsafe-unpickle", action="store_true", help=argparse.SUPPRESS)
    d.add_argument("--layer", default=None, help="the layer of --model to describe")
    d.add_argument("--name", default=None, help="result folder name for --activations (default: the file's stem)")
    d.add_argument(
        "--clip",
        required=True,
        help="image-text model: hf:FOLDER (transformers CLIP or SigLIP saved "
        "locally), open_clip:ARCH:CHECKPOINT, or path/file.py:function returning an object with "
        "encode_image and encode_text",
    )
    d.add_argument(
        "--vocabulary",
        default=None,
        help="a text file (one word per line), 'store' (the store's label "
        "names) or 'common' (default: common English words from wordfreq, CC BY-SA 4.0 word lists)",
    )
    d.add_argument("--words", type=int, default=20000, help="how many common English words (default 20000)")
    d.add_argument(
        "--out",
        required=True,
        help="output folder (OUT/<name>/descriptions.csv; embeddings are cached in OUT/.describe-cache)",
    )
    d.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    d.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    _add_settings(d, "describe")  # --input-size, --mean, --std of --model (dissect.config)


def _parser_compare(sub) -> None:
    """``dissect compare``."""
    compare = sub.add_parser(
        "compare", help="detectors and unique detectors per category of several runs: one page, one CSV, bar charts"
    )
    compare.add_argument("outs", nargs="+", metavar="OUT", help="results folders of dissect run/score")
    compare.add_argument("--out", required=True, help="folder for compare.html, compare.csv and the charts")
    compare.add_argument("--title", default="Network Dissection: comparison", help="page title")
    compare.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="OUT=LABEL",
        help="name the run of results folder OUT (as given, or its folder name) LABEL on the page "
        "and the charts, instead of the model and weights; repeatable",
    )


def _parser_ablate(sub) -> None:
    """``dissect ablate``."""
    from .config import LIMITS, bounded

    ablate = sub.add_parser(
        "ablate",
        help="switch units off and measure the classifier's per-class accuracy "
        "(Bau et al. 2020); writes OUT/<layer>/ablation_*.csv",
    )
    _add_model(ablate)
    ablate.add_argument("--layer", required=True, help="module name of the units")
    which = ablate.add_mutually_exclusive_group(required=True)
    which.add_argument("--units", help="comma-separated 1-based unit numbers, as in tally.csv (e.g. 12,40)")
    which.add_argument(
        "--concept",
        help="ablate the --k units with the highest IoU for this concept (read from OUT/<layer>/ of a dissection)",
    )
    ablate.add_argument("--k", type=bounded(1, LIMITS["k"]), default=5, help="units for --concept (default 5)")
    ablate.add_argument(
        "--data",
        required=True,
        help="labelled images: an ImageFolder folder (root/<class>/<image>), "
        "a datasets save_to_disk folder, or hf:NAME[:SPLIT]",
    )
    ablate.add_argument("--split", default=None, help="split of an HF dataset (default validation)")
    ablate.add_argument("--image-column", default="image", help="image column of an HF dataset (default image)")
    ablate.add_argument("--label-column", default="label", help="label column of an HF dataset (default label)")
    ablate.add_argument(
        "--mode",
        choices=("zero", "mean"),
        default="zero",
        help="replace the units by 0 (default, as in the paper) or by their mean over the data",
    )
    ablate.add_argument("--out", required=True, help="dissection output folder: the CSV goes to OUT/<layer>/")
    _add_settings(ablate, "ablate")
    ablate.add_argument(
        "--batch-size", type=bounded(1, LIMITS["batch_size"]), default=32, help="images per batch (default 32)"
    )
    ablate.add_argument(
        "--workers", type=bounded(0, LIMITS["workers"]), default=0, help="DataLoader worker processes (default 0)"
    )


def _parser_report(sub) -> None:
    """``dissect report``."""
    from .config import LIMITS, bounded

    report = sub.add_parser("report", help="write the HTML report (OUT/index.html, OUT/<layer>/report.html)")
    report.add_argument("out", help="results folder of dissect run/score (holds <layer>/result.json)")
    report.add_argument(
        "--store", default=None, help="store for the images (default: the path recorded in each result)"
    )
    report.add_argument(
        "--thumb",
        type=bounded(8, LIMITS["thumb"]),
        default=112,
        help="height of the image thumbnails in pixels (default 112)",
    )
    report.add_argument(
        "--images",
        type=bounded(1, LIMITS["images"]),
        default=None,
        help="top images shown per unit (default: all kept)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dissect", description="Network Dissection: score every unit of a PyTorch layer against a Broden store."
    )
    from broden_builder.shared import add_verbosity_flags, add_verbosity_to_subcommands

    from . import __version__

    parser.add_argument("--version", action="version", version=f"dissect (broden-dissect) {__version__}")
    add_verbosity_flags(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)
    from .tools import add_sae_parser as _parser_sae

    for add in (
        _parser_run,
        _parser_score,
        _parser_layers,
        _parser_explain,
        _parser_describe,
        _parser_compare,
        _parser_ablate,
        _parser_report,
        _parser_sae,
    ):
        add(sub)
    add_verbosity_to_subcommands(sub)
    return parser


def _workers(args) -> int:
    """--workers, or pass 1's automatic count (dissect.engine._resources) for the loops outside the engine."""
    from .engine import choose

    return args.workers if args.workers is not None else choose().workers


def _config(args):
    """The DissectConfig of the settings ``args`` holds (every field parsed from the command line)."""
    import dataclasses

    from .config import DissectConfig

    values = {}
    for f in dataclasses.fields(DissectConfig):
        if hasattr(args, f.name):
            collect = f.metadata.get("collect")
            values[f.name] = collect(getattr(args, f.name)) if collect else getattr(args, f.name)
    for key, value in getattr(args, "config_extra", {}).items():  # --config keys that are no option here
        if values.get(key) is None:
            values[key] = value
    cfg = DissectConfig(**values)
    _warn_null_settings_unused(cfg)
    return cfg


def _warn_null_settings_unused(cfg) -> None:
    """One warning when --alpha or --seed, which only the permutation null reads, is given without --null."""
    import dataclasses
    import logging

    if cfg.null:
        return
    defaults = {f.name: f.default for f in dataclasses.fields(cfg)}
    unused = [f"--{n} {getattr(cfg, n)}" for n in ("alpha", "seed") if getattr(cfg, n) != defaults[n]]
    if unused:
        logging.getLogger("dissect").warning(
            "%s %s no effect without --null N (only the permutation null reads %s)",
            " and ".join(unused),
            "has" if len(unused) == 1 else "have",
            "it" if len(unused) == 1 else "them",
        )


def _with_config_file(parser: argparse.ArgumentParser, args, argv):
    """``args`` again with ``--config FILE``'s settings as the subcommand's defaults (so options given
    on the command line win); keys that are no option of it go to ``args.config_extra``."""
    from .config import read_config_file

    if not getattr(args, "config", None):
        return args
    values = read_config_file(args.config)
    choices = cast(dict, parser._subparsers._group_actions[0].choices)  # the subparsers action's {name: parser}
    sub = choices[args.command]
    dests = {a.dest for a in sub._actions if a.dest != "categories"}  # an appended list: kept apart
    sub.set_defaults(**{k: v for k, v in values.items() if k in dests})
    args = parser.parse_args(argv)
    args.config_extra = {k: v for k, v in values.items() if k not in dests}
    return args


def _cmd_run(args) -> int:
    from .engine import init_from_env
    from .capture import load_model
    from .engine import dissect_model

    info = init_from_env(args.device)
    cfg = _config(args)
    model = load_model(args.model, args.weights, unsafe_unpickle=args.unsafe_unpickle)
    controls = None
    if args.controls:
        from .tools import dissect_with_controls

        controls = dissect_with_controls(model, args.layer, args.store, cfg, args.out)
        results = controls.trained
    else:
        results = dissect_model(model, args.layer, args.store, cfg, out=args.out)
    if info.rank == 0:
        print(f"model {model.spec}: {model.weights_text()}")
        for res in results.values():
            s = res.settings
            how = [f"selector {s['selector']}"] if s.get("selector") not in (None, res.layer) else []
            lay = s.get("layout") or {}
            if lay.get("kind") not in (None, "nchw"):
                how.append(
                    f"layout {lay['kind']}"
                    + (f" {lay['prefix']}+{lay['grid'][0]}x{lay['grid'][1]}" if lay.get("kind") == "tokens" else "")
                )
            print(res.summary_line() + (f" [{', '.join(how)}]" if how else ""))
        print(f"results in {Path(args.out)}")
        if controls is not None:
            print(f"controls (random init, rotated) in {Path(args.out) / 'controls'}:")
            print(controls.table)
            if controls.compare is not None:
                print(f"comparison: {controls.compare}")
        _report(args, list(results.values()))
    return 0


def _report(args, results=(), layers: Sequence[str] = ()) -> None:
    """Write the HTML report (and the index over all of OUT) unless --no-report: the pages of these
    LayerResults, from memory, and of the layer folders named in ``layers``, read from OUT."""
    if args.no_report:
        return
    from broden_builder import BrodenError

    from .errors import DissectError
    from .report import write_reports

    try:
        index = write_reports(
            args.out,
            store=args.store,
            quiet=args.quiet,
            results=list(results),
            layers=[r.path.name for r in results] + list(layers),
        )
    except (DissectError, BrodenError, OSError) as e:  # bad input: the results are written, say so and go on
        print(
            f"dissect {args.command}: warning: report not written ({type(e).__name__}: {e}); "
            f"retry with: dissect report {args.out}",
            file=sys.stderr,
        )
        return
    except Exception as e:  # a bug: the results are written, but it must not pass as a warning
        raise RuntimeError(
            f"the report failed ({type(e).__name__}: {e}) after the results were written to {args.out}"
        ) from e
    print(f"report: {index}")


def _cmd_score(args) -> int:
    from .engine import init_from_env
    from .engine import score_activations

    from broden_builder.shared import safe_component

    name = safe_component(args.name, "--name") if args.name is not None else Path(args.activations).stem
    info = init_from_env(args.device)
    res = score_activations(args.activations, args.store, _config(args), out=args.out, name=name)
    if info.rank == 0:
        print(res.summary_line().replace(f"{res.layer}:", f"{name}:", 1))
        print(f"results in {res.path or Path(args.out) / name}")
        _report(args, [res])
    return 0


def _cmd_layers(args) -> int:

    from .capture import list_layers
    from .capture import load_model

    lm = load_model(args.model, args.weights, unsafe_unpickle=args.unsafe_unpickle, require_weights=False)
    size = args.input_size
    fixed = (lm.preprocessing or {}).get("input_size")
    if size is None and fixed:
        size = tuple(fixed)
    if size is None and args.store:
        from broden_builder import BrodenStore

        st = BrodenStore(args.store)
        if st.rows:
            size = (st.rows[0].ih, st.rows[0].iw)
    size = size or (224, 224)
    dev = _device(args.device)
    lm.module.to(dev)
    try:
        rows = list_layers(lm.module, size, device=dev, layout=args.layout)
    except Exception as e:  # only the model's own forward pass runs here
        from .errors import DissectError

        raise DissectError(
            f"model {args.model} fails on input size {size[0]}x{size[1]}: {type(e).__name__}: {e} "
            f"(choose another --input-size)"
        ) from None
    table = []
    for r in rows:
        shapes = [t for t in r.tensors]
        first = shapes[0] if len(shapes) == 1 and shapes[0][0] == r.name else None
        table.append(
            (
                r.name,
                r.type,
                str(r.calls),
                r.structure if r.calls else "not called",
                "x".join(map(str, first[1])) if first else ("-" if not shapes else count(len(shapes), "tensor")),
                first[2] if first else "",
            )
        )
        if not first:
            for sel, shape, lay in shapes:
                table.append(("  " + sel, "", "", "", "x".join(map(str, shape)), lay))
    head = ("layer", "type", "calls", "output", "shape", "layout")
    widths = [max(len(head[i]), *(len(t[i]) for t in table)) if table else len(head[i]) for i in range(6)]
    print(
        f"# input 1x3x{size[0]}x{size[1]}; a module called more than once is selected as NAME#K (K-th call), "
        f"a tensor inside a tuple/dict output as NAME:KEY"
    )
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip())
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip())
    return 0


def _cmd_report(args) -> int:
    from .errors import DissectError
    from .report import write_reports
    from .engine import apply_threads, choose
    from .results import results_lock

    apply_threads(choose().threads)  # the masks are small tensors: single-threaded (dissect.engine._resources)
    from .results import find_layer_folders

    if not Path(args.out).is_dir():
        raise DissectError(f"results folder {args.out} does not exist")
    if not find_layer_folders(args.out):  # refused before the lock: a folder of no results keeps no .lock
        raise DissectError(f"{args.out}: no layer results found (no <layer>/result.json)")
    with results_lock(args.out, "dissect report"):  # not while a run or score writes there
        index = write_reports(
            args.out, store=args.store, thumb=args.thumb, images_per_unit=args.images, quiet=args.quiet
        )
    print(f"report: {index}")
    return 0


def _cmd_explain(args) -> int:
    import os

    from .results import results_lock

    if args.length < 1 or args.beam < 1:
        raise ValueError(f"--length and --beam must be >= 1, got {args.length} and {args.beam}")
    if int(os.environ.get("RANK", "0") or 0) != 0:  # torchrun: rank 0 holds the lock, as in run/score
        return _explain(args)
    with results_lock(args.out, "dissect explain"):  # scoring (if needed) and the explanations: one writer
        return _explain(args)


def _explain(args) -> int:
    from .engine import init_from_env
    from .explain.run import explain_result
    from .results import has_result, layer_folder

    info = init_from_env(args.device)
    model = None
    if args.activations:
        name = args.name or Path(args.activations).stem
    else:
        if not args.layer:
            raise ValueError("--model needs --layer (the layer to explain)")
        from .capture import load_model

        name = args.layer
        model = load_model(args.model, args.weights, unsafe_unpickle=args.unsafe_unpickle)
    sae = any(s.partition("=")[0] == name for s in args.sae or ())  # its features: result OUT/NAME.sae
    layer_dir = layer_folder(args.out, name, feature=sae)
    if not has_result(layer_dir):
        if args.activations:
            from .engine import score_activations

            score_activations(args.activations, args.store, _config(args), out=args.out, name=name)
        else:
            from .engine import dissect_model

            dissect_model(model, [args.layer], args.store, _config(args), out=args.out)
    else:
        if model is not None:  # the thresholds of another model's units would not fit this one
            from .capture import model_record
            from .results import check_same_model

            check_same_model(layer_dir, model_record(model))
        print(f"using the thresholds and settings of {layer_dir} (delete it to score again)")
    if info.rank != 0:
        return 0
    device = _device(args.device)
    ex = explain_result(
        layer_dir,
        activations=args.activations,
        model=model,
        store=args.store,
        length=args.length,
        beam=args.beam,
        batch_size=args.batch_size,
        workers=_workers(args),
        device=device,
        quiet=args.quiet,
    )
    rows = ex.rows()
    comp = sum(1 for r in rows if r["length"] > 1)
    mean = lambda k: sum(r[k] for r in rows) / max(1, len(rows))  # noqa: E731
    print(
        f"{name}: {count(len(rows), 'feature' if sae else 'unit')} explained, {comp} by a composition; "
        f"mean IoU {mean('iou'):.4f} "
        f"(best single concept {mean('single_iou'):.4f})"
    )
    print(f"explanations in {layer_dir / 'explanations.csv'}")
    _report(args, layers=[layer_dir.name])
    return 0


def _describe_inputs(args, store):
    """(probe images, [N, U] unit activations, layer folder name, settings) of ``dissect describe``."""
    from .describe import ProbeImages, activations_summary, model_summary

    if args.images and args.activations:
        raise ValueError("--images goes with --model; --activations rows are the store's images")
    if not args.images and store is None:
        raise ValueError("give --store (its images are the probe set) or --images DIR (with --model)")
    probe = ProbeImages(store=None if args.images else store, folder=args.images)
    if not args.activations and not args.layer:
        raise ValueError("--model needs --layer (the layer to describe)")
    name = (args.name or Path(args.activations).stem) if args.activations else (args.name or args.layer)
    sae, sae_settings = _describe_sae(args, name)
    if args.activations:
        summary = activations_summary(args.activations, len(probe), sae)
        return probe, summary, _described_folder(name, sae), dict(sae_settings, activations=args.activations)
    from .capture import load_model

    loaded = load_model(args.model, args.weights, unsafe_unpickle=args.unsafe_unpickle)
    _same_model_as_result(Path(args.out) / _described_folder(name, sae), loaded)
    summary, prep = model_summary(
        loaded,
        args.layer,
        probe,
        args.input_size,
        args.mean,
        args.std,
        args.batch_size,
        args.device,
        args.quiet,
        sae=sae,
    )
    return (
        probe,
        summary,
        _described_folder(name, sae),
        dict(sae_settings, model=loaded.identity, layer=args.layer, preprocessing=prep),
    )


def _same_model_as_result(layer_dir: Path, loaded) -> None:
    """Refuse a result folder dissected with another model than ``loaded`` (its labels, units and
    preprocessing are that model's); nothing to compare where it holds no result."""
    from .capture import model_record
    from .results import check_same_model, has_result

    if has_result(layer_dir):
        check_same_model(layer_dir, model_record(loaded))


def _describe_sae(args, name: str) -> tuple:
    """(SparseEncoder or None, settings record) of ``dissect describe --sae LAYER=FOLDER``; LAYER must be the
    layer described (--layer, or --name / the file's stem with --activations)."""
    if not args.sae:
        return None, {}
    from .sae import load_sae

    pairs = {}
    for item in args.sae:
        layer, sep, folder = str(item).partition("=")
        if not sep or not layer or not folder:
            raise ValueError(f"--sae must be given as LAYER=FOLDER, got {item!r}")
        pairs[layer] = folder
    if name not in pairs:
        raise ValueError(f"--sae names layer(s) {sorted(pairs)} but the layer described is {name!r}")
    layer, folder = name, pairs[name]
    sae = load_sae(folder, layer=layer)
    return sae, {"sae": dict(sae.record, features=sae.features, units=sae.units), "dissected": "feature"}


def _described_folder(name: str, sae) -> str:
    """The result folder's name: the layer's, or ``<layer>.sae`` for its SAE's features (as dissect run --sae)."""
    from .results import layer_folder

    return layer_folder("", name, feature=sae is not None).name


def _cmd_describe(args) -> int:
    from .describe import choose_vocabulary, describe_layer, load_image_text

    if args.batch_size < 1 or args.words < 1:
        raise ValueError(f"--batch-size and --words must be >= 1, got {args.batch_size} and {args.words}")
    args.device = args.device if args.device != "auto" else ("cuda" if _cuda() else "cpu")
    store = None
    if args.store:
        from broden_builder import BrodenStore

        store = BrodenStore(args.store)
    probe, summary, name, settings = _describe_inputs(args, store)
    words, vocab_text = choose_vocabulary(args.vocabulary, store, args.words)
    clip = load_image_text(args.clip, args.device)
    settings = dict(settings, vocabulary=vocab_text, probe=args.images or args.store)
    agree = describe_layer(
        args.out, name, summary, clip, probe, words, settings, batch_size=args.batch_size, quiet=args.quiet
    )
    from .results import safe_name

    what = "features" if args.sae else "units"
    print(f"{name}: {agree['units']} {what} described with {len(words)} words ({vocab_text})")
    if agree["with_label"] is not None:
        print(
            f"the Network Dissection label is among the top 5 words for {agree['label_in_top5']} of "
            f"{agree['with_label']} labelled units"
        )
    print(f"descriptions in {Path(args.out) / safe_name(name) / 'descriptions.csv'}")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _cmd_compare(args) -> int:
    from .tools import collect, expand_controls, run_names, side_by_side, write_compare

    # a folder of `run --controls` brings its random and rotated runs; --name OUT=LABEL renames a given folder
    outs, names = expand_controls(args.outs)
    labels = run_names(args.outs, _run_labels(args.name, args.outs))
    given = {str(Path(o)): label for o, label in zip(args.outs, labels) if label}
    names = [given.get(str(o), n) for o, n in zip(outs, names)]
    page = write_compare(outs, args.out, title=args.title, names=names)
    print(side_by_side(collect(outs, names)))
    print(f"comparison: {page} ({Path(args.out) / 'compare.csv'})")
    return 0


def _run_labels(pairs: Sequence[str], outs: Sequence[str]) -> dict:
    """--name OUT=LABEL pairs as {OUT: LABEL}; OUT is matched against the folders given (a path may hold '=')."""
    from broden_builder.shared import UsageError

    names = {}
    for pair in pairs:
        key = next((o for o in sorted(outs, key=len, reverse=True) if pair.startswith(f"{o}=")), None)
        if key is None:
            key = pair.partition("=")[0]
        label = pair[len(key) + 1 :]
        if "=" not in pair or not label.strip():
            raise UsageError(f"--name {pair!r}: expected OUT=LABEL (e.g. --name {outs[0]}=trained)")
        names[key] = label.strip()
    return names


def _fmt3(values) -> str:
    return ",".join(f"{float(v):g}" for v in values)


def _cmd_ablate(args) -> int:
    from .results import results_lock

    with results_lock(args.out, "dissect ablate"):  # ablations.json is read, changed and written: one writer
        return _ablate(args)


def _ablate(args) -> int:
    from .tools import ablate, open_data, result_preprocessing, top_units_for_concept
    from .results import layer_folder
    from .capture import load_model

    layer_dir = layer_folder(args.out, args.layer)
    model = load_model(args.model, args.weights, unsafe_unpickle=args.unsafe_unpickle)
    _same_model_as_result(layer_dir, model)  # its units and preprocessing are read from the result
    if args.concept:
        units = top_units_for_concept(layer_dir, args.concept, args.k)
        print(
            f"the {count(len(units), 'unit')} with the highest IoU for {args.concept!r}: {', '.join(map(str, units))}"
        )
    else:
        try:
            units = [int(u) for u in args.units.replace(" ", "").split(",") if u]
        except ValueError:
            raise ValueError(f"--units must be comma-separated unit numbers, got {args.units!r}") from None
    size, mean, std, source = result_preprocessing(layer_dir, model.preprocessing, args.input_size, args.mean, args.std)
    print(f"preprocessing: {size[0]}x{size[1]}, mean {_fmt3(mean)}, std {_fmt3(std)} from {source}")
    ds, classes = open_data(
        args.data, size, mean, std, image_column=args.image_column, label_column=args.label_column, split=args.split
    )
    res = ablate(
        model.module,
        args.layer,
        units,
        ds,
        classes,
        mode=args.mode,
        batch_size=args.batch_size,
        workers=args.workers,
        device=_device(args.device),
        quiet=args.quiet,
    )
    rows = res.rows()
    total = rows[-1]
    print(
        f"{args.layer}: units {', '.join(map(str, res.units))} set to {args.mode}: accuracy "
        f"{total['accuracy_before']:.4f} -> {total['accuracy_after']:.4f} on {count(total['images'], 'image')}"
    )
    worst = sorted(rows[:-1], key=lambda r: (r["change"], r["class_index"]))[:5]
    for r in worst:
        if r["images"]:
            print(f"  {r['class']}: {r['accuracy_before']:.3f} -> {r['accuracy_after']:.3f} ({r['change']:+.3f})")
    path = res.write(layer_dir)
    print(f"per-class changes in {path}")
    return 0


def _cmd_sae(args) -> int:
    from .tools import sae_train_command

    return sae_train_command(args)


def _out_outside_store(args):
    """``args``, once every command that takes a store and an output folder (run, score, explain,
    describe, sae train, report --store) is known not to write into the store, nor describe into its
    ``--images`` folder: an output folder that is the store (or that folder) or inside it is refused
    (dissect.results.out_outside_store) before anything is written."""
    from .results import out_outside_store

    store, out = getattr(args, "store", None), getattr(args, "out", None)
    images = getattr(args, "images", None) if args.command == "describe" else None
    if images and out and Path(images).is_dir():  # describe --images DIR: the probe images stay as they are
        out_outside_store(out, images, "--out", kind="image folder")
    if store and out:
        layers = getattr(args, "layer", None)
        names = [*(layers if isinstance(layers, list) else [layers]), getattr(args, "name", None)]
        if getattr(args, "activations", None):
            names.append(Path(args.activations).stem)
        names += ["controls"] if getattr(args, "controls", False) else []  # run --controls: OUT/controls/
        names += ["units"] if args.command == "sae" else []  # sae train from a model: OUT/units/
        what = "results folder" if args.command == "report" else "--out"
        out_outside_store(out, store, what, [str(n) for n in names if n])
    return args


def console() -> int:
    """The installed ``dissect`` command (and ``python -m dissect.cli``): :func:`main` in a process
    that ends with the command (broden_builder.process settings)."""
    return main(own_process=True)


def main(argv: Optional[Sequence[str]] = None, own_process: bool = False) -> int:
    """Run the ``dissect`` command line ``argv`` (default sys.argv[1:]); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from broden_builder.shared import run_command

    handlers = {
        "run": _cmd_run,
        "score": _cmd_score,
        "layers": _cmd_layers,
        "report": _cmd_report,
        "explain": _cmd_explain,
        "describe": _cmd_describe,
        "compare": _cmd_compare,
        "ablate": _cmd_ablate,
        "sae": _cmd_sae,
    }
    try:
        return run_command(
            lambda: handlers[args.command](_out_outside_store(_with_config_file(parser, args, argv))),
            verbose=getattr(args, "verbose", False),
            own_process=own_process,
        )
    finally:
        try:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
        except Exception:
            pass


if __name__ == "__main__":
    sys.exit(console())
