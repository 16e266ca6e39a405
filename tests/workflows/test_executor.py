import pytest

from microvba.workflows.executor import (
    DaskExecutor,
    SerialExecutor,
    SlurmOptions,
    make_executor,
    summarise_failures,
)


def _square_or_fail(x):
    if x == 3:
        raise ValueError("bad subject data")
    return x * x


def test_serial_executor_reports_failures_without_stopping():
    res = SerialExecutor().map(_square_or_fail, [1, 2, 3, 4])
    assert [r.ok for r in res] == [True, True, False, True]
    assert [r.value for r in res if r.ok] == [1, 4, 16]
    assert "ValueError: bad subject data" in res[2].error
    assert summarise_failures(res) == ["subject 3: ValueError: bad subject data"]


def test_make_executor_one_job_is_serial():
    assert isinstance(make_executor(n_jobs=1), SerialExecutor)


def test_local_dask_executor_keeps_input_order_and_isolates_failures():
    with make_executor(n_jobs=2, memory_limit="1GB") as ex:
        assert isinstance(ex, DaskExecutor)
        assert ex.n_workers == 2
        res = ex.map(_square_or_fail, list(range(8)))
        assert [r.item for r in res] == list(range(8))
        assert [r.ok for r in res] == [i != 3 for i in range(8)]
        assert ex.batch_map(abs, [-1, -2, 3]) == [1, 2, 3]


def test_slurm_job_script_has_the_documented_directives():
    pytest.importorskip("dask_jobqueue")
    opts = SlurmOptions(queue="long", cores=8, memory="32GB", walltime="04:00:00",
                        account="lab42", job_extra_directives=["--constraint=avx2"])
    cluster = opts.cluster()
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for directive in ("#SBATCH -p long", "#SBATCH -A lab42", "#SBATCH -n 1",
                      "#SBATCH --cpus-per-task=8", "#SBATCH --mem=30G", "#SBATCH -t 04:00:00",
                      "#SBATCH --constraint=avx2", "#SBATCH -J microvba"):
        assert directive in script, (directive, script)
