"""BIDS-derivatives names and the ``dataset_description.json`` of an output folder.

Map names follow the BIDS diffusion-derivatives proposal (BEP016):
``sub-<label>[_ses-<label>]_space-<space>_model-<model>_param-<param>_dwimap.nii.gz``.
"""

from __future__ import annotations

from pathlib import Path

from .. import __version__
from .._provenance import write_json

SPACE_NATIVE = "orig"
#: nilearn ships the ICBM152 2009a nonlinear symmetric template (mni_icbm152_*_tal_nlin_sym_09a)
SPACE_MNI = "MNI152NLin2009aSym"

#: which model produces which parameter map: the study's two here; every model of
#: :mod:`microvba.models.registry` (gqi, mapmri, ...) adds its own when that module is
#: imported (:func:`register_model_params`; io/ may not import models/)
MODEL_PARAMS: dict[str, tuple[str, ...]] = {
    "tensor": ("fa", "md", "rd", "ad"),
    "noddi": ("icvf", "odi", "isovf"),
}
#: the seven metrics of the study, in report order (the default analysis)
METRICS: tuple[str, ...] = ("fa", "md", "rd", "ad", "icvf", "odi", "isovf")
PARAM_MODEL: dict[str, str] = {p: m for m, ps in MODEL_PARAMS.items() for p in ps}


def register_model_params(model: str, params: tuple[str, ...]) -> None:
    """Record that ``model`` writes the group metrics ``params`` (names its maps
    ``_model-<model>_param-<param>``); called by the model registry."""
    MODEL_PARAMS[model] = tuple(params)
    PARAM_MODEL.update({p: model for p in params})


def all_metrics() -> tuple[str, ...]:
    """Every registered group metric (the study's seven first)."""
    return tuple(p for ps in MODEL_PARAMS.values() for p in ps)


def entities_prefix(subject: str, session: str | None = None) -> str:
    """``sub-<label>[_ses-<label>]``."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def subject_dir(out_dir: str | Path, subject: str, session: str | None = None,
                datatype: str = "dwi") -> Path:
    """``OUT/sub-<label>[/ses-<label>]/<datatype>``."""
    d = Path(out_dir) / f"sub-{subject}"
    if session:
        d = d / f"ses-{session}"
    return d / datatype


def map_name(subject: str, param: str, space: str = SPACE_NATIVE,
             session: str | None = None, model: str | None = None,
             desc: str | None = None, suffix: str = "dwimap",
             ext: str = ".nii.gz") -> str:
    """BIDS derivative file name of one parameter map.

    >>> map_name("01", "icvf", space="MNI152NLin2009cSym")
    'sub-01_space-MNI152NLin2009cSym_model-noddi_param-icvf_dwimap.nii.gz'
    >>> map_name("01", "rtop", space="MNI152NLin2009aSym", model="mapmri")
    'sub-01_space-MNI152NLin2009aSym_model-mapmri_param-rtop_dwimap.nii.gz'
    """
    model = model or PARAM_MODEL.get(param)
    parts = [entities_prefix(subject, session), f"space-{space}"]
    if desc:
        parts.append(f"desc-{desc}")
    if model:
        parts.append(f"model-{model}")
    parts.append(f"param-{param}")
    return "_".join(parts) + f"_{suffix}{ext}"


def map_path(out_dir: str | Path, subject: str, param: str, space: str = SPACE_NATIVE,
             session: str | None = None, **kwargs: str) -> Path:
    """Full path of one subject's parameter map in the derivatives folder."""
    return subject_dir(out_dir, subject, session) / map_name(
        subject, param, space=space, session=session, **kwargs)


def image_like(data, ref):
    """A NIfTI image of ``data`` on the grid of ``ref``, keeping its qform/sform codes and
    units (so a derivative map overlays its source in every viewer)."""
    import nibabel as nib

    out = nib.Nifti1Image(data, ref.affine)
    out.header.set_qform(ref.header.get_qform(), int(ref.header["qform_code"]))
    out.header.set_sform(ref.header.get_sform(), int(ref.header["sform_code"]))
    out.header.set_xyzt_units(*ref.header.get_xyzt_units())
    return out


def sidecar_path(path: str | Path) -> Path:
    """JSON sidecar beside a NIfTI file (``x.nii.gz`` -> ``x.json``)."""
    p = Path(path)
    name = p.name
    for ext in (".nii.gz", ".nii", ".tsv", ".png"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return p.with_name(name + ".json")


def write_dataset_description(out_dir: str | Path, source: str | Path | None = None) -> Path:
    """Write the derivatives ``dataset_description.json`` (BIDS 1.9)."""
    desc = {
        "Name": "microvba derivatives",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{
            "Name": "microvba",
            "Version": __version__,
            "Description": "DTI/NODDI fitting, MNI normalisation, permutation VBA, decoding",
        }],
    }
    if source is not None:
        desc["SourceDatasets"] = [{"URL": Path(source).resolve().as_uri()}]
    return write_json(Path(out_dir) / "dataset_description.json", desc)
