"""A T1-like contrast and tissue probabilities built from DWI-derived maps.

Without a T1w image, a subject is registered to the MNI T1 template through a synthetic image
that resembles it. Tissue probabilities are estimated voxel-wise from the diffusion maps:

.. math::

    p_{CSF} &= \\mathrm{ISOVF} \\quad\\text{(or } \\mathrm{clip}((MD - MD_{GM}) /
               (MD_{CSF} - MD_{GM}), 0, 1)\\text{ without NODDI)},\\\\
    p_{WM}  &= (1 - p_{CSF})\\,\\mathrm{clip}((FA - 0.2) / 0.3, 0, 1),\\\\
    p_{GM}  &= 1 - p_{CSF} - p_{WM},

and the synthetic T1 is :math:`\\sum_t \\bar I_t\\, p_t` inside the brain mask, with
:math:`\\bar I_t` the template's mean T1 intensity in tissue :math:`t` (GM ~ 0.65, WM ~ 0.84,
CSF ~ 0.31 on nilearn's [0, 1] scale). FA is low in gray matter (~0.1-0.2) and high in white
matter; CSF is free water (ISOVF -> 1, MD ~ 3e-3 mm^2/s at body temperature).

References
----------
Zhang H. et al. (2012) NODDI. NeuroImage 61, 1000-1016 (ISOVF as CSF fraction).
Pierpaoli C. et al. (1996) Diffusion tensor MR imaging of the human brain. Radiology 201,
637-648 (GM/WM/CSF diffusivities and anisotropy).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .._validation import InputError
from .template import Template

MD_GM = 0.8e-3  # mm^2/s
MD_CSF = 3.0e-3  # mm^2/s
FA_GM, FA_WM = 0.2, 0.5


def _md_in_mm2_s(md: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """MD in mm^2/s; maps stored in um^2/ms (values ~1) are rescaled."""
    vals = md[mask & np.isfinite(md)]
    if vals.size and np.median(vals) > 0.05:
        return md * 1e-3
    return md


def brain_mask_from_maps(maps: Mapping[str, np.ndarray]) -> np.ndarray:
    """The ``mask`` map when given, else voxels where FA or MD is finite and positive."""
    if "mask" in maps:
        return np.asarray(maps["mask"]) > 0
    for key in ("md", "fa", "b0", "isovf", "icvf"):
        if key in maps:
            arr = np.asarray(maps[key], dtype=np.float64)
            return np.isfinite(arr) & (arr > 0)
    raise InputError("no map to derive a brain mask from", file="moving",
                     fix="Pass at least one of mask, md, fa, b0, isovf, icvf.")


def _rank(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Empirical CDF of ``x`` over the mask (0 = lowest, 1 = highest), 0 outside."""
    out = np.zeros(x.shape, dtype=np.float64)
    vals = x[mask]
    if vals.size > 1:
        ranks = np.empty(vals.size)
        ranks[np.argsort(vals, kind="stable")] = np.arange(vals.size) / (vals.size - 1)
        out[mask] = ranks
    return out


def _ramp(x: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.clip((x - centre) / width + 0.5, 0.0, 1.0)


def tissue_probabilities(maps: Mapping[str, np.ndarray],
                         fractions: Mapping[str, float] | None = None
                         ) -> dict[str, np.ndarray]:
    r"""GM, WM and CSF probabilities (float32) estimated from FA and ISOVF (or MD).

    Parameters
    ----------
    maps
        Native-space arrays keyed by parameter: ``fa`` is required, and ``isovf`` or ``md``;
        ``mask`` optional.
    fractions
        Expected WM and CSF volume fractions of the brain mask (e.g. the template's,
        :func:`template_tissue_fractions`). When given, the thresholds adapt to the data:
        FA and ISOVF (MD) are replaced by their ranks :math:`F` within the mask and

        .. math:: p_{CSF} = \mathrm{ramp}(F_{ISOVF};\, 1 - f_{CSF},\, f_{CSF}), \quad
                  p_{WM} = (1 - p_{CSF})\,\mathrm{ramp}(F_{FA};\, 1 - f_{WM},\, 0.2),

        (``ramp(x; c, w) = clip((x - c) / w + 1/2, 0, 1)``), which is invariant to the scale
        and noise bias of the maps (FA in gray matter ranges from 0.1 to 0.35 with the
        b-values and SNR). Without, the fixed physical thresholds of the module docstring.
    """
    if "fa" not in maps or not ({"isovf", "md"} & set(maps)):
        raise InputError(
            f"a synthetic contrast needs 'fa' and 'isovf' or 'md'; got {sorted(maps)}",
            file="moving", fix="Pass the FA map and the ISOVF (NODDI) or MD (DTI) map.")
    mask = brain_mask_from_maps(maps)
    fa = np.nan_to_num(np.asarray(maps["fa"], dtype=np.float64))
    if "isovf" in maps:
        free = np.clip(np.nan_to_num(np.asarray(maps["isovf"], dtype=np.float64)), 0, 1)
    else:
        free = _md_in_mm2_s(np.nan_to_num(np.asarray(maps["md"], dtype=np.float64)), mask)
    if fractions is None:
        p_csf = free if "isovf" in maps else np.clip((free - MD_GM) / (MD_CSF - MD_GM), 0, 1)
        p_wm = (1 - p_csf) * np.clip((fa - FA_GM) / (FA_WM - FA_GM), 0, 1)
    else:
        f_csf, f_wm = float(fractions["csf"]), float(fractions["wm"])
        p_csf = _ramp(_rank(free, mask), 1 - f_csf, f_csf)
        p_wm = (1 - p_csf) * _ramp(_rank(fa, mask), 1 - f_wm, 0.2)
    p_gm = np.clip(1 - p_csf - p_wm, 0, 1)
    return {k: np.where(mask, v, 0).astype(np.float32)
            for k, v in (("gm", p_gm), ("wm", p_wm), ("csf", p_csf))}


def template_tissue_fractions(template: Template) -> dict[str, float]:
    """Mean tissue probability over the template brain mask (soft volume fractions)."""
    brain = np.asarray(template.brain_mask.dataobj) > 0
    return {t: float(np.asarray(getattr(template, t).dataobj)[brain].mean())
            for t in ("gm", "wm", "csf")}


def template_tissue_intensities(template: Template) -> dict[str, float]:
    """Mean template T1 intensity where each tissue probability is >= 0.5."""
    t1 = np.asarray(template.t1.dataobj)
    out = {}
    for tissue in ("gm", "wm", "csf"):
        p = np.asarray(getattr(template, tissue).dataobj)
        out[tissue] = float(t1[p >= 0.5].mean())
    return out


def synthetic_t1(maps: Mapping[str, np.ndarray], template: Template) -> np.ndarray:
    """T1-like image :math:`\\sum_t \\bar I_t p_t` from DWI-derived maps (float32)."""
    probs = tissue_probabilities(maps, template_tissue_fractions(template))
    levels = template_tissue_intensities(template)
    out = sum(levels[t] * probs[t] for t in ("gm", "wm", "csf"))
    return np.asarray(out, dtype=np.float32)
