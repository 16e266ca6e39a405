"""The group stage does one job (issue 17): missing decoding databases are refused when it
starts (exit 2, naming the file and the fetch command), and the simulation ground-truth check
belongs to the demo (``workflows.planted.check_planted``), not to ``run_group``."""

from __future__ import annotations

import ast
import inspect
import json

import numpy as np
import pandas as pd
import pytest
from test_group_outliers import FAILED, _failed_participant_outputs

from microvba._validation import InputError
from microvba.cli import main
from microvba.workflows import group
from microvba.workflows.group import GroupSettings, check_decoding_data, run_group
from microvba.workflows.planted import check_planted, planted_vs_found


def test_missing_databases_refused_before_anything_is_written(tmp_path):
    bids, out = _failed_participant_outputs(tmp_path, FAILED)
    empty = tmp_path / "nodata"
    empty.mkdir()
    settings = GroupSettings(score="resilience", metrics=("fa",), n_perm=10,
                             data_dir=str(empty), vocabularies=("lda50",))
    with pytest.raises(InputError) as exc:
        run_group(bids, out, settings)
    msg = str(exc.value)
    assert "neurosynth database is missing" in msg
    assert "microvba data fetch --database neurosynth" in msg
    assert not (out / "group").exists()
    # without decoding nothing is asked of the data folder
    check_decoding_data(GroupSettings(score="resilience", decode=False, data_dir=str(empty)))


def test_missing_databases_exit_2_from_the_command_line(tmp_path, capsys):
    bids, out = _failed_participant_outputs(tmp_path, FAILED)
    empty = tmp_path / "nodata"
    empty.mkdir()
    rc = main([str(bids), str(out), "group", "--score", "resilience", "--metrics", "fa",
               "--n-perm", "10", "--data-dir", str(empty), "--n-jobs", "1", "-q"])
    assert rc == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "neurosynth" in err and "neuroquery" in err
    assert "microvba data fetch" in err
    assert not (out / "group").exists()


def test_databases_present_pass(shared_data):
    if not (shared_data / "neurosynth").exists():
        pytest.skip("no decoding databases in the shared data")
    check_decoding_data(GroupSettings(score="resilience", data_dir=str(shared_data),
                                      vocabularies=("lda50",)))


def test_run_group_knows_nothing_of_simulations():
    tree = ast.parse(inspect.getsource(group))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(m and "planted" in m for m in imported)
    strings = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
               and isinstance(n.value, str)]
    assert not any("ground_truth" in s for s in strings)


TRUTH = {"effects": [{"metric": "fa", "r": 0.4, "region": "A23c", "hemisphere": "L",
                      "mni_com_mm": [-4.0, -20.0, 36.0]},
                     {"metric": "md", "r": -0.3, "region": "dCa", "hemisphere": "R",
                      "mni_com_mm": [14.0, 12.0, 10.0]}]}


def _finished_group(tmp_path, clusters, corrs):
    bids, out = tmp_path / "bids", tmp_path / "out"
    (bids / "code").mkdir(parents=True)
    (bids / "code" / "ground_truth.json").write_text(json.dumps(TRUTH))
    (out / "group").mkdir(parents=True)
    clusters.to_csv(out / "group" / "clusters.tsv", sep="\t", index=False)
    corrs.to_csv(out / "group" / "correlations.tsv", sep="\t", index=False)
    (out / "group" / "analysis.json").write_text(json.dumps({"summary": {"n_clusters": 2}}))
    return bids, out


def test_check_planted_equals_the_in_memory_table(tmp_path):
    clusters = pd.DataFrame({"metric": ["fa", "fa"], "sign": ["+", "-"], "cluster_id": [1, 2],
                             "peak_x": [-5.0, 40.0], "peak_y": [-21.0, 0.0],
                             "peak_z": [35.0, 0.0]})
    corrs = pd.DataFrame({"metric": ["fa"], "sign": ["+"], "cluster_id": [1],
                          "method": ["pearson"], "r": [0.41234567890123], "loso_r": [0.3]})
    bids, out = _finished_group(tmp_path, clusters, corrs)
    counts = check_planted(bids, out)
    expected = planted_vs_found(TRUTH, clusters, corrs, bids)
    got = pd.read_csv(out / "group" / "planted_vs_found.tsv", sep="\t")
    assert got.to_csv(sep="\t", index=False) == expected.to_csv(sep="\t", index=False)
    assert counts == {"planted_found": 1, "false_clusters": 1}
    summary = json.loads((out / "group" / "analysis.json").read_text())["summary"]
    assert summary == {"n_clusters": 2, "planted_found": 1, "false_clusters": 1}
    assert got.loc[0, "found_r"] == pytest.approx(0.41234567890123, abs=0)


def test_check_planted_without_clusters_or_truth(tmp_path):
    bids, out = _finished_group(tmp_path, pd.DataFrame(), pd.DataFrame())
    assert check_planted(bids, out) == {"planted_found": 0, "false_clusters": 0}
    table = pd.read_csv(out / "group" / "planted_vs_found.tsv", sep="\t")
    assert list(table["status"]) == ["missed", "missed"]
    assert np.isnan(table["found_r"]).all()
    assert check_planted(tmp_path / "not_a_simulation", out) is None
