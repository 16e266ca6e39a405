r"""Per-tissue microstructure and its variation between subjects.

Every voxel mixes grey matter, white matter and CSF by its tissue fractions
:math:`f_{GM}, f_{WM}, f_{CSF}` (normalised template probabilities):

.. math::

    \nu_{ic} = w\,\nu_{ic}^{GM} + (1-w)\,\nu_{ic}^{WM},\quad
    \mathrm{ODI} = w\,\mathrm{ODI}^{GM} + (1-w)\,\mathrm{ODI}^{WM},\quad
    \nu_{iso} = f_{CSF} + (1-f_{CSF})\big(w\,\nu_{iso}^{GM} + (1-w)\,\nu_{iso}^{WM}\big),

with :math:`w = f_{GM}/(f_{GM}+f_{WM})`. Tissue values (:data:`GREY`, :data:`WHITE`):
cortical NDI about 0.4 and ODI about 0.55 (Fukutomi et al. 2018, HCP, 505 subjects), white
matter NDI about 0.6 and ODI about 0.25 (Zhang et al. 2012; Chang et al. 2015), CSF fully
isotropic. The intrinsic parallel diffusivity is one value, 1.1e-3 mm²/s (the grey-matter
optimum of Guerrero et al. 2019), in every tissue: the demo fits grey matter with that
:math:`d_\parallel`, and a white-matter value of 1.7e-3 in partial-volume voxels would bias
every fitted NODDI parameter there (the fit assumes one :math:`d_\parallel`). The b=0 signal
follows T2 weighting: CSF 1.8, grey matter 1.0, white matter 0.85.

Between subjects each parameter varies by a subject-wide offset, a smooth random field
(FWHM :attr:`Variability.field_fwhm_mm`) and independent voxel noise (shares of the variance
given by :class:`Variability`), plus a linear age effect (neurite density falls, free water
rises with age; Cox et al. 2016). The subject-wide share is small: a whole-brain offset that
happens to correlate with a permuted score makes every voxel of a permutation significant at
once, so it inflates the null of extent-based statistics (TFCE) for every region. The tensor
not captured by NODDI (see :mod:`microvba.simulate.forward`) is zero at baseline and does not
vary between subjects: any excess tensor biases the NODDI fit (it is not in the model), so it
is used only where an AD or FA effect is planted (:mod:`microvba.simulate.effects`).

References
----------
Fukutomi H. et al. (2018) Neurite imaging reveals microstructural variations in human cerebral
cortical gray matter. NeuroImage 182, 488-499.
Guerrero J.M. et al. (2019) Optimizing the intrinsic parallel diffusivity in NODDI: an
extensive empirical evaluation. PLoS One 14, e0217118.
Cox S.R. et al. (2016) Ageing and brain white matter structure in 3,513 UK Biobank
participants. Nat Commun 7, 13629.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .anatomy import tissue_fractions

PARAMETERS: tuple[str, ...] = ("icvf", "odi", "isovf", "delta_axial", "delta_radial",
                               "delta_planar")
_FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))
#: bounds keeping every parameter inside the model's domain
BOUNDS: dict[str, tuple[float, float]] = {"icvf": (0.02, 0.98), "odi": (0.04, 0.98),
                                          "isovf": (0.0, 1.0)}


@dataclass(frozen=True)
class TissueValues:
    """NODDI parameters, intrinsic diffusivity (mm²/s) and relative b=0 signal of a tissue."""

    icvf: float
    odi: float
    isovf: float
    d_par: float
    s0: float


GREY = TissueValues(icvf=0.40, odi=0.55, isovf=0.05, d_par=1.1e-3, s0=1.0)
WHITE = TissueValues(icvf=0.60, odi=0.25, isovf=0.03, d_par=1.1e-3, s0=0.85)
CSF_S0 = 1.8
D_PAR_STEP = 0.1e-3
#: baseline excess tensor (mm²/s): none, the tissue signal is exactly NODDI (an excess tensor
#: is not in the fitted model and would bias ICVF and ODI; see the module docstring)
AXIAL_MEAN = 0.0
PLANAR_MEAN = 0.0


@dataclass(frozen=True)
class Variability:
    """Between-subject standard deviations per voxel and how they are shared in space.

    ``global_share`` of each parameter's variance is one offset per subject,
    ``field_share`` a smooth random field, the rest independent voxel noise.
    """

    icvf: float = 0.03
    odi: float = 0.03
    isovf: float = 0.015
    delta_axial: float = 0.0
    delta_radial: float = 0.0
    delta_planar: float = 0.0
    global_share: float = 0.02
    field_share: float = 0.93
    field_fwhm_mm: float = 30.0
    icvf_per_year: float = -1.0e-3
    isovf_per_year: float = 0.5e-3

    def sd(self, name: str) -> float:
        return float(getattr(self, name))


def mix_tissues(gm: np.ndarray, wm: np.ndarray, csf: np.ndarray) -> dict[str, np.ndarray]:
    """Population-mean parameter maps from tissue probabilities (see module docstring)."""
    fgm, fwm, fcsf = tissue_fractions(gm, wm, csf)
    w = fgm / np.maximum(fgm + fwm, 1e-6)
    w = np.where(fgm + fwm > 1e-6, w, 1.0)
    tissue_iso = w * GREY.isovf + (1 - w) * WHITE.isovf
    d_par = GREY.d_par + (WHITE.d_par - GREY.d_par) * (1 - w)
    return {
        "icvf": (w * GREY.icvf + (1 - w) * WHITE.icvf).astype(np.float32),
        "odi": (w * GREY.odi + (1 - w) * WHITE.odi).astype(np.float32),
        "isovf": (fcsf + (1 - fcsf) * tissue_iso).astype(np.float32),
        "d_par": (np.rint(d_par / D_PAR_STEP) * D_PAR_STEP).astype(np.float32),
        "s0": (fgm * GREY.s0 + fwm * WHITE.s0 + fcsf * CSF_S0).astype(np.float32),
        "delta_axial": (AXIAL_MEAN * w).astype(np.float32),
        "delta_planar": (PLANAR_MEAN * w).astype(np.float32),
    }


def smooth_field(shape: tuple[int, int, int], voxel_size: np.ndarray, fwhm_mm: float,
                 rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Gaussian random field with unit s.d. inside ``mask`` (float32)."""
    sigma = fwhm_mm * _FWHM_TO_SIGMA / np.asarray(voxel_size, dtype=float)
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    vals = field[mask]
    return (field - vals.mean()) / max(float(vals.std()), 1e-12)


