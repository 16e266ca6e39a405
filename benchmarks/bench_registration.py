"""Registration to MNI152 (2 mm): accuracy, planted-focus error, time, QC of failures.

Simulated subjects: the template's GM/WM/CSF maps pulled back through a known smooth random
deformation (max 4 mm, FWHM 20 mm) plus a random rigid motion (+-5 deg, +-5 mm), turned into
DTI/NODDI-like maps; a Gaussian focus (sigma 4 mm) is planted in the ODI map at a known MNI
coordinate (left SPL, -30 -60 50). For each subject, in one process and on the same data:

* microvba: synthetic T1-like contrast from FA/ISOVF -> template T1, ANTs SyN (default route);
* peer/baselines: no registration ("before"), ANTs affine only on the same contrast, and ANTs
  SyN on the raw FA map (the naive route without a synthetic contrast).

It reports the GM Dice (p >= 0.5) with the template, the focus error and the time, then runs
``normalise_subject`` end to end on one subject and checks that an A-P flipped subject is
flagged by ``flag_outliers`` among the others (and no correct one is).

Usage::

    .venv/bin/python benchmarks/bench_registration.py [--quick] [--subjects N] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "registration"))
from _registration_sim import simulate_subject, write_maps  # noqa: E402

from microvba.registration import (  # noqa: E402
    dice,
    flag_outliers,
    load_template,
    normalise_subject,
    register_subject,
)
from microvba.registration.ants import SubjectTransform, _keep_files, to_ants  # noqa: E402
from microvba.registration.contrast import brain_mask_from_maps  # noqa: E402
from microvba.registration.normalise import _similarity, _warp_maps  # noqa: E402

FOCUS = np.array([-30.0, -60.0, 50.0])


def focus_error(img: nib.Nifti1Image) -> float:
    data = np.asarray(img.dataobj)
    sel = data >= 0.5 * data.max()
    com = nib.affines.apply_affine(img.affine, (np.argwhere(sel) * data[sel][:, None]).sum(0)
                                   / data[sel].sum())
    return float(np.linalg.norm(com - FOCUS))


def qc_of(xfm, imgs, template) -> dict[str, float]:
    """The QC similarity normalise_subject records, for a registered subject."""
    arrays = {k: np.asarray(v.dataobj, dtype=np.float32) for k, v in imgs.items()}
    maps = {k: v for k, v in imgs.items() if k != "odi"}
    _, valid = _warp_maps(xfm, maps, brain_mask_from_maps(arrays))
    return _similarity(xfm, maps, arrays, valid, template)


def peer_fa_syn(imgs, template, seed=20251125) -> SubjectTransform:
    """ANTs SyN of the raw FA map to the template T1 (no synthetic contrast)."""
    import ants

    tmp = tempfile.TemporaryDirectory(prefix="bench-xfm-")
    reg = ants.registration(to_ants(template.t1), to_ants(imgs["fa"]), type_of_transform="SyN",
                            random_seed=seed)
    return SubjectTransform(_keep_files(reg, tmp), template.resolution, {}, tmp)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 subjects, no baselines")
    ap.add_argument("--subjects", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resolution", type=float, default=2.0)
    args = ap.parse_args()
    n = 2 if args.quick else args.subjects
    template = load_template(args.resolution)
    gm_t = np.asarray(template.gm.dataobj) >= 0.5
    rows, qc_rows = [], {}
    for s in range(n):
        imgs, warp = simulate_subject(template, np.random.default_rng(1000 + s), focus_mni=FOCUS)
        gm_subject = warp.apply(template.gm)
        row = {"subject": s, "dice_before": dice(np.asarray(gm_subject.dataobj) >= 0.5, gm_t),
               "focus_err_before_mm": focus_error(imgs["odi"])}
        routes = {"microvba": dict(type_of_transform="SyN")}
        if not args.quick:
            routes["affine"] = dict(type_of_transform="Affine")
        for name, kw in routes.items():
            t0 = time.perf_counter()
            xfm = register_subject(imgs, template=template, n_threads=args.threads, **kw)
            row[f"time_{name}_s"] = time.perf_counter() - t0
            row[f"dice_{name}"] = dice(np.asarray(xfm.apply(gm_subject).dataobj) >= 0.5, gm_t)
            row[f"focus_err_{name}_mm"] = focus_error(xfm.apply(imgs["odi"]))
            if name == "microvba":
                qc_rows[f"sim-{s}"] = qc_of(xfm, imgs, template)
        if not args.quick:
            t0 = time.perf_counter()
            xfm = peer_fa_syn(imgs, template)
            row["time_fa_syn_s"] = time.perf_counter() - t0
            row["dice_fa_syn"] = dice(np.asarray(xfm.apply(gm_subject).dataobj) >= 0.5, gm_t)
            row["focus_err_fa_syn_mm"] = focus_error(xfm.apply(imgs["odi"]))
        rows.append(row)
        print({k: round(v, 3) for k, v in row.items()}, flush=True)
    table = pd.DataFrame(rows).set_index("subject")
    print("\nmean over subjects:\n" + table.mean().round(3).to_string())

    # end to end: normalise_subject (registration + 7 maps + mask + QC + figure)
    with tempfile.TemporaryDirectory() as out:
        imgs, _ = simulate_subject(template, np.random.default_rng(2000), focus_mni=FOCUS)
        paths = write_maps(imgs, Path(out) / "native", "sub-01")
        t0 = time.perf_counter()
        res = normalise_subject(paths, out, "sub-01", resolution=args.resolution,
                                n_threads=args.threads)
        t_norm = time.perf_counter() - t0
        flipped = {k: nib.Nifti1Image(np.ascontiguousarray(np.asarray(v.dataobj)[:, ::-1]),
                                      v.affine) for k, v in imgs.items()}
        bad_paths = write_maps(flipped, Path(out) / "native", "sub-02")
        bad = normalise_subject(bad_paths, out, "sub-02", resolution=args.resolution,
                                n_threads=args.threads)
        qc_rows.update({"sub-01": res.qc, "sub-02 (A-P flipped)": bad.qc})
        qc = pd.DataFrame.from_dict(qc_rows, orient="index")
        qc["flagged"] = flag_outliers(qc)
    print(f"\nnormalise_subject end to end: {t_norm:.1f} s")
    print(qc.round(3).to_string())
    m = table.mean()
    print(f"\nSUMMARY: Dice GM before {m['dice_before']:.3f} -> after {m['dice_microvba']:.3f}; "
          f"focus error {table['focus_err_microvba_mm'].max():.2f} mm (max); "
          f"registration {m['time_microvba_s']:.1f} s/subject")
    ok = (m["dice_microvba"] >= 0.85 and table["focus_err_microvba_mm"].max() < 4
          and table["time_microvba_s"].max() < 60
          and qc.index[qc["flagged"]].tolist() == ["sub-02 (A-P flipped)"])
    print("ACCEPTANCE", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
