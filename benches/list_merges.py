"""List the unifier's merges of source labels whose first names differ, on real label tables.

Uses the recipe default rule (``--unify original``, the original build's) unless told
``--unify curated``; mean sizes are equal where coverage is unknown (as ``--plan`` does).

Feeds the real ADE20K 2016 index (objects, parts, scenes with their metadata counts), the real
Pascal-Context labels.txt, the real Pascal-Part part2ind.m, the real DTD label file and the
real OpenSurfaces substance table to :func:`broden_builder.unify.unify`, and prints every
global label that joined a source label under a name other than that label's own first
name (the merges worth a human look). Pascal, DTD and OpenSurfaces have no per-label counts
here: they enter with ``--other-frequency`` images (default 10) so that ADE's counts decide
which label claims a name first, as they would in a full build where ADE is the largest source.

    .venv/bin/python benches/list_merges.py [--realdata DIR]  (default $BRODEN_REALDATA) [--min-frequency 10]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def real_source_labels(realdata: Path, other_frequency: int) -> list:
    """SourceLabel entries for the five real label tables (ADE with its index counts)."""
    from broden_builder.plan import source_labels_from_plan
    from broden_builder.sources import get_source_class
    from broden_builder.sources.dtd.source import parse_joint_labels
    from broden_builder.sources.opensurfaces.release import material_names, read_substance_colors
    from broden_builder.sources.pascal.partnames import load_part2ind
    from broden_builder.sources.pascal.source import UNLABELED_CONTEXT, parse_context_labels
    from broden_builder.unify import SourceLabel

    ade = get_source_class("ade20k")({"type": "ade20k", "version": "2016", "path": str(realdata / "ade20k_2016")})
    labels, _ = source_labels_from_plan(ade, ade.plan_statistics())
    f = other_frequency
    for code, name in sorted(parse_context_labels(realdata / "pascal_context" / "labels.txt").items()):
        if name not in UNLABELED_CONTEXT:
            labels.append(SourceLabel("pascal", "object", code, (name,), f, float(f)))
    for code, name in enumerate(load_part2ind(realdata / "pascal_part" / "part2ind.m").part_names(), 1):
        labels.append(SourceLabel("pascal", "part", code, (name,), f, float(f)))
    textures = sorted({lab for _, labs in parse_joint_labels(realdata / "dtd" / "labels_joint_anno.txt") for lab in labs})
    for code, name in enumerate(textures, 1):
        labels.append(SourceLabel("dtd", "texture", code, (name,), f, float(f)))
    for red, name in sorted(read_substance_colors(realdata / "opensurfaces" / "label-substance-colors.csv").items()):
        labels.append(SourceLabel("opensurfaces", "material", red, material_names(name), f, float(f), raw=(name,)))
    return labels


def cross_name_merges(vocab) -> list:
    """(global name, [(source, category, code, first name, all names)]) for merges across first names."""
    out = []
    for g in list(vocab.labels) + list(vocab.dropped):
        odd = [m for m in g.members if not m.synonyms or m.synonyms[0] != g.name]
        if odd:
            out.append((g.name, [(m.source, m.category, m.code, m.synonyms[0] if m.synonyms else "", m.raw)
                                 for m in g.members]))
    return sorted(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--realdata", default=os.environ.get("BRODEN_REALDATA", ""),
                   help="the folder of real source samples (default $BRODEN_REALDATA)")
    p.add_argument("--min-frequency", type=int, default=10)
    p.add_argument("--other-frequency", type=int, default=10)
    p.add_argument("--unify", default="original", choices=("original", "curated"))
    args = p.parse_args(argv)
    realdata = Path(args.realdata)
    if not (realdata / "ade20k_2016" / "index_ade20k.mat").is_file():
        print(f"real data not found under {realdata}", file=sys.stderr)
        return 2
    from broden_builder.unify import unify

    vocab = unify(real_source_labels(realdata, args.other_frequency), args.min_frequency, 0.0, rule=args.unify)
    kept = {g.name for g in vocab.labels}
    merges = cross_name_merges(vocab)
    same = vocab.same_source_merges()
    print(f"{len(same)} same-source merges (a build refuses them unless allow_same_source_merges lists the source): "
          + ", ".join(f"{s}: {sum(1 for _, (s2, _c), _m in same if s2 == s)}" for s in sorted({s for _, (s, _c), _m in same})))
    print(f"{len(merges)} global labels join source labels under another first name:")
    for name, members in merges:
        print(f"{name}{'' if name in kept else '  (dropped)'}")
        for s, c, code, first, names in members:
            mark = "  " if first == name else "=>"
            print(f"  {mark} {s}/{c}/{code}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
