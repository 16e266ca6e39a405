r"""The study's five findings, planted as regional effects with exactly the study's r.

Each effect covers a whole Brainnetome subregion (voxel weight = the fraction of the voxel
inside the label, so edges taper) and adds, to every subject, an amount proportional to the
subject's covariate-adjusted resilience :math:`\hat R_s` (the score residualised on age, sex,
education and severity). Its amplitude is solved so that the partial correlation between the
*true* regional mean of the metric (voxels at least half inside the label) and resilience,
controlling for the covariates, equals the study's r exactly in the simulated sample.

How each metric is moved (the tensor metrics are those of the fitter's log-linear fit, so
they cannot be set directly; see :mod:`microvba.simulate.forward`):

====== =====================================================================================
metric mechanism
====== =====================================================================================
icvf   added to the neurite density :math:`\nu_{ic}` (closed form)
odi    added to ODI (closed form)
ad     axial excess diffusivity :math:`\delta_a` along the local fibre direction: AD moves,
       RD does not, MD by a third of AD (root-finding on the true regional AD)
fa     traceless excess tensor :math:`\delta_a = c,\ \delta_r = -c/2`: FA rises while MD is
       unchanged; AD and RD move in opposite directions (root-finding on the true FA)
====== =====================================================================================

Physics couples the metrics, so each planted effect comes with smaller *secondary* effects
in the same region (e.g. ICVF lowers MD; an AD effect also moves MD): the simulator measures
them on the true maps and lists them in the ground truth, so a finding in the right region
but another metric can be recognised as expected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq

from .forward import tensor_scalars
from .phenotype import exact_partial_effect, partial_r


@dataclass(frozen=True)
class PlantedEffect:
    """One regional effect of the study (Gao et al. 2025, Table 2)."""

    metric: str
    region: str
    code: str
    hemisphere: str
    label_ids: tuple[int, ...]
    r: float

    @property
    def sign(self) -> str:
        return "+" if self.r > 0 else "-"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["label_ids"] = list(self.label_ids)
        d["sign"] = self.sign
        return d


#: the five findings of the study, Brainnetome subregions (labels per the BN-246 table)
STUDY_EFFECTS: tuple[PlantedEffect, ...] = (
    PlantedEffect("ad", "caudal cingulate gyrus", "A23c", "bilateral", (185, 186), 0.48),
    PlantedEffect("ad", "dorsal caudate", "dCa", "R", (228,), 0.45),
    PlantedEffect("fa", "inferior frontal junction", "IFJ", "R", (18,), 0.33),
    PlantedEffect("icvf", "rostral superior parietal lobule", "A7r", "L", (125,), 0.27),
    PlantedEffect("odi", "dorsal middle frontal gyrus", "A9/46d", "R", (16,), -0.27),
)

#: parameter moved by each planted metric (see the module docstring)
MECHANISMS: dict[str, str] = {
    "icvf": "neurite density icvf += c * R_s * w_v",
    "odi": "orientation dispersion odi += c * R_s * w_v",
    "ad": "axial excess diffusivity delta_a += c * R_s * w_v",
    "fa": "traceless excess tensor delta_a += c * R_s * w_v, delta_r -= c/2 * R_s * w_v",
}


def standardised_residual_score(score: np.ndarray, design: np.ndarray) -> np.ndarray:
    """Score residualised on ``design`` and scaled to unit s.d. (:math:`\\hat R`)."""
    from .phenotype import residualise

    rs = residualise(np.asarray(score, dtype=float), design)
    return rs / rs.std()


def plant_parameter_effect(values: np.ndarray, weight: np.ndarray, inside: np.ndarray,
                           score: np.ndarray, design: np.ndarray, target_r: float
                           ) -> tuple[np.ndarray, float]:
    """Add an exact-r effect to a parameter that *is* the metric (icvf, odi).

    Parameters
    ----------
    values
        ``(n_subjects, n_vox)`` the parameter over the region's voxels.
    weight
        ``(n_vox,)`` effect weight (label fraction).
    inside
        ``(n_vox,)`` bool: voxels whose mean defines the regional value.

    Returns
    -------
    values, amplitude
        The new values and the effect per unit of :math:`\\hat R` at full weight.
    """
    baseline = values[:, inside].mean(axis=1)
    effect = exact_partial_effect(baseline, score, design, target_r)
    scale = float(weight[inside].mean())
    rhat = standardised_residual_score(score, design)
    amplitude = float(effect @ rhat / (rhat @ rhat)) / scale
    return values + amplitude * rhat[:, None] * weight[None, :], amplitude


def tensor_effect(mu: np.ndarray, metric: str) -> np.ndarray:
    """Unit excess tensor of a planted tensor effect, ``(n_vox, 3, 3)``."""
    mu = mu / np.linalg.norm(mu, axis=-1, keepdims=True)
    outer = mu[:, :, None] * mu[:, None, :]
    if metric == "ad":
        return outer
    if metric == "fa":
        return outer - 0.5 * (np.eye(3) - outer)
    raise ValueError(f"no tensor mechanism for {metric!r}")


def solve_tensor_effect(tensors: np.ndarray, unit: np.ndarray, weight: np.ndarray,
                        inside: np.ndarray, metric: str, score: np.ndarray,
                        design: np.ndarray, target_r: float) -> float:
    """Amplitude ``c`` such that the true regional metric has partial r = ``target_r``.

    Parameters
    ----------
    tensors
        ``(n_subjects, n_vox, 3, 3)`` true tensors without the effect.
    unit
        ``(n_vox, 3, 3)`` excess tensor per unit amplitude (:func:`tensor_effect`).
    """
    rhat = standardised_residual_score(score, design)
    w_unit = weight[inside, None, None] * unit[inside]
    base = tensors[:, inside]

    def r_of(c: float) -> float:
        t = base + c * rhat[:, None, None, None] * w_unit[None]
        return partial_r(tensor_scalars(t)[metric].mean(axis=1), score, design) - target_r

    scale = float(np.abs(tensor_scalars(base)[metric].mean(axis=1)).std()) or 1e-4
    if metric == "fa":
        scale *= 2e-3  # FA is dimensionless: convert its s.d. to a diffusivity step
    lo, hi = -scale, scale
    for _ in range(60):
        if r_of(lo) < 0 < r_of(hi):
            break
        lo, hi = 2 * lo, 2 * hi
    return float(brentq(r_of, lo, hi, xtol=1e-12, rtol=1e-10, maxiter=200))
