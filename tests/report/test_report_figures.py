"""Report figures: significance masking, cut placement and the figure builders."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from synthetic_output import grid_affine

from microvba.report import figures


def _maps(rng):
    aff = grid_affine(4.0)
    t = rng.normal(size=(20, 24, 20)).astype(np.float32)
    corrp = np.zeros_like(t)
    corrp[5:8, 5:8, 5:8] = 0.97  # significant
    corrp[10:12, 10:12, 10:12] = 0.94  # not at alpha 0.05
    t[5:8, 5:8, 5:8] = 4.0
    t[6, 6, 6] = 6.0
    return nib.Nifti1Image(t, aff), nib.Nifti1Image(corrp, aff)


def test_significant_t_masks_by_corrp(rng):
    timg, cimg = _maps(rng)
    sig = np.asarray(figures.significant_t(timg, cimg, alpha=0.05).dataobj)
    assert np.count_nonzero(sig) == 27
    assert sig[6, 6, 6] == 6.0 and sig[10, 10, 10] == 0
    neg = np.asarray(figures.significant_t(timg, cimg, alpha=0.05, sign=-1).dataobj)
    np.testing.assert_array_equal(neg, -sig)
    loose = np.asarray(figures.significant_t(timg, cimg, alpha=0.1).dataobj)
    assert np.count_nonzero(loose) == 27 + 8
    assert not np.any(figures.significant_t(timg, None).dataobj)


def test_peak_cuts_go_through_the_peaks(rng):
    timg, cimg = _maps(rng)
    sig = figures.significant_t(timg, cimg)
    cuts = figures.peak_cuts(sig, n_cuts=5)
    peak_z = nib.affines.apply_affine(sig.affine, (6, 6, 6))[2]
    assert peak_z in cuts and len(cuts) == 5
    assert np.all(np.diff(cuts) >= 6.0)
    empty = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    assert figures.peak_cuts(empty) == []


def test_corrected_map_figure_draws_both_signs(rng):
    timg, cimg = _maps(rng)
    pos = figures.significant_t(timg, cimg)
    neg = figures.significant_t(nib.Nifti1Image(-np.asarray(timg.dataobj), timg.affine),
                                nib.Nifti1Image(np.roll(np.asarray(cimg.dataobj), 8, axis=0),
                                                cimg.affine), sign=-1)
    both = figures.combine_signs([pos, neg])
    data = np.asarray(both.dataobj)
    assert data.max() == 6.0 and data.min() < 0
    fig = figures.corrected_map_figure(both)
    assert isinstance(fig, Figure)
    png = figures.figure_png(fig, dpi=40)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_qc_and_decoding_figures():
    qc = pd.DataFrame({"participant_id": ["sub-01", "sub-02", "sub-03"],
                       "corr": [0.9, 0.91, 0.4], "dice": [0.85, 0.84, 0.3],
                       "outlier": [False, False, True]})
    fig = figures.qc_similarity_figure(qc)
    assert len(fig.axes) == 2
    assert any(t.get_text() == "sub-03" for t in fig.axes[0].texts)
    table = pd.DataFrame({"label": list("abcdefghijkl"), "log_odds": np.arange(12.0),
                          "significant": np.arange(12) > 9})
    fig = figures.decoding_bar_figure(table, n_top=5)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["h", "i", "j", "k", "l"]  # top 5, strongest at the top
    # a table without the decoding statistic is drawn as such, not from another column
    fig = figures.decoding_bar_figure(table.rename(columns={"log_odds": "statistic"}))
    assert [t.get_text() for t in fig.axes[0].texts] == ["no numeric statistic"]


def test_thumbnail_downscales_only_wide_images(tmp_path):
    from PIL import Image

    Image.new("RGB", (1200, 300), "white").save(tmp_path / "wide.png")
    Image.new("RGB", (200, 100), "white").save(tmp_path / "small.png")
    import io
    with Image.open(io.BytesIO(figures.thumbnail_png(tmp_path / "wide.png", 600))) as im:
        assert im.size == (600, 150)
    assert figures.thumbnail_png(tmp_path / "small.png", 600) == (tmp_path / "small.png").read_bytes()