def subject_parameters(mean_maps: dict[str, np.ndarray], mask: np.ndarray,
                       voxel_size: np.ndarray, age_centred: float,
                       rng: np.random.Generator, variability: Variability = Variability()
                       ) -> dict[str, np.ndarray]:
    """One subject's parameter values inside ``mask`` (each ``(n_vox,)`` float64).

    The planted effects are added afterwards (:mod:`microvba.simulate.effects`); values are
    clipped to :data:`BOUNDS` there.
    """
    v = variability
    voxel_share = max(0.0, 1.0 - v.global_share - v.field_share)
    out = {}
    for name in PARAMETERS:
        sd = v.sd(name)
        base = mean_maps[name][mask].astype(np.float64) if name in mean_maps else 0.0
        if sd == 0.0:
            out[name] = np.broadcast_to(base, (int(mask.sum()),)).astype(np.float64)
            continue
        field = smooth_field(mask.shape, voxel_size, v.field_fwhm_mm, rng, mask)[mask]
        value = (base + sd * np.sqrt(v.global_share) * rng.standard_normal()
                 + sd * np.sqrt(v.field_share) * field
                 + sd * np.sqrt(voxel_share) * rng.standard_normal(int(mask.sum())))
        out[name] = np.broadcast_to(value, (int(mask.sum()),)).astype(np.float64)
    out["icvf"] = out["icvf"] + v.icvf_per_year * age_centred
    out["isovf"] = out["isovf"] + v.isovf_per_year * age_centred
    return out


def clip_parameters(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Clip NODDI parameters to :data:`BOUNDS` (returns new arrays)."""
    out = dict(params)
    for name, (lo, hi) in BOUNDS.items():
        out[name] = np.clip(params[name], lo, hi)
    return out
