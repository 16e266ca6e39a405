import pandas as pd

from microvba.workflows.planted import planted_vs_found

TRUTH = {
    "effects": [
        {"metric": "ad", "region": "A23c", "code": "A23c", "r": 0.48, "sign": "+",
         "mni_com_mm": [0.0, -20.0, 40.0]},
        {"metric": "odi", "region": "A9/46d", "code": "A9/46d", "r": -0.27, "sign": "-",
         "mni_com_mm": [30.0, 40.0, 30.0]},
    ],
    "secondary": [{"metric": "md", "code": "A23c", "truth_r": 0.26,
                   "mni_com_mm": [0.0, -20.0, 40.0]}],
}


def _clusters(rows):
    return pd.DataFrame(rows, columns=["metric", "sign", "cluster_id", "peak_x", "peak_y",
                                       "peak_z"])


def test_found_missed_expected_and_false_clusters():
    clusters = _clusters([
        ("ad", "+", 1, 4.0, -22.0, 38.0),     # the planted AD effect
        ("md", "+", 1, 2.0, -18.0, 42.0),     # MD follows AD: expected side effect
        ("fa", "+", 1, -40.0, 10.0, 0.0),     # nothing planted there: false
        ("odi", "+", 1, 30.0, 40.0, 30.0),    # right place, wrong sign: false
    ])
    corrs = pd.DataFrame({"metric": ["ad", "ad"], "sign": ["+", "+"], "cluster_id": [1, 1],
                          "method": ["pearson", "spearman"], "r": [0.5, 0.45],
                          "loso_r": [0.44, 0.4]})
    table = planted_vs_found(TRUTH, clusters, corrs)
    ad = table[table["metric"].eq("ad") & table["region"].eq("A23c")].iloc[0]
    assert ad["found"] and ad["found_r"] == 0.5 and ad["loso_r"] == 0.44
    assert ad["peak_distance_mm"] < 5
    odi = table[table["region"].eq("A9/46d")].iloc[0]
    assert not odi["found"] and odi["status"] == "missed"
    extra = table[table["region"].eq("(not planted)")].set_index("metric")["status"]
    assert extra["md"] == "expected side effect"
    assert extra["fa"] == "false positive" and extra["odi"] == "false positive"
    assert table.attrs["false_clusters"] == 2


def test_no_clusters_means_everything_missed():
    table = planted_vs_found(TRUTH, _clusters([]), pd.DataFrame())
    assert not table["found"].any() and table.attrs["false_clusters"] == 0


def test_scaled_effects_report_the_study_r():
    truth = {"effects": [dict(TRUTH["effects"][0], r=0.86, study_r=0.48)], "secondary": []}
    table = planted_vs_found(truth, _clusters([]), pd.DataFrame())
    assert table.iloc[0]["planted_r"] == 0.86 and table.iloc[0]["study_r"] == 0.48
