"""``microvba demo``: simulate the study's cohort and run the whole pipeline on it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .._defaults import N_PERM
from .._logging import get_logger
from ..io import derivatives
from ._types import parse_models, path_arg

HELP = ("Simulate a DSI cohort with the study's five findings planted, run the participant and "
        "group stages, and write an HTML report with a planted-vs-found table.")

log = get_logger(__name__)

#: permutations of the demo's group stage (coarse and --full grids): with 1,000 the
#: family-wise p of the two weakest planted effects (r = 0.68) fell between 0.013 and 0.036,
#: with 5,000 between 0.003 and 0.011 (benchmarks/RESULTS.md, "Family-wise error across
#: metrics"); at 4 mm the extra permutations cost a few minutes
DEMO_N_PERM = N_PERM  # the default of every group analysis


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=path_arg, default=Path("demo_output"),
                        help="folder for the simulated BIDS dataset and the derivatives")
    parser.add_argument("--full", action="store_true",
                        help="2 mm whole-brain cohort (slow); default is a coarse, fast grid")
    parser.add_argument("--n-subjects", type=int, default=64)
    parser.add_argument("--n-perm", type=int, default=None,
                        help="permutations (default 5000, as FSL randomise: the generalised "
                             "Pareto tail of the 14 maps' permutation maxima, which the "
                             "family-wise p-values below 1/14 of alpha come from, is fitted "
                             "to 500 of them instead of 100)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--effect-scale", type=float, default=None,
        help="strength of the planted effects in units of the study's effect sizes (Fisher z; "
             "default 3, i.e. the study's r as if measured in 9 x 64 subjects: at the study's "
             "n = 64 its r = 0.27 effects cannot survive whole-brain FWE). 1 plants the "
             "study's r exactly")
    parser.add_argument("--n-jobs", type=int, default=None, help="local worker processes")
    parser.add_argument("--data-dir", type=path_arg, default=None,
                        help="databases for decoding (default $MICROVBA_DATA)")
    parser.add_argument("--base-url", default=None,
                        help="mirror for the data files missing on first use (as 'microvba "
                             "data fetch --base-url'; unset: the publishers)")
    parser.add_argument("--no-decode", action="store_true")
    parser.add_argument("--force", action="store_true", help="recompute everything")
    parser.add_argument("--models", type=parse_models, default=["tensor", "noddi"],
                        help="models the participant stage fits, e.g. tensor,noddi,gqi,mapmri "
                             "(the cohort's DSI grid allows all; gqi and mapmri have no "
                             "planted effect, their maps are analysed and reported too)")


def run(args: argparse.Namespace) -> int:
    from ..models import registry
    from ..report import build_report
    from ..simulate import simulate_cohort
    from ..workflows.executor import make_executor
    from ..workflows.group import GroupSettings, run_group
    from ..workflows.participant import ParticipantSettings, run_participant
    from ..workflows.planted import check_planted

    scale = _effect_scale(args)  # checked before anything is written
    _check_options(args)
    from .._validation import check_output_dir

    check_output_dir(args.out, "demo output folder")  # before the data are fetched
    _ensure_data(args)  # first use: fetch the atlas (and databases), or name the command
    models = [registry.get(m).name for m in getattr(args, "models", ["tensor", "noddi"])]
    out = Path(args.out)
    bids = out / "bids"
    deriv = out / "derivatives" / "microvba"
    resolution = 2.0 if args.full else 4.0
    truth = bids / "code" / "ground_truth.json"
    if args.force or not truth.exists() or _params_changed(truth, args):
        log.info("simulating %d subjects into %s", args.n_subjects, bids)
        # subjects in parallel on every core (the cohort is identical for any n_jobs)
        simulate_cohort(bids, n_subjects=args.n_subjects, full=args.full, seed=args.seed,
                        effect_scale=scale, data_dir=args.data_dir,
                        n_jobs=-1 if args.n_jobs is None else args.n_jobs)
    else:
        log.info("reusing the simulated cohort in %s", bids)
    with make_executor(n_jobs=args.n_jobs) as executor:
        results = run_participant(
            bids, deriv, ParticipantSettings(models=tuple(models), tissue="gm",
                                             resolution=resolution, force=args.force),
            executor=executor)
        failed = [r for r in results if not r.ok]
        if failed:
            for r in failed:
                log.error("subject %s failed: %s", getattr(r.item, "prefix", r.item), r.error)
            return 1
        settings = GroupSettings(
            score="resilience", covariates=("age", "sex", "education", "severity"),
            n_perm=args.n_perm or DEMO_N_PERM, seed=args.seed,
            fwhm=6.0, resolution=resolution, decode=not args.no_decode,
            data_dir=str(args.data_dir) if args.data_dir else None,
            metrics=tuple(m for name in models for m in registry.get(name).metrics))
        run_group(bids, deriv, settings, executor=executor, report=False)
    summary = check_planted(bids, deriv) or {}
    log.info("report written to %s", build_report(deriv))
    found = summary.get(derivatives.PLANTED_FOUND_KEY, "?")
    false = summary.get(derivatives.FALSE_CLUSTERS_KEY, "?")
    print(f"demo finished: {found}/5 planted effects found, "
          f"{false} cluster(s) outside the planted regions; "
          f"report: {derivatives.group_dir(deriv) / derivatives.REPORT_HTML}")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Every option checked by the settings objects before anything is simulated."""
    from .._validation import check_option_number
    from ..workflows.executor import ExecutionSettings
    from ..workflows.group import GroupSettings

    check_option_number("--n-subjects", args.n_subjects, 8, 10000, integer=True,
                        hint="a cohort needs 8 subjects to plant correlations with 4 covariates")
    args.n_jobs = ExecutionSettings(n_jobs=args.n_jobs).n_jobs
    GroupSettings(score="resilience", n_perm=DEMO_N_PERM if args.n_perm is None else args.n_perm,
                  seed=args.seed)
    from ..simulate.budget import check_resources  # the cohort's memory and disk

    check_resources(argparse.Namespace(
        cohort=True, full=args.full, box=False, resolution=None, scheme=None,
        n_subjects=args.n_subjects, out=args.out,
        n_jobs=-1 if args.n_jobs is None else args.n_jobs))


