r"""The study's five findings, planted as regional effects with an exact r.

The r is the study's, or the study's scaled in Fisher z (:func:`scale_effects`; the demo's
default, since at n = 64 the study's weakest effects cannot survive whole-brain FWE).

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
icvf   added to the neurite density :math:`\nu_{ic}` (closed form); nothing else, so the
       NODDI fit recovers it; the tensor metrics follow by physics (secondary effects)
odi    added to ODI (closed form), likewise
ad     axial excess diffusivity :math:`\delta_a` along the local fibre direction: AD moves,
       MD by a third of it, FA a little (root-finding on the true regional AD)
fa     :math:`\delta_a = c, \delta_r = -c/2`: FA and AD rise, RD falls, MD is unchanged
       (root-finding on the true regional FA)
====== =====================================================================================

Physics couples the metrics, so each planted effect comes with smaller *secondary* effects
in the same region (MD = (AD + 2 RD)/3 must move with AD; ICVF lowers MD and raises FA): the
simulator measures them on the true maps and lists them in the ground truth, so a finding in
the right region but another metric can be recognised as expected.
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
    #: the study's r when ``r`` was scaled (:func:`scale_effects`), else None
    study_r: float | None = None

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

#: default strength of the demo's effects, in units of the study's effect size (Fisher z)
DEMO_EFFECT_SCALE = 3.0


def scale_effects(effects: tuple[PlantedEffect, ...], scale: float
                  ) -> tuple[PlantedEffect, ...]:
    r"""The effects with their r scaled in Fisher z: :math:`r' = \tanh(s\,\mathrm{artanh}\,r)`.

    In a cohort of the same size the t statistic grows as :math:`\mathrm{artanh}(r)
    \sqrt{n}`, so scale :math:`s` plants the study's r as if it had been measured with
    :math:`s^2` times the subjects. Why the demo needs it: at the study's n = 64 the
    smallest effects (r = 0.27, uncorrected p = 0.03 for the regional mean, i.e. voxel
    t < 2.2) cannot survive any whole-brain FWE correction; ``scale = 1`` plants the study's
    values exactly.
    """
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"effect scale must be positive, got {scale}")
    return tuple(PlantedEffect(e.metric, e.region, e.code, e.hemisphere, e.label_ids,
                               float(np.tanh(scale * np.arctanh(e.r))), study_r=e.study_r
                               if e.study_r is not None else e.r)
                 for e in effects)


#: largest planted |r| (stronger tensor effects cannot always be reached by the mechanisms)
MAX_PLANTED_R = 0.92


def max_effect_scale(effects: tuple[PlantedEffect, ...] = STUDY_EFFECTS) -> float:
    """Largest :func:`scale_effects` factor keeping every |r| <= :data:`MAX_PLANTED_R`."""
    return float(min((np.arctanh(MAX_PLANTED_R) / np.arctanh(abs(e.r)) for e in effects
                      if e.r != 0), default=np.inf))


#: parameter moved by each planted metric (see the module docstring)
MECHANISMS: dict[str, str] = {
    "icvf": "neurite density icvf += c * R_s * w_v",
    "odi": "orientation dispersion odi += c * R_s * w_v",
    "ad": "axial excess diffusivity delta_a += c * R_s * w_v",
    "fa": "excess tensor delta_a += c * R_s * w_v, delta_r -= c/2 * R_s * w_v (MD unchanged)",
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


def tensor_effect(mu: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Excess-tensor change per unit amplitude of a planted tensor effect.

    ``ad``: :math:`\delta_a = 1` (axial diffusivity along the fibre; MD follows by a third,
    FA rises). ``fa``: :math:`\delta_a = 1, \delta_r = -1/2`, which leaves the trace (MD)
    unchanged and moves FA to first order even about a nearly isotropic cortical tensor (a
    split of the radial eigenvalues moves FA only to second order there). Both are linear in
    :math:`\log S`, so the fitter's log-linear tensor sees them exactly.

    Returns
    -------
    axial, radial, planar
        ``(n_vox,)`` increments of :math:`\delta_a, \delta_r, \delta_p` per unit amplitude.
    """
    n = np.asarray(mu).reshape(-1, 3).shape[0]
    if metric == "ad":
        return np.ones(n), np.zeros(n), np.zeros(n)
    if metric == "fa":
        return np.ones(n), np.full(n, -0.5), np.zeros(n)
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
        ``(n_vox, 3, 3)`` excess tensor per unit amplitude.
    """
    rhat = standardised_residual_score(score, design)
    w_unit = weight[inside, None, None] * unit[inside]
    base = tensors[:, inside]

    def r_of(c: float) -> float:
        t = base + c * rhat[:, None, None, None] * w_unit[None]
        return partial_r(tensor_scalars(t)[metric].mean(axis=1), score, design) - target_r

    # bracket the root nearest to zero, on the side where r moves toward the target
    f0 = r_of(0.0)
    if f0 == 0.0:
        return 0.0
    direction = 1.0 if f0 < 0 else -1.0
    step = 1e-7
    for _ in range(60):
        if np.sign(r_of(direction * step)) != np.sign(f0):
            break
        step *= 2.0
    else:
        raise RuntimeError(f"cannot reach partial r {target_r} for {metric}")
    lo, hi = sorted((0.0, direction * step))
    return float(brentq(r_of, lo, hi, xtol=1e-13, rtol=1e-10, maxiter=200))
