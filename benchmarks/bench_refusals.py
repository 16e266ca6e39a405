"""How fast, and in how little memory, hostile inputs are refused (issue 14).

Each case runs ``microvba`` in a fresh child process and reports its exit code, wall time
and peak RSS (``VmHWM`` of the child). The bound is 5 s and 500 MB per refusal; the import of the
package itself (numpy, nibabel, pandas) is included, so the figures are upper bounds.

Usage::

    PYTHONPATH=src python benchmarks/bench_refusals.py [--out /tmp/refusals]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def child(argv: list[str]) -> tuple[int, float, float]:
    code = textwrap.dedent(f"""
        import sys, time
        t = time.perf_counter()
        from microvba.cli import main
        rc = main({argv!r})
        dt = time.perf_counter() - t
        # VmHWM: this process image's peak RSS (ru_maxrss would include the parent's
        # peak, inherited through fork + exec)
        hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
        rss = int(hwm[0].split()[1]) / 1024
        print(f"RESULT {{rc}} {{dt}} {{rss}}", file=sys.stderr)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "MICROVBA_PROGRESS": "0"})
    last = [ln for ln in res.stderr.splitlines() if ln.startswith("RESULT")][-1].split()
    return int(last[1]), float(last[2]), float(last[3])


def setup(root: Path) -> dict[str, list[str]]:
    rng = np.random.default_rng(0)
    n, shape = 30, (20, 20, 20)
    nib.save(nib.Nifti1Image(rng.normal(size=shape + (n,)).astype(np.float32), AFFINE),
             root / "all.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), AFFINE), root / "mask.nii.gz")
    (root / "design.tsv").write_text("participant_id\tscore\n" + "".join(
        f"sub-{i:02d}\t{rng.normal():.3f}\n" for i in range(n)))
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2000, 2000, 2000, 8))
    hdr.set_data_dtype(np.int16)
    with open(root / "bomb.nii", "wb") as fh:
        fh.write(hdr.binaryblock + b"\0" * 4)
        fh.truncate(352 + 2000**3 * 8 * 2)  # sparse: 128 GB apparent size
    bids = root / "bids"
    (bids / "sub-01").mkdir(parents=True, exist_ok=True)
    zero = bids / "participants.tsv"
    if not zero.exists():
        zero.symlink_to("/dev/zero")
    fifo = root / "fifo.tsv"
    if not fifo.exists():
        os.mkfifo(fifo)
    rand = ["randomise", "-i", str(root / "all.nii.gz"), "-m", str(root / "mask.nii.gz"),
            "--contrast", "score", "-o", str(root / "out" / "x"), "-q"]
    return {
        "randomise -n 1e9 (30 subjects, 59.6 GiB of nulls)":
            rand + ["-d", str(root / "design.tsv"), "-n", "1000000000"],
        "fit on a sparse .nii claiming 2000^3 x 8 voxels":
            ["fit", str(root / "bomb.nii"), "--bval", str(root / "design.tsv"), "--bvec",
             str(root / "design.tsv"), "-o", str(root / "out"), "-q"],
        "randomise -i sparse 2000^3 x 8 .nii":
            rand[:2] + [str(root / "bomb.nii")] + rand[3:] + ["-d", str(root / "design.tsv")],
        "participant, participants.tsv -> /dev/zero":
            [str(bids), str(root / "deriv"), "participant", "-q"],
        "randomise -d FIFO": rand + ["-d", str(fifo)],
        "group --n-jobs 99999999999999999999":
            [str(bids), str(root / "deriv"), "group", "--score", "s", "--n-jobs",
             "99999999999999999999", "-q"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    root = a.out or Path(tempfile.mkdtemp(prefix="refusals-"))
    root.mkdir(parents=True, exist_ok=True)
    cases = setup(root)
    print(f"load average: {open('/proc/loadavg').read().split()[:3]}")
    print(f"{'case':55s} {'exit':>4s} {'seconds':>8s} {'peak RSS MB':>12s}")
    for name, argv in cases.items():
        rc, dt, rss = child(argv)
        print(f"{name:55s} {rc:4d} {dt:8.2f} {rss:12.0f}")


if __name__ == "__main__":
    main()
