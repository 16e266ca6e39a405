r"""How detectable are the planted effects? Voxelwise statistics on the *true* maps.

For each metric, the partial correlation of every voxel's true value with the score
(controlling for the covariates) and its t statistic,

.. math:: t = r\sqrt{\frac{n - 2 - k}{1 - r^2}},

with :math:`k` covariates, inside the template's grey matter (probability >= ``gm_threshold``).
Optionally the maps are smoothed first (Gaussian, ``fwhm_mm``), as the group analysis does.
This is an upper bound for what a pipeline recovers: fitting noise and registration error
only lower it.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from ..io import derivatives
from .phenotype import COVARIATES, covariate_matrix, partial_r

METRICS: tuple[str, ...] = ("fa", "md", "rd", "ad", "icvf", "odi", "isovf")


def expected_statistics(root: str | Path, fwhm_mm: float = 0.0, gm_threshold: float = 0.3
                        ) -> pd.DataFrame:
    """Voxelwise partial-r t statistics of the true maps of a simulated cohort.

    Parameters
    ----------
    root
        A dataset written by :func:`~microvba.simulate.simulate_cohort` (with truth maps).
    fwhm_mm
        Smoothing of the true maps before the statistics (0 = none).
    gm_threshold
        Template grey-matter probability defining the analysis mask.

    Returns
    -------
    pandas.DataFrame
        One row per (metric, region): ``region`` is a planted region's code or ``outside``;
        ``planted`` tells whether the metric was planted there; ``n_voxels``, ``mean_t``,
        ``max_abs_t``, ``regional_r`` (partial r of the regional mean; NaN for ``outside``).
    """
    from ..registration.template import load_template

    root = Path(root)
    truth = json.loads((root / "code" / "ground_truth.json").read_text())
    participants = pd.read_csv(root / "participants.tsv", sep="\t")
    score = participants[truth.get("score", "resilience")].to_numpy(float)
    design = covariate_matrix(participants, tuple(truth.get("covariates", COVARIATES)))
    dof = len(score) - design.shape[1] - 1
    folder = root / "derivatives" / "truth"
    seg_img = nib.load(next(folder.glob(derivatives.PLANTED_SEG_GLOB)))
    seg = np.asarray(seg_img.dataobj)
    vox = nib.affines.voxel_sizes(seg_img.affine)
    tpl = load_template(float(vox[0]))
    gm = np.asarray(tpl.gm.dataobj) >= gm_threshold
    rows = []
    for metric in METRICS:
        data = np.asarray(nib.load(next(folder.glob(derivatives.TRUTH_MAP_GLOB.format(metric=metric)))).dataobj,
                          dtype=np.float64)
        if fwhm_mm > 0:
            sigma = fwhm_mm / np.sqrt(8 * np.log(2)) / vox
            data = np.stack([ndimage.gaussian_filter(data[..., s], sigma)
                             for s in range(data.shape[3])], axis=-1)
        valid = gm & (data.std(axis=3) > 0)
        r = np.zeros(seg.shape)
        r[valid] = partial_r(data[valid].T, score, design)
        t = r * np.sqrt(dof / np.maximum(1 - r**2, 1e-12))
        for k, eff in enumerate(truth["effects"], start=1):
            sel = valid & (seg == k)
            rows.append({"metric": metric, "region": eff["code"],
                         "planted": eff["metric"] == metric, "n_voxels": int(sel.sum()),
                         "mean_t": float(t[sel].mean()) if sel.any() else np.nan,
                         "max_abs_t": float(np.abs(t[sel]).max()) if sel.any() else np.nan,
                         "regional_r": float(partial_r(data[seg == k].mean(axis=0), score,
                                                       design))})
        out = valid & (seg == 0)
        rows.append({"metric": metric, "region": "outside", "planted": False,
                     "n_voxels": int(out.sum()), "mean_t": float(t[out].mean()),
                     "max_abs_t": float(np.abs(t[out]).max()), "regional_r": np.nan})
    return pd.DataFrame(rows)
