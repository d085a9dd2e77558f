"""``dissect sae train``: train a top-k SAE on a layer's activations (dissect.sae._train).

The samples come from ``--activations FILE`` ([N, U, h, w] or [N, U] in index.csv order), or
from a model: ``--store S --model M --layer L`` first dissects the layer's units (results in
``OUT/units/``, activation cache kept in ``OUT/units/.dissect_cache``) and then trains on that
cache, so the units' result to compare the features with comes with the SAE.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> None:
    """``dissect sae train`` on the ``dissect`` command's subparsers."""
    sae = sub.add_parser(
        "sae",
        help="sparse autoencoders on a layer: `dissect sae train` (then dissect the "
        "features with `dissect run|score ... --sae LAYER=FOLDER`)",
    )
    ssub = sae.add_subparsers(dest="sae_command", required=True)
    p = ssub.add_parser("train", help="train a top-k SAE on a layer's activations (one sample per image and position)")
    src = p.add_argument_group("samples: --activations FILE, or --store, --model and --layer")
    src.add_argument("--activations", default=None, help=".npy or .pt file, N x units x h x w (or N x units)")
    src.add_argument("--store", default=None, help="Broden store folder: the images whose activations are the samples")
    src.add_argument("--model", default=None, help="as for `dissect run --model`")
    src.add_argument("--weights", default=None, help="as for `dissect run --weights`")
    src.add_argument("--layer", default=None, help="as for `dissect run --layer` (one layer)")
    src.add_argument("--unsafe-unpickle", action="store_true", help=argparse.SUPPRESS)
    src.add_argument("--input-size", default=None, help="as for `dissect run --input-size`")
    _training_args(p.add_argument_group("training"))
    p.add_argument("--out", required=True, help="output folder: sae.safetensors + sae.json")
    from broden_builder.shared import add_verbosity_flags

    add_verbosity_flags(p)


def _training_args(t) -> None:
    """The training options of ``dissect sae train``: each value that sizes an allocation is bounded
    (dissect.config.LIMITS; the memory of the whole is checked before training, check_memory)."""
    from ..config import LIMITS, bounded
    from ..sae import TrainSettings

    d = TrainSettings()
    t.add_argument(
        "--features",
        type=bounded(1, LIMITS["features"]),
        default=None,
        help="F, features of the SAE (default 8 x units)",
    )
    t.add_argument(
        "--k",
        type=bounded(1, LIMITS["k"]),
        default=None,
        help="active features per position (default max(1, units / 8))",
    )
    t.add_argument(
        "--epochs",
        type=bounded(1, LIMITS["epochs"]),
        default=d.epochs,
        help=f"passes over the samples (default {d.epochs})",
    )
    t.add_argument(
        "--batch-size",
        type=bounded(1, LIMITS["batch_size"]),
        default=d.batch_size,
        help=f"positions per step (default {d.batch_size})",
    )
    t.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 2e-4 x sqrt(16384 / F))")
    t.add_argument(
        "--seed",
        type=bounded(0, LIMITS["seed"]),
        default=d.seed,
        help=f"initialisation and shuffling seed (default {d.seed})",
    )
    t.add_argument(
        "--checkpoint-every",
        type=bounded(0, LIMITS["checkpoint_every"]),
        default=d.checkpoint_every,
        metavar="STEPS",
        help=f"save the training state every STEPS steps (and each epoch) so a killed training resumes "
        f"(0 = never; default {d.checkpoint_every})",
    )
    t.add_argument(
        "--chunk-mb",
        type=bounded(1, LIMITS["chunk_mb"]),
        default=d.chunk_bytes >> 20,
        help=f"MiB of samples held at once (shuffled within; default {d.chunk_bytes >> 20})",
    )
    t.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda or cuda:N")
    t.add_argument(
        "--threads",
        type=bounded(1, LIMITS["threads"]),
        default=None,
        help="torch threads on a CPU (default: every usable CPU)",
    )


def _samples(args):
    """(Activations, identity for sae.json, the image of each row or None) from --activations or
    --store/--model/--layer."""
    from ..engine import open_activations
    from ..errors import DissectError

    if args.activations is not None:
        if args.model:
            raise DissectError("give --activations FILE, or --store, --model and --layer, not both")
        acts = open_activations(args.activations)
        ident = {
            "layer": args.layer,
            "model": {"kind": "activations", "file": acts.file, "content": acts.fingerprint()},
        }
        names = None
        if args.store:
            from broden_builder import BrodenStore

            store = BrodenStore(args.store)
            ident["store"] = {"path": str(Path(args.store).resolve()), "fingerprint": store.fingerprint()}
            if acts.shape[0] != len(store.rows):  # sae.json would record a store these rows are not
                raise DissectError(
                    f"{acts.origin}: activations hold {acts.shape[0]} images but {store.root / 'index.csv'} has "
                    f"{len(store.rows)} rows; activations must be in index.csv order"
                )
            names = [r.image for r in store.rows]
        return acts, ident, names
    if not (args.store and args.model and args.layer):
        raise DissectError("dissect sae train needs --activations FILE, or --store, --model and --layer")
    return _from_model(args)


def _from_model(args):
    """Dissect the layer's units with the cache kept, then read the cache (see the module doc)."""
    from ..capture import load_model
    from ..config import DissectConfig
    from ..engine import dissect_model, open_activations
    from ..results import safe_name

    units_out = Path(args.out) / "units"
    size = None if args.input_size is None else tuple(int(x) for x in args.input_size.lower().split("x"))
    cfg = DissectConfig(
        device=args.device,
        quiet=args.quiet,
        cache_dir=str(units_out / ".dissect_cache"),
        input_size=size,
        threads=args.threads,
    )
    model = load_model(args.model, args.weights, unsafe_unpickle=args.unsafe_unpickle)
    res = dissect_model(model, [args.layer], args.store, cfg, out=units_out)[args.layer]
    acts = open_activations(units_out / ".dissect_cache" / f"{safe_name(args.layer)}.rank0of1.npy")
    ident = {"layer": args.layer, "model": res.model, "store": res.store, "units_result": str(units_out)}
    return acts, ident, None


def cmd_train(args) -> int:
    """Run ``dissect sae train``; prints the summary of sae.json."""
    from ..engine import apply_threads, available_cpus, dist_info, resolve_device
    from ..sae import TrainSettings, train_sae

    settings = TrainSettings(
        features=args.features,
        k=args.k,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        chunk_bytes=args.chunk_mb << 20,
        quiet=args.quiet,
    )
    device = resolve_device(args.device, dist_info())
    acts, ident, names = _samples(args)
    apply_threads(args.threads or available_cpus())
    doc = train_sae(acts, args.out, settings, ident, device=device, row_names=names)
    print(
        f"SAE {doc['units']} -> {doc['features']} features (top-{doc['k']}), {doc['epochs']} epochs: "
        f"explained variance {doc['explained_variance']:.4f}, {doc['dead_features']} dead features, "
        f"reconstruction MSE {doc['reconstruction_mse']:.4g}"
    )
    print(f"SAE in {Path(args.out)}")
    return 0
