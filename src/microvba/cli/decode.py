"""``microvba decode``: decode an ROI and/or a statistic map against Neurosynth/NeuroQuery."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .._validation import (
    InputError,
    check_option_number,
    check_output_dir,
    check_positive_int,
)
from ..io import derivatives
from ._types import path_arg, seed

if TYPE_CHECKING:
    from ..decode.writer import FigureProcess

#: largest --n-null: 100,000 translations of an 8 mm sphere take 19 s and 0.56 GB (2 shared
#: cores); 1,000,000 ran past 100 s (benchmarks/RESULTS.md, *Adversarial pass (session 7)*)
MAX_N_NULL = 100_000

HELP = ("Meta-analytic decoding of an ROI (ROI association: log-odds, chi-square/Fisher p, "
        "FDR q, spatial-null p) and/or an unthresholded map (correlation with association "
        "maps) against Neurosynth LDA-50 topics or NeuroQuery terms.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--roi", type=path_arg, default=None,
                        help="binary ROI mask in MNI space (nonzero = inside)")
    parser.add_argument("--labels", type=int, nargs="+", default=None, metavar="L",
                        help="decode the union of these labels of the --roi image (a label "
                             "atlas); also the way to decode an integer image that looks "
                             "like a percent probability map as labels")
    parser.add_argument("--roi-threshold", type=float, default=None, metavar="P",
                        help="decode the voxels of the --roi image >= P (a probability "
                             "map, e.g. 50 for an integer-percent map, 0.5 for 0-1)")
    parser.add_argument("--map", type=path_arg, default=None, dest="stat_map",
                        help="unthresholded statistic map in MNI space")
    parser.add_argument("--vocabulary", choices=["lda50", "terms"], default="lda50",
                        help="lda50: Neurosynth v0.7 topics; terms: NeuroQuery v1 terms")
    parser.add_argument("-o", "--output-dir", type=path_arg, required=True,
                        help="folder for the TSV tables and figures")
    parser.add_argument("--prefix", default=None,
                        help="output file prefix (unset: the ROI or map file name)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with neurosynth/ and neuroquery/ (unset: "
                             "$MICROVBA_DATA, else ~/.cache/microvba)")
    parser.add_argument("--cache-dir", default=None,
                        help="feature-map cache (unset: $MICROVBA_CACHE, else "
                             "~/.cache/microvba/maps)")
    parser.add_argument("--kernel-mm", type=float, default=6.0,
                        help="MKDA sphere radius in mm (Neurosynth 6, NiMARE 10)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="feature weight selecting a study (unset: 0.05 for lda50, "
                             "0.001 for terms)")
    parser.add_argument("--n-null", type=int, default=1000,
                        help=f"spatial-null resamples for p_null (0 = none; at most "
                             f"{MAX_N_NULL:,})")
    parser.add_argument("--seed", type=seed, default=0)
    parser.add_argument("--top", type=int, default=15, help="features in the bar chart")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _show(table, title: str, n: int = 10) -> None:
    stat = table.attrs["statistic"]
    print(f"\n{title} (sorted by {stat}):")
    cols = [c for c in (derivatives.FEATURE, stat, derivatives.P, derivatives.Q,
                        derivatives.P_NULL, derivatives.SIGNIFICANT) if c in table]
    print(table[cols].head(n).to_string(index=False))


def _check_options(args: argparse.Namespace) -> None:
    """The numeric options by their command-line names, before any file is read: the
    null's size bounds its time and memory; a study-selection threshold of 0 selects every
    study (the sparse selection failed with NotImplementedError) and 1 none (an empty table
    was written with exit 0); label 0 is the background of a label image."""
    check_option_number("--n-null", args.n_null, 0, MAX_N_NULL, integer=True,
                        hint="0 = no spatial null; 1000 gives p_null down to 0.001")
    check_option_number("--kernel-mm", args.kernel_mm, 0.0, 50.0, unit="mm",
                        hint="the MKDA sphere radius: 6 as Neurosynth, 10 as NiMARE")
    if args.threshold is not None:
        check_option_number("--threshold", args.threshold, 0.0, 1.0, low_open=True,
                            high_open=True,
                            hint="the feature weight that selects a study: 0.05 for lda50, "
                                 "0.001 for terms")
    if args.labels is not None and 0 in args.labels:
        raise InputError("--labels 0 selects the background (0 = outside every region) of "
                         "the --roi image", file="--labels",
                         fix="Pass the labels of the regions to decode (nonzero values of "
                             "the image), or leave out --labels to decode every nonzero "
                             "voxel.")


def _check_not_in_data(args: argparse.Namespace) -> None:
    """``-o`` may not be the data folder or lie inside it: the decoding tables were written
    beside the databases (``$MICROVBA_DATA``), the publishers' files that ``microvba data
    fetch`` verifies, as the BIDS App refuses outputs inside a raw dataset."""
    from .. import _paths

    data = _paths.data_dir(args.data_dir).expanduser().resolve()
    out = Path(args.output_dir).expanduser().resolve()
    if out == data or data in out.parents:
        raise InputError(f"the output folder is inside the data folder {data} (the "
                         "Neurosynth/NeuroQuery databases)", file=args.output_dir,
                         fix="Write the decoding elsewhere, e.g. -o decoding/ in your "
                             "analysis folder.")


def run(args: argparse.Namespace) -> int:
    # (the decode package, with pandas and scipy, is imported before the fork: the child
    # shares it)
    from ..decode.writer import FigureProcess

    if args.roi is None and args.stat_map is None:
        raise InputError("Nothing to decode.", file="command line",
                         fix="Pass --roi MASK.nii.gz and/or --map STAT.nii.gz.")
    check_positive_int("top", args.top)  # before any output: the figures need it
    _check_options(args)
    if args.labels is not None and args.roi_threshold is not None:
        raise InputError("--labels and --roi-threshold cannot be combined.",
                         file="command line",
                         fix="Pass --labels for a label atlas, --roi-threshold for a "
                             "probability map.")
    if (args.labels is not None or args.roi_threshold is not None) and args.roi is None:
        raise InputError("--labels / --roi-threshold select voxels of the --roi image, and "
                         "no --roi was given.", file="command line",
                         fix="Add --roi IMAGE.nii.gz.")
    _check_not_in_data(args)
    check_output_dir(args.output_dir)
    if args.cache_dir is not None:
        check_output_dir(args.cache_dir, "map cache folder")
    figures = FigureProcess()  # a child imports matplotlib while this process decodes
    try:
        return _decode(args, figures)
    finally:
        figures.close()


def _decode(args: argparse.Namespace, figures: FigureProcess) -> int:
    """:func:`run` once the command line is checked; ``figures`` a
    :class:`~microvba.decode.writer.FigureProcess` that draws the tables' figures."""
    from .. import _paths
    from .._provenance import make_sidecar, write_json
    from ..decode.cache_check import repair_cache
    from ..decode.database import VOCABULARY_DATABASE
    from ..decode.decoder import Decoder
    from ..decode.grid import load_image, mni_brain_grid
    from ..decode.roi_cache import roi_grid_voxels
    from ..decode.writer import (
        dropped_summary,
        figure_tasks,
        null_summary,
        roi_summary,
        write_decoding,
        write_dropped,
    )

    # broken cache files (cut short, corrupt) are removed and rebuilt, never read
    repair_cache(_paths.cache_dir(args.cache_dir), VOCABULARY_DATABASE[args.vocabulary],
                 maps=False)  # the grid files read now; the decoder's fit checks the rest
    # fail before loading the database (seconds to minutes)
    roi_vox = None
    if args.roi is not None:  # values (stat map?), emptiness and extent, in one pass
        roi_vox = roi_grid_voxels(args.roi, mni_brain_grid(2.0, args.cache_dir),
                                  labels=args.labels, threshold=args.roi_threshold,
                                  cache_dir=args.cache_dir)
    if args.stat_map is not None:
        values = np.asarray(load_image(args.stat_map, "statistic map").dataobj, np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0 or np.ptp(values) == 0:
            raise InputError("The statistic map is constant (or has no finite value).",
                             file=args.stat_map,
                             fix="Pass an unthresholded statistic map in MNI space.")
    prefix = args.prefix or _stem(args.roi if args.roi is not None else args.stat_map)
    dec = Decoder(args.vocabulary, data_dir=args.data_dir, kernel_mm=args.kernel_mm,
                  threshold=args.threshold, n_null=args.n_null, seed=args.seed,
                  cache_dir=args.cache_dir).fit()
    out = args.output_dir
    stem = out / derivatives.decoding_stem(prefix, args.vocabulary)
    # decode every input before writing anything: a bad map leaves no partial output
    tables = [(kind, image, method(source))
              for kind, image, source, method in (
                  (derivatives.DECODING, args.roi, args.roi,
                   lambda img: dec.decode_roi(img, voxels=roi_vox)),
                  (derivatives.MAP_DECODING, args.stat_map, args.stat_map, dec.decode_map))
              if image is not None]
    dropped = dec.maps_.dropped
    if not dec.maps_.features:  # e.g. --threshold 0.9 selects no study of any feature
        raise InputError(f"no {args.vocabulary} feature has a map with these options (all "
                         f"{len(dropped)} dropped: "
                         f"{', '.join(sorted(set(dropped['reason'].astype(str))))})",
                         file="--threshold" if args.threshold is not None else "--vocabulary",
                         fix="Use the default --threshold (leave it out) or a value that "
                             "selects some studies of each feature.")
    outputs = {}
    for kind, _, table in tables:
        outputs[kind] = write_decoding(table, stem, kind, figures=False)["tsv"]
    figures.submit([task for kind, _, table in tables
                    for task in figure_tasks(table, stem, kind, top=args.top)])
    for kind, image, table in tables:
        _show(table, f"{kind}: {image}")
    params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
              if k not in ("verbose", "quiet", "debug", "config")}
    inputs = {k: v for k, v in (("roi", args.roi), ("map", args.stat_map)) if v is not None}
    dropped_tsv = write_dropped(dropped, stem)
    extra = {"DroppedFeatures": dropped_summary(dropped, dropped_tsv)}
    for kind, _, table in tables:
        if kind == derivatives.DECODING:
            extra["ROI"] = {**roi_summary(table), "labels": args.labels,
                            "threshold": args.roi_threshold}
        extra.setdefault("Null", {})[kind] = null_summary(table, kind)
    if dropped_tsv is not None:
        outputs["dropped"] = dropped_tsv
        print(f"{len(dropped)} {args.vocabulary} feature(s) have no map and are not decoded "
              f"({', '.join(f'{v} {k}' for k, v in extra['DroppedFeatures']['reasons'].items())}"
              f"); listed in {outputs['dropped']}")
    figures.wait()  # the sidecar, written last, marks a complete output
    write_json(stem.with_name(derivatives.decoding_sidecar_name(stem.name)),
               make_sidecar(params, inputs, **extra))
    print(f"\nwrote {', '.join(str(p) for p in outputs.values())}")
    return 0
