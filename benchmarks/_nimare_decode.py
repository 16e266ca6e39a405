"""NiMARE side of ``bench_decode.py``: the peer decoders on the Neurosynth v7 LDA-50 topics.

Kept in its own module so that the benchmark can time it in the same process after microvba
and so that ``bench_decode.py --write-reference`` can record its rankings for the tests.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

NS_FILES = {
    "coordinates": "data-neurosynth_version-7_coordinates.tsv.gz",
    "metadata": "data-neurosynth_version-7_metadata.tsv.gz",
    "features": "data-neurosynth_version-7_vocab-LDA50_source-abstract_type-weight_features.npz",
    "vocabulary": "data-neurosynth_version-7_vocab-LDA50_vocabulary.txt",
}


def nimare_grid_img(img: nib.Nifti1Image, interpolation: str) -> nib.Nifti1Image:
    """``img`` resampled onto NiMARE's ``mni152_2mm`` grid."""
    from nilearn.image import resample_to_img
    from nimare.utils import get_template

    template = get_template("mni152_2mm", mask="brain")
    return resample_to_img(img, template, interpolation=interpolation, force_resample=True,
                           copy_header=True)


def load_studyset(ns_dir: Path):
    """Neurosynth v7 with LDA-50 weights as a NiMARE Studyset (timed by the caller)."""
    from nimare.io import convert_neurosynth_to_studyset

    return convert_neurosynth_to_studyset(
        str(ns_dir / NS_FILES["coordinates"]), str(ns_dir / NS_FILES["metadata"]),
        annotations_files={"features": str(ns_dir / NS_FILES["features"]),
                           "vocabulary": str(ns_dir / NS_FILES["vocabulary"])},
        target="mni152_2mm")


def _feature_name(column: str) -> str:
    return column.split("__", 1)[1] if "__" in column else column


def run_roi_association(studyset, roi_imgs: dict[str, nib.Nifti1Image],
                        kernel_mm: float) -> tuple[dict[str, pd.Series], dict[str, float]]:
    """NiMARE ROIAssociationDecoder (MKDA kernel) per ROI: r per feature, and seconds."""
    from nimare.decode.discrete import ROIAssociationDecoder

    tables, seconds = {}, {}
    for name, img in roi_imgs.items():
        t0 = time.perf_counter()
        dec = ROIAssociationDecoder(nimare_grid_img(img, "nearest"), kernel__r=kernel_mm)
        dec.fit(studyset)
        table = dec.transform()
        seconds[name] = time.perf_counter() - t0
        s = table["r"].astype(float)
        s.index = [_feature_name(c) for c in s.index]
        tables[name] = s
    return tables, seconds


def run_correlation_decoder(studyset, kernel_mm: float, threshold: float):
    """Fit NiMARE CorrelationDecoder (MKDAChi2, association z) on all topics; (decoder, s)."""
    from nimare.decode.continuous import CorrelationDecoder
    from nimare.meta.cbma.mkda import MKDAChi2

    logging.getLogger("nimare").setLevel(logging.WARNING)
    t0 = time.perf_counter()
    dec = CorrelationDecoder(frequency_threshold=threshold,
                             meta_estimator=MKDAChi2(kernel__r=kernel_mm),
                             target_image="z_desc-association", n_cores=1)
    dec.fit(studyset)
    return dec, time.perf_counter() - t0


def decode_maps(decoder, map_imgs: dict[str, nib.Nifti1Image]) -> dict[str, pd.Series]:
    """NiMARE CorrelationDecoder.transform for each map: r per feature."""
    out = {}
    for name, img in map_imgs.items():
        table = decoder.transform(nimare_grid_img(img, "continuous"))
        s = table["r"].astype(float)
        s.index = [_feature_name(c) for c in s.index]
        out[name] = s
    return out


def feature_maps(decoder) -> tuple[list[str], np.ndarray, nib.Nifti1Image]:
    """NiMARE's association z maps (features x in-mask voxels) and its mask image."""
    maps = decoder.results_.maps
    names = list(maps)
    z = np.vstack([np.asarray(maps[n], dtype=np.float32).ravel() for n in names])
    return [_feature_name(n) for n in names], z, decoder.results_.masker.mask_img
