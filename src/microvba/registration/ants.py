"""Registration of a subject's DWI-derived maps to the MNI template with ANTs (antspyx).

Two routes, one composite transform per subject:

* **with a T1w image**: DWI contrast (mean b0 if given, else the synthetic T1-like image of
  :mod:`.contrast`) -> T1w, rigid (or affine), Mattes mutual information; the T1w is then
  skull-stripped with the DWI brain mask carried into it (dilated 2 voxels) and registered to
  the template T1 with ANTs SyN (affine + symmetric normalisation, Mattes MI).
* **without a T1w**: the synthetic T1-like image -> template T1 with SyN directly.

The transforms are kept in antsApplyTransforms order (``[T1w->MNI warp, T1w->MNI affine,
DWI->T1w rigid]``) and :meth:`SubjectTransform.apply` resamples each map once through their
composition (linear for maps, nearest neighbour for labels), never twice.

References
----------
Avants B.B. et al. (2008) Symmetric diffeomorphic image registration with cross-correlation.
Medical Image Analysis 12, 26-41.
Mattes D. et al. (2003) PET-CT image registration in the chest using free-form deformations.
IEEE TMI 22, 120-128.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from .._logging import get_logger
from .._provenance import atomic_path, write_json
from .._validation import InputError, check_choice
from ..io import derivatives
from ..models import registry as _registry
from .contrast import brain_mask_from_maps, synthetic_t1
from .template import Template, load_template

# ITK reads its thread count once, when antspyx is first imported, and ANTs' result depends
# on it: a fixed default (1; subjects run in parallel instead) keeps registrations identical
# whatever the executor. Set ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS yourself to override it.
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

log = get_logger(__name__)

MOVING_KEYS = ("b0", "fa", "md", "rd", "ad", "isovf", "icvf", "odi", "mask")
# ... and every other metric of the model registry (qa, rtop, ...)
MOVING_KEYS += tuple(m for m in _registry.all_metrics() if m not in MOVING_KEYS)
_INTERP = {"linear": "linear", "nearest": "nearestNeighbor"}


def to_ants(img: nib.spatialimages.SpatialImage) -> Any:
    """nibabel -> ANTsImage (float32; units set to mm so ANTs does not guess)."""
    import ants

    data = np.asarray(img.dataobj, dtype=np.float32)
    clean = nib.Nifti1Image(np.nan_to_num(data), img.affine)
    clean.header.set_xyzt_units("mm", "sec")
    return ants.from_nibabel_nifti(clean)


def from_ants(image: Any) -> nib.Nifti1Image:
    """ANTsImage -> nibabel image (float32, mm units)."""
    import ants

    img = ants.to_nibabel_nifti(image)
    out = nib.Nifti1Image(np.asarray(img.dataobj, dtype=np.float32), img.affine)
    out.header.set_xyzt_units("mm")
    return out


@functools.lru_cache(maxsize=4)
def _fixed_image(resolution: float) -> Any:
    """The template T1 as an ANTsImage (the reference grid of every resampling)."""
    return to_ants(load_template(resolution).t1)


@contextlib.contextmanager
def _itk_threads(n_threads: int | None, random_seed: int | None = None) -> Iterator[None]:
    """Set ITK's thread count and ANTs' random seed for the duration of a call.

    antspyx (0.6) ignores a ``random_seed`` keyword of ``ants.registration``; the seed it
    passes to antsRegistration (``--random-seed``) is ``ants.config._random_seed``, so it is
    set here (and restored) rather than through ``ants.set_ants_deterministic``, which also
    reseeds numpy's global generator.
    """
    import ants.config

    key = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
    old = os.environ.get(key)
    old_seed = ants.config._random_seed
    if n_threads:
        os.environ[key] = str(int(n_threads))
    if random_seed is not None:
        ants.config._random_seed = int(random_seed)
    try:
        yield
    finally:
        ants.config._random_seed = old_seed
        if n_threads:
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


@dataclass
class SubjectTransform:
    """The composite native DWI -> template transform of one subject.

    Attributes
    ----------
    transforms
        ANTs transform files in antsApplyTransforms order (the last is applied first to the
        moving image): ``[warp, affine]`` or ``[warp, affine, dwi->T1w rigid]``.
    resolution
        Template grid (mm) the maps are resampled onto.
    info
        How the transform was made (route, settings, seed).
    """

    transforms: list[Path]
    resolution: float = 2.0
    info: dict[str, Any] = field(default_factory=dict)
    _tmp: Any = field(default=None, repr=False)

    @property
    def template(self) -> Template:
        return load_template(self.resolution)

    def apply(self, img: nib.spatialimages.SpatialImage, interpolation: str = "linear"
              ) -> nib.Nifti1Image:
        """Resample a native-space image (3-D, or 4-D with volumes last) onto the template.

        Parameters
        ----------
        img
            Image on the subject's DWI grid.
        interpolation
            ``"linear"`` for continuous maps, ``"nearest"`` for masks and labels.
        """
        import ants

        check_choice("interpolation", interpolation, _INTERP)
        fixed = _fixed_image(self.resolution)
        data = np.asanyarray(img.dataobj)
        vols = [data] if data.ndim == 3 else [data[..., v] for v in range(data.shape[-1])]
        out = []
        for vol in vols:
            moving = to_ants(nib.Nifti1Image(np.asarray(vol, dtype=np.float32), img.affine))
            warped = ants.apply_transforms(fixed, moving, [str(t) for t in self.transforms],
                                           interpolator=_INTERP[interpolation])
            out.append(warped.numpy().astype(np.float32))
        arr = out[0] if data.ndim == 3 else np.stack(out, axis=-1)
        result = nib.Nifti1Image(arr, self.template.affine)
        result.header.set_xyzt_units("mm")
        return result

    # -- persistence ----------------------------------------------------------------------
    @staticmethod
    def _names(prefix: str, space: str) -> dict[str, str]:
        return derivatives.xfm_names(prefix, space)

    def save(self, folder: str | Path, prefix: str) -> list[Path]:
        """Copy the transform files into ``folder`` (atomic); return the written paths.

        Names: ``{prefix}_from-dwi_to-{space}_desc-{warp,affine}_xfm.*``,
        ``{prefix}_from-dwi_to-T1w_desc-rigid_xfm.mat`` (T1w route) and a JSON index
        ``{prefix}_from-dwi_to-{space}_mode-image_xfm.json`` listing them in order.
        """
        folder = Path(folder)
        names = self._names(prefix, self.template.space)
        roles = ["warp", "affine", "rigid"][: len(self.transforms)]
        written = []
        for role, src in zip(roles, self.transforms, strict=True):
            dst = folder / names[role]
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
            written.append(dst)
        index = {"Transforms": [p.name for p in written], "Resolution": self.resolution,
                 "Space": self.template.space, "Info": self.info,
                 "Order": "antsApplyTransforms (last applied first to the moving image)"}
        written.insert(0, write_json(folder / names["json"], index))
        return written

    @classmethod
    def load(cls, folder: str | Path, prefix: str, resolution: float | None = None
             ) -> SubjectTransform:
        """Read a transform written by :meth:`save`."""
        folder = Path(folder)
        space = load_template(resolution or 2.0).space
        index_path = folder / cls._names(prefix, space)["json"]
        if not index_path.exists():
            raise InputError("no saved registration found", file=index_path,
                             fix="Run the normalisation (participant stage) first.")
        index = json.loads(index_path.read_text())
        files = [folder / n for n in index["Transforms"]]
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise InputError(f"transform files missing: {missing}", file=index_path,
                             fix="Re-run the normalisation with --force.")
        return cls(files, float(resolution or index["Resolution"]), index.get("Info", {}))


def _keep_files(reg: Mapping[str, Any], tmp: tempfile.TemporaryDirectory) -> list[Path]:
    """Move ANTs' forward transforms into a directory owned by the transform object and
    delete the inverse ones it left in the system temporary folder."""
    kept = []
    n = len(list(Path(tmp.name).iterdir()))
    for i, p in enumerate(reg["fwdtransforms"]):
        dst = Path(tmp.name) / f"{n + i}_{Path(p).name}"
        shutil.move(p, dst)
        kept.append(dst)
    for p in reg.get("invtransforms", []):
        Path(p).unlink(missing_ok=True)
    return kept


def _check_moving(moving: Mapping[str, nib.spatialimages.SpatialImage]) -> None:
    if not moving:
        raise InputError("no native maps given", file="moving",
                         fix=f"Pass a dict with some of {MOVING_KEYS}.")
    unknown = sorted(set(moving) - set(MOVING_KEYS))
    if unknown:
        raise InputError(f"unknown map keys {unknown}", file="moving",
                         fix=f"Use keys among {list(MOVING_KEYS)}.")
    ref = next(iter(moving.values()))
    for key, img in moving.items():
        if img.shape[:3] != ref.shape[:3] or not np.allclose(img.affine, ref.affine, atol=1e-3):
            raise InputError(f"map '{key}' is not on the same grid as the other maps",
                             file=key, fix="Pass maps from one DWI fit (same shape and affine).")


def register_subject(
    moving: Mapping[str, nib.spatialimages.SpatialImage],
    t1w: nib.spatialimages.SpatialImage | None = None,
    template: Template | None = None,
    resolution: float = 2.0,
    *,
    type_of_transform: str = "SyN",
    dwi_to_t1w: str = "Rigid",
    random_seed: int = 20251125,
    n_threads: int | None = None,
) -> SubjectTransform:
    """Register a subject's native DWI-derived maps to the MNI template.

    Parameters
    ----------
    moving
        Native-space images keyed among ``b0, fa, md, isovf, icvf, ..., mask`` (same grid).
        Without a T1w, ``fa`` and ``isovf`` or ``md`` are required.
    t1w
        Optional T1-weighted image of the same subject (whole head is fine: it is masked
        with the DWI brain mask after the DWI -> T1w step).
    template
        Template to register to (default :func:`load_template(resolution)`).
    type_of_transform
        ANTs transform to the template (``"SyN"``: affine + SyN, Mattes MI; ``"Affine"`` for
        a linear-only normalisation; ``"antsRegistrationSyNQuick[s]"``).
    dwi_to_t1w
        ``"Rigid"`` or ``"Affine"`` (DWI -> T1w, Mattes MI).
    random_seed
        Seed of ANTs' metric sampling (reproducible results).
    n_threads
        ITK threads (default: ITK's own choice or ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS``).

    Returns
    -------
    SubjectTransform
    """
    import ants

    _check_moving(moving)
    check_choice("type_of_transform", type_of_transform,
                 ["SyN", "Affine", "Rigid", "antsRegistrationSyNQuick[s]", "SyNRA"])
    check_choice("dwi_to_t1w", dwi_to_t1w, ["Rigid", "Affine"])
    template = template or load_template(resolution)
    ref = next(iter(moving.values()))
    arrays = {k: np.asarray(v.dataobj, dtype=np.float32) for k, v in moving.items()}
    mask = brain_mask_from_maps(arrays)
    contrast = synthetic_t1(arrays, template) if "fa" in arrays else None
    if t1w is None and contrast is None:
        raise InputError("without a T1w image, registration needs the FA map and ISOVF or MD",
                         file="moving", fix="Pass fa and isovf (or md), or a T1w image.")
    fixed = to_ants(template.t1)
    # the process id in the name lets a later run remove it if this process is killed
    tmp = tempfile.TemporaryDirectory(prefix=f"microvba-xfm-{os.getpid()}-")
    info: dict[str, Any] = {"type_of_transform": type_of_transform, "random_seed": random_seed,
                            "template": template.space, "resolution": template.resolution}
    with _itk_threads(n_threads, random_seed):
        if t1w is None:
            moving_img = to_ants(nib.Nifti1Image(contrast, ref.affine))
            reg = ants.registration(fixed, moving_img, type_of_transform=type_of_transform,
                                    random_seed=random_seed, aff_metric="mattes",
                                    syn_metric="mattes")
            files = _keep_files(reg, tmp)
            info["route"] = "synthetic T1-like contrast -> template"
        else:
            files = _register_via_t1w(arrays, contrast, mask, ref.affine, t1w, fixed,
                                      type_of_transform, dwi_to_t1w, random_seed, tmp)
            info["route"] = f"DWI -> T1w ({dwi_to_t1w}) -> template"
    return SubjectTransform(files, template.resolution, info, tmp)


def _register_via_t1w(arrays: dict[str, np.ndarray], contrast: np.ndarray | None,
                      mask: np.ndarray, affine: np.ndarray,
                      t1w: nib.spatialimages.SpatialImage, fixed: Any,
                      type_of_transform: str, dwi_to_t1w: str, random_seed: int,
                      tmp: tempfile.TemporaryDirectory) -> list[Path]:
    import ants

    dwi = arrays["b0"] if "b0" in arrays else contrast
    if dwi is None:
        raise InputError("the DWI -> T1w step needs a b0 or the FA and ISOVF/MD maps",
                         file="moving", fix="Pass b0, or fa and isovf (or md).")
    dwi_img = to_ants(nib.Nifti1Image(np.where(mask, dwi, 0).astype(np.float32), affine))
    t1 = to_ants(t1w)
    rig = ants.registration(t1, dwi_img, type_of_transform=dwi_to_t1w, random_seed=random_seed,
                            aff_metric="mattes")
    rigid_files = _keep_files(rig, tmp)
    # skull-strip the T1w with the DWI brain mask carried into it
    mask_img = to_ants(nib.Nifti1Image(ndimage.binary_dilation(mask, iterations=2)
                                       .astype(np.float32), affine))
    mask_t1 = ants.apply_transforms(t1, mask_img, [str(f) for f in rigid_files],
                                    interpolator="nearestNeighbor")
    t1_brain = t1 * mask_t1
    reg = ants.registration(fixed, t1_brain, type_of_transform=type_of_transform,
                            random_seed=random_seed, aff_metric="mattes", syn_metric="mattes")
    return _keep_files(reg, tmp) + rigid_files
