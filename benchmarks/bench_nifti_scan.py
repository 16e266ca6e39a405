"""Cost of the input-integrity pass (gzip CRC to the end, NaN/inf, scaled range) vs peers.

On the same ``.nii.gz`` DWI, in one process, best of ``--repeat``:

* microvba: :func:`microvba.io.nifti.scan_nifti` (one streamed pass: zlib to the end with the
  CRC-32 check, every value parsed in the on-disk dtype), with and without the per-volume
  sum/min/max that the dropped/inverted-volume check reads;
* peer "nibabel": what validation did before, reading every voxel through nibabel's
  ``dataobj`` in 128 MiB blocks (scaled to float64; no CRC check: nibabel stops at the end of
  the data);
* peer "gzip": Python's :mod:`gzip` module reading the stream to its end (the CRC check
  alone, no value looked at).

Usage: ``.venv/bin/python benchmarks/bench_nifti_scan.py [--shape 96 96 60 130]``.
"""

from __future__ import annotations

import argparse
import gzip
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from microvba.io.nifti import scan_nifti


def _best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _nibabel_blocks(path: Path) -> int:
    img = nib.load(str(path), keep_file_open=True)
    n = img.shape[3]
    vol = int(np.prod(img.shape[:3])) * 8
    step = max(1, (128 * 2**20) // vol)
    bad = 0
    for i in range(0, n, step):
        block = np.asanyarray(img.dataobj[..., i:i + step])
        bad += int(np.count_nonzero(~np.isfinite(block)))
    return bad


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=4, default=[96, 96, 60, 130])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    shape = tuple(args.shape)
    data = (rng.gamma(4.0, 200.0, shape)).astype(np.int16)  # a typical scanner export
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dwi.nii.gz"
        img = nib.Nifti1Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
        img.header.set_slope_inter(0.5, 0.0)
        nib.save(img, str(path))
        mb = data.nbytes / 2**20
        print(f"image {shape} int16, {mb:.0f} MiB raw, {path.stat().st_size / 2**20:.0f} MiB "
              "gzip")
        loaded = nib.load(str(path))
        t_ours = _best(lambda: scan_nifti(path, loaded), args.repeat)
        t_flat = _best(lambda: scan_nifti(path, loaded, per_volume=False), args.repeat)
        t_nib = _best(lambda: _nibabel_blocks(path), args.repeat)
        t_gz = _best(lambda: gzip.open(path).read(), args.repeat)
        print(f"microvba scan_nifti (CRC + values): {t_ours:6.2f} s  {mb / t_ours:6.0f} MiB/s")
        print(f"  without per-volume figures:       {t_flat:6.2f} s  {mb / t_flat:6.0f} MiB/s"
              f"  (per-volume sum/min/max cost {100 * (t_ours / t_flat - 1):+.1f}%)")
        print(f"nibabel dataobj blocks (no CRC):    {t_nib:6.2f} s  {mb / t_nib:6.0f} MiB/s")
        print(f"gzip module to EOF (CRC only):      {t_gz:6.2f} s  {mb / t_gz:6.0f} MiB/s")
        print(f"ratio nibabel / microvba: {t_nib / t_ours:.2f}x; gzip / microvba: "
              f"{t_gz / t_ours:.2f}x")


if __name__ == "__main__":
    main()
