"""BIDS input: find subjects and sessions, and validate a dataset before any work starts.

Layout read (BIDS 1.9)::

    BIDS_DIR/participants.tsv
    BIDS_DIR/sub-<label>[/ses-<label>]/dwi/sub-<label>[_ses-<label>][_<entity>-<v>...]_dwi.nii[.gz]
                                           (+ the same name with .bval, .bvec, optional .json)
    BIDS_DIR/sub-<label>[/ses-<label>]/anat/..._T1w.nii[.gz]   (optional)

:func:`discover` lists the subjects; :func:`validate_dataset` checks everything a run will
read and raises one :class:`~microvba._validation.InputError` listing every problem, so a
malformed dataset never costs a half-written output folder.

The code lives in four modules, re-exported here: :mod:`microvba.io.discovery` (subjects,
sessions, series, ``--dwi-filter``), :mod:`microvba.io.series_names` (entities of a series'
name; series never combined: one file twice, raw beside derived, phase parts),
:mod:`microvba.io.validation` (the whole-dataset check) and :mod:`microvba.io.nifti_checks`
(one streamed pass over a NIfTI file).

Checks and tolerances
---------------------
- the ``.bval`` count, the ``.bvec`` columns and the number of DWI volumes agree;
- the ``.bvec`` file has 3 rows (x, y, z) (an N x 3 file is accepted and transposed);
- a volume with :math:`b \\le` :data:`B0_THRESHOLD` (50 s/mm², DIPY's ``b0_threshold``) is a
  b=0 volume and its vector is ignored; at least one is required;
- a volume with :math:`b >` :data:`B0_THRESHOLD` needs a unit vector:
  :math:`|\\lVert g \\rVert - 1| \\le` :data:`BVEC_NORM_TOL` (0.01, the tolerance with which
  DIPY's ``gradient_table`` accepts b-vectors);
- the DWI is a 4-D NIfTI, the T1w (if any) a 3-D one; both are read in full (in chunks of at
  most :data:`CHUNK_BYTES`, so memory stays bounded) to detect truncated or corrupt files and
  NaN or infinite voxels;
- several DWI series in one ``dwi/`` folder (``run-``, ``acq-``, ``dir-`` ...) are combined
  into one scheme, sorted by their BIDS entities (:func:`series_sort_key`); b=0-only series
  (reverse phase-encoding scans for distortion correction) are left out when a
  diffusion-weighted series is present, and ``dwi_filter`` (``--dwi-filter``) keeps a subset.
  Combined series must share the voxel grid: same 3-D shape and affines equal within
  :data:`GRID_ATOL` mm; the b=0 volume may then be in any of them. Never combined (refused):
  one series as ``.nii`` and ``.nii.gz``, series differing in ``desc-``/``space-``/``res-``/
  ``den-`` (raw beside derived), DWI outside the session folders of a subject with sessions;
  ``part-phase``/``real``/``imag`` series are left out with a warning;
- ``participants.tsv`` (see :mod:`microvba.io.participants`): one row per subject with images
  and no row without images; the score column holds numbers and the covariate columns numbers
  or text labels (categorical), with no missing value for a selected subject.
"""


from __future__ import annotations

from .discovery import (  # noqa: F401 - re-exported: microvba.io.bids is the public name
    _ANNEX_FIX,
    _ENTITY_ORDER,
    _FILTER_TOKEN,
    _LABEL,
    _NIFTI_EXT,
    GRID_ATOL,
    Dataset,
    DwiSeries,
    Subject,
    _broken_links,
    _discover,
    _entity_rank,
    _find_t1w,
    _has_diffusion_weighting,
    _inherited,
    _natural,
    _nifti_stem,
    _niftis,
    _same_value,
    _strip,
    _subject_in,
    discover,
    entities,
    format_dwi_filter,
    matches_dwi_filter,
    parse_dwi_filter,
    series_sort_key,
)
from .gradients import B0_THRESHOLD, BVEC_NORM_TOL
from .nifti_checks import (  # noqa: F401 - re-exported: microvba.io.bids is the public name
    CHUNK_BYTES,
    _blocks,
    _describe,
    _is_gzip,
    _load_header,
    check_image_data,
    check_image_file,
    nifti_read_errors,
    nifti_read_fix,
)
from .validation import (  # noqa: F401 - re-exported: microvba.io.bids is the public name
    _check_combined_b0,
    _check_dwi_image,
    _check_grids,
    _check_one,
    _check_participants,
    _check_subject,
    _check_subjects,
    _filter_hint,
    check_dataset_description,
    check_gradients,
    check_one_session_per_subject,
    validate_dataset,
)

__all__ = [
    "B0_THRESHOLD",
    "BVEC_NORM_TOL",
    "CHUNK_BYTES",
    "Dataset",
    "DwiSeries",
    "GRID_ATOL",
    "Subject",
    "check_dataset_description",
    "check_gradients",
    "check_image_data",
    "check_image_file",
    "check_one_session_per_subject",
    "discover",
    "entities",
    "format_dwi_filter",
    "matches_dwi_filter",
    "nifti_read_errors",
    "nifti_read_fix",
    "parse_dwi_filter",
    "series_sort_key",
    "validate_dataset",
]
