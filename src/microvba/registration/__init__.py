"""Registration stage: MNI template, ANTs normalisation, GM analysis mask, smoothing, QC.

Public API::

    load_template(resolution=2.0) -> Template
    register_subject(moving, t1w=None, template=None, resolution=2.0, ...) -> SubjectTransform
    normalise_subject(native_maps, out_dir, prefix, t1w=None, resolution=2.0, force=False)
        -> NormaliseResult
    group_gm_mask(template, subject_map_paths, gm_threshold=0.3, isovf_max=None) -> image
    smooth_in_mask(data, mask, fwhm_mm, voxel_size, subjects_axis="last") -> ndarray
    flag_outliers(qc_table) -> pandas.Series[bool]

Submodules import antspyx lazily, so importing this package is cheap.
"""

from .ants import SubjectTransform, register_subject
from .masks import group_gm_mask
from .normalise import NormaliseResult, normalise_subject
from .qc import dice, flag_outliers, qc_mosaic, registration_similarity, similarity_figure
from .smooth import smooth_in_mask
from .template import Template, load_template

__all__ = [
    "NormaliseResult",
    "SubjectTransform",
    "Template",
    "dice",
    "flag_outliers",
    "group_gm_mask",
    "load_template",
    "normalise_subject",
    "qc_mosaic",
    "register_subject",
    "registration_similarity",
    "similarity_figure",
    "smooth_in_mask",
]