def _ensure_data(args: argparse.Namespace) -> None:
    """Fetch the data files the demo needs that are missing (Brainnetome; the decoding
    databases unless ``--no-decode``); without a network, InputError naming
    ``microvba data fetch``."""
    from ..decode.fetch import ensure_data

    needed = ["brainnetome"] + ([] if args.no_decode else ["neurosynth", "neuroquery"])
    fetched = ensure_data(needed, args.data_dir, base_url=args.base_url)
    if fetched:
        log.info("fetched %d data file(s) on first use", len(fetched))


def _effect_scale(args: argparse.Namespace) -> float:
    from ..simulate.effects import DEMO_EFFECT_SCALE, MAX_PLANTED_R, max_effect_scale

    scale = DEMO_EFFECT_SCALE if args.effect_scale is None else float(args.effect_scale)
    top = max_effect_scale()
    if not 0.1 <= scale <= top:
        from .._validation import InputError

        raise InputError(f"--effect-scale must be between 0.1 and {top:.2f} (planted |r| at "
                         f"most {MAX_PLANTED_R}), got {scale:g}", file="command line",
                         fix="Pass e.g. --effect-scale 1 (the study's r) or 3 (the default).")
    return scale


def _params_changed(truth: Path, args: argparse.Namespace) -> bool:
    """True when the cached cohort was simulated with other settings."""
    from dataclasses import asdict

    from ..simulate.microstructure import Variability

    try:
        doc = json.loads(truth.read_text())
    except (OSError, json.JSONDecodeError):
        return True
    recorded = doc.get("parameters", {})
    # a cohort simulated by an earlier version of the simulator is not reused
    return (doc.get("variability") != asdict(Variability())
            or recorded.get("n_subjects", args.n_subjects) != args.n_subjects
            or recorded.get("seed", args.seed) != args.seed
            or float(recorded.get("effect_scale", 1.0)) != _effect_scale(args)
            or bool(recorded.get("full", args.full)) != args.full)
