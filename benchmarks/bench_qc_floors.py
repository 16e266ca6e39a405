"""Registration QC of correct vs header-rotated subjects (the absolute floors' evidence).

Simulates 3 brains (``multishell``), rotates the headers of sub-02 (90 degrees about x) and
sub-03 (about z), runs the participant stage and prints each subject's QC against
:data:`microvba.registration.qc.ABSOLUTE_FLOORS`.

Usage: ``.venv/bin/python benchmarks/bench_qc_floors.py OUT_DIR [--resolution 4]``
(needs ``$MICROVBA_DATA`` with the Brainnetome atlas; minutes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from microvba.cli import main as cli
from microvba.registration.qc import below_floors
from microvba.simulate import simulate_dataset


def rotate_header(path: Path, axis: int) -> None:
    img = nib.load(str(path))
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    rot = np.eye(4)
    rot[i, i] = rot[j, j] = 0.0
    rot[i, j], rot[j, i] = -1.0, 1.0
    affine = rot @ img.affine
    out = nib.Nifti1Image(np.asarray(img.dataobj), affine, img.header)
    out.set_qform(affine, 1)
    out.set_sform(affine, 1)
    tmp = path.with_name("rotated_" + path.name)
    nib.save(out, str(tmp))
    tmp.replace(path)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--resolution", type=float, default=4.0)
    args = ap.parse_args()
    bids = simulate_dataset(args.out / "bids", n_subjects=3, scheme="multishell", seed=1,
                            resolution=args.resolution)
    rotate_header(bids / "sub-02" / "dwi" / "sub-02_dwi.nii.gz", 0)
    rotate_header(bids / "sub-03" / "dwi" / "sub-03_dwi.nii.gz", 2)
    t0 = time.perf_counter()
    code = cli([str(bids), str(args.out / "out"), "participant", "--n-jobs", "1", "--tissue",
                "gm", "--resolution", str(args.resolution), "-q"])
    print(f"participant exit code {code} in {time.perf_counter() - t0:.0f} s")
    for q in sorted((args.out / "out").rglob("*registration_qc.json")):
        d = json.loads(q.read_text())
        qc = {k: round(d[k], 3) for k in ("correlation", "dice_gm", "dice_brain")}
        print(q.name.split("_")[0], qc, "below floors:", below_floors(qc) or "none")


if __name__ == "__main__":
    main()
