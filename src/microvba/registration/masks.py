"""The gray-matter analysis mask of a group.

.. math:: M = \\{v : p_{GM}^{MNI}(v) \\ge \\tau\\} \\cap \\bigcap_s V_s
          \\;\\setminus\\; \\{v : \\overline{\\mathrm{ISOVF}}(v) > \\iota\\}

* :math:`\\tau` (``gm_threshold``, default 0.3): template GM probability;
* :math:`V_s`: voxels where subject :math:`s` has valid data, i.e. its normalised brain mask
  when given, else where every one of its maps is finite and its DTI maps (FA, MD, RD, AD,
  which vanish only outside the brain or where the fit failed) are non-zero; NODDI fractions
  may legitimately be 0 (ISOVF in white matter), so with NODDI maps only, a voxel needs one
  non-zero map;
* :math:`\\iota` (``isovf_max``, optional): voxels whose ISOVF, averaged over subjects, exceeds
  it are dropped: there the signal is mostly CSF and GM metrics are dominated by partial
  volume (e.g. ``isovf_max=0.5``). Off by default.

A voxel excluded from one subject is excluded from all (no missing-data imputation), as in
FSL randomise or SPM's implicit masking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from .._validation import InputError, check_in_range
from .template import Template

SubjectMaps = Mapping[str, Any] | np.ndarray
#: diffusivities and FA are never exactly 0 inside the brain; NODDI fractions can be
DTI_PARAMS = frozenset({"fa", "md", "rd", "ad"})


def _as_array(item: Any, template: Template, what: str) -> np.ndarray:
    if isinstance(item, str | Path):
        path = Path(item)
        if not path.exists():
            raise InputError("map file not found", file=path,
                             fix="Run the participant stage (normalisation) first.")
        item = nib.load(path)
    if hasattr(item, "dataobj"):
        if item.shape[:3] != template.shape or not np.allclose(item.affine, template.affine,
                                                                atol=1e-3):
            raise InputError(f"{what} is not on the template grid {template.shape}",
                             file=getattr(item, "get_filename", lambda: what)() or what,
                             fix="Normalise the maps at the same --resolution as the template.")
        return np.asarray(item.dataobj, dtype=np.float32)
    arr = np.asarray(item)
    if arr.shape != template.shape:
        raise InputError(f"{what} has shape {arr.shape}, the template grid is {template.shape}",
                         file=what, fix="Pass arrays on the template grid.")
    return arr


def _valid(item: SubjectMaps, template: Template, index: int) -> tuple[np.ndarray, Any]:
    """(valid voxels, ISOVF array or None) of one subject."""
    if isinstance(item, Mapping):
        if "mask" in item:
            valid = _as_array(item["mask"], template, f"subject {index} mask") > 0
        else:
            valid = np.ones(template.shape, dtype=bool)
            nonzero = np.zeros(template.shape, dtype=bool)
            need_dti = bool(DTI_PARAMS & set(item))
            for key, value in item.items():
                arr = _as_array(value, template, f"subject {index} {key}")
                valid &= np.isfinite(arr)
                if key in DTI_PARAMS:
                    valid &= arr != 0
                elif not need_dti:
                    nonzero |= arr != 0
            if not need_dti:
                valid &= nonzero
        iso = item.get("isovf")
        return valid, (None if iso is None else _as_array(iso, template, f"subject {index} isovf"))
    arr = _as_array(item, template, f"subject {index}")
    valid = arr if arr.dtype == bool else (np.isfinite(arr) & (arr != 0))
    return valid, None


def group_gm_mask(template: Template, subject_map_paths: Sequence[SubjectMaps],
                  gm_threshold: float = 0.3, isovf_max: float | None = None
                  ) -> nib.Nifti1Image:
    """Gray-matter analysis mask valid in every subject (see module docstring).

    Parameters
    ----------
    template
        Template (its grid is the analysis grid).
    subject_map_paths
        One item per subject: a dict ``param -> path | image | array`` of normalised maps
        (``mask`` key used as the validity mask when present), or a 3-D array (boolean: the
        validity mask; numeric: valid where finite and non-zero).
    gm_threshold
        Minimum template GM probability.
    isovf_max
        Optional: drop voxels whose across-subject mean ISOVF is above it (needs ``isovf`` in
        the subjects' dicts).

    Returns
    -------
    nibabel.Nifti1Image (uint8, 0/1) on the template grid.
    """
    gm_threshold = check_in_range("gm_threshold", gm_threshold, 0.0, 1.0)
    if len(subject_map_paths) == 0:
        raise InputError("no subjects given for the group mask", file="subject_map_paths",
                         fix="Pass the normalised maps of at least one subject.")
    mask = np.asarray(template.gm.dataobj) >= gm_threshold
    iso_sum = np.zeros(template.shape, dtype=np.float64)
    n_iso = 0
    for i, item in enumerate(subject_map_paths):
        valid, iso = _valid(item, template, i)
        mask &= valid
        if iso is not None:
            iso_sum += np.nan_to_num(iso)
            n_iso += 1
    if isovf_max is not None:
        isovf_max = check_in_range("isovf_max", isovf_max, 0.0, 1.0)
        if n_iso == 0:
            raise InputError("isovf_max needs the subjects' ISOVF maps",
                             file="subject_map_paths",
                             fix="Pass dicts with an 'isovf' entry, or leave isovf_max unset.")
        mask &= (iso_sum / n_iso) <= isovf_max
    if not mask.any():
        raise InputError("the group gray-matter mask is empty",
                         file="subject_map_paths",
                         fix="Check the subjects' normalised masks and lower gm_threshold.")
    return template.image(mask, np.uint8)
