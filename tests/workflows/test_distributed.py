"""Participant and group stages on a 2-worker Dask cluster equal a serial run."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from microvba.workflows.executor import DaskExecutor, SerialExecutor
from microvba.workflows.group import GroupSettings, run_group
from microvba.workflows.participant import ParticipantSettings, run_participant

simulate = pytest.importorskip("microvba.simulate")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("cohort") / "bids"
    return simulate.simulate_cohort(root, n_subjects=8, resolution=6.0, scheme="multishell",
                                    seed=5, data_dir=shared_data)


def _dask_executor():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           memory_limit="2GB", dashboard_address=None)
    # remote=True ships the permutation batches to the workers, as on a real cluster
    return DaskExecutor(Client(cluster), cluster, remote=True)


def _images(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): np.asarray(nib.load(p).dataobj)
            for p in sorted(root.rglob("*.nii.gz"))}


def test_dask_and_serial_runs_are_identical(cohort, tmp_path, shared_data):
    settings = ParticipantSettings(tissue="gm", resolution=6.0)
    group = GroupSettings(score="resilience", covariates=("age", "sex"), n_perm=60,
                          fwhm=0.0, resolution=6.0, decode=False, data_dir=str(shared_data))
    outs = {}
    for name, make in (("serial", SerialExecutor), ("dask", _dask_executor)):
        out = tmp_path / name
        with make() as ex:
            results = run_participant(cohort, out, settings, executor=ex)
            assert all(r.ok for r in results), [r.error for r in results]
            run_group(cohort, out, group, executor=ex)
        outs[name] = out
    serial, dask = _images(outs["serial"]), _images(outs["dask"])
    assert serial.keys() == dask.keys()
    assert any(k.startswith("group/") for k in serial)
    for key, arr in serial.items():
        np.testing.assert_allclose(dask[key], arr, rtol=0, atol=1e-12, err_msg=key)
    for table in ("clusters.tsv", "qc.tsv"):
        a = (outs["serial"] / "group" / table).read_text()
        b = (outs["dask"] / "group" / table).read_text()
        if a.strip():
            pd.testing.assert_frame_equal(pd.read_csv(outs["serial"] / "group" / table,
                                                      sep="\t"),
                                          pd.read_csv(outs["dask"] / "group" / table, sep="\t"))
        else:
            assert a == b
