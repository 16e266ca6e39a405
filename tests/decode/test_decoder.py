"""Decoder: sanity on known anatomy, spatial null, statistics, errors."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import stats

from microvba._validation import InputError
from microvba.decode import Decoder
from microvba.decode.decoder import fdr_bh

EMOTION = ("26_emotional_amygdala_negative", "13_fear_threat_smokers", "40_face_faces_facial")


def test_amygdala_ranks_emotion_first(lda_decoder, rois):
    table = lda_decoder.decode_roi(rois["amygdala"])
    top3 = list(table["feature"][:3])
    assert top3[0] == "26_emotional_amygdala_negative"
    assert "13_fear_threat_smokers" in list(table["feature"][:5])
    assert table.loc[table["feature"].isin(EMOTION), "significant"].all()
    assert table.attrs["statistic"] == "log_odds"
    assert table["log_odds"].is_monotonic_decreasing


def test_motor_cortex_ranks_motor_first(lda_decoder, rois):
    table = lda_decoder.decode_roi(rois["A4ul"])
    assert table["feature"].iloc[0] == "17_motor_cortex_hand"
    assert bool(table["significant"].iloc[0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_white_matter_roi_has_no_significant_feature(lda_decoder, white_matter_roi, seed):
    table = lda_decoder.decode_roi(white_matter_roi(seed))
    assert not table["significant"].any()


def test_roi_statistics_are_those_of_the_2x2_table(lda_decoder, rois):
    table = lda_decoder.decode_roi(rois["dCa_R"]).set_index("feature")
    n = lda_decoder.maps_.n_studies
    row = table.iloc[0]
    n1 = row["n_selected"]
    a = round(row["p_roi_given_feature"] * n1)
    c = round(row["p_roi_given_other"] * (n - n1))
    cells = np.array([[a, n1 - a], [c, n - n1 - c]])
    assert row["p"] == pytest.approx(stats.fisher_exact(cells).pvalue, rel=1e-6)
    assert row["z"] ** 2 == pytest.approx(stats.chi2_contingency(cells, correction=False)[0],
                                          rel=1e-6)
    expected = np.log((a + .5) * (cells[1, 1] + .5) / ((n1 - a + .5) * (c + .5)))
    assert row["log_odds"] == pytest.approx(expected)
    np.testing.assert_allclose(table["q"], fdr_bh(table["p"].to_numpy()))
    assert ((table["p_perm"] >= 1 / 501) & (table["p_perm"] <= 1)).all()
    assert ((table["p_null"] >= 0) & (table["p_null"] <= 1)).all()


def test_null_is_seeded(shared_data, map_cache, lda_decoder, rois):
    a = lda_decoder.decode_roi(rois["IFJ_R"])
    b = lda_decoder.decode_roi(rois["IFJ_R"])
    np.testing.assert_array_equal(a["p_perm"], b["p_perm"])
    assert a.attrs["n_null"] == 500
    none = Decoder("lda50", data_dir=shared_data, cache_dir=map_cache, n_null=0).fit()
    table = none.decode_roi(rois["IFJ_R"])
    assert table["p_null"].isna().all()
    np.testing.assert_allclose(table.set_index("feature")["log_odds"],
                               a.set_index("feature")["log_odds"].reindex(table["feature"]))


def test_fdr_bh_matches_statsmodels(rng):
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    p = rng.uniform(0, 0.2, 40)
    np.testing.assert_allclose(fdr_bh(p), multitest.multipletests(p, method="fdr_bh")[1])


def test_decode_map_amygdala(lda_decoder, roi_maps):
    table = lda_decoder.decode_map(roi_maps["amygdala"])
    assert table["feature"].iloc[0] == "26_emotional_amygdala_negative"
    assert table.attrs["statistic"] == "r" and table["r"].is_monotonic_decreasing
    assert bool(table["significant"].iloc[0])
    assert table["r"].between(-1, 1).all()


def test_decode_map_of_a_feature_map_finds_itself(lda_decoder):
    fm = lda_decoder.maps_
    img = fm.image("17_motor_cortex_hand")
    table = lda_decoder.decode_map(img)
    assert table["feature"].iloc[0] == "17_motor_cortex_hand"
    assert table["r"].iloc[0] == pytest.approx(1.0, abs=1e-4)


def test_decoder_errors(lda_decoder, tmp_path):
    with pytest.raises(InputError, match="not fitted"):
        Decoder().decode_roi(tmp_path / "x.nii.gz")
    with pytest.raises(InputError, match="does not exist"):
        lda_decoder.decode_roi(tmp_path / "missing.nii.gz")
    bad = tmp_path / "bad.nii.gz"
    bad.write_text("not a nifti")
    with pytest.raises(InputError, match="cannot be read"):
        lda_decoder.decode_roi(bad)
    grid = lda_decoder.maps_.grid
    with pytest.raises(InputError, match="no voxel inside"):
        lda_decoder.decode_roi(nib.Nifti1Image(np.zeros(grid.shape, np.uint8), grid.affine))
    with pytest.raises(InputError, match="must be 3-D"):
        lda_decoder.decode_roi(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.uint8), np.eye(4)))
    with pytest.raises(InputError, match="constant inside the brain"):
        lda_decoder.decode_map(nib.Nifti1Image(np.ones(grid.shape, np.float32), grid.affine))
    with pytest.raises(InputError, match="'sort_by' parameter must be one of"):
        lda_decoder.decode_roi(tmp_path / "x.nii.gz", sort_by="p")
    with pytest.raises(InputError, match="'vocabulary' parameter must be one of"):
        Decoder("words").fit()
    with pytest.raises(InputError, match="'n_null' parameter must be a positive int"):
        Decoder(n_null=-5).fit()
