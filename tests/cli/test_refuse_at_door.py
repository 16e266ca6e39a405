"""Issue 14: every option, resource and hostile input refused before work starts.

Each case checks the documented handling: exit code 2 (or the stated one), the option or file
named in the message, no traceback, and no file written anywhere under the test folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from microvba.cli import main

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def bids(tmp_path):
    """A folder standing for a BIDS dataset (options are checked before it is read)."""
    root = tmp_path / "bids"
    (root / "sub-01" / "dwi").mkdir(parents=True)
    (root / "participants.tsv").write_text("participant_id\tscore\nsub-01\t1\n")
    return root


def refused(tmp_path, capsys, argv, named, code=2):
    """Run ``argv``; assert the exit code, ``named`` in stderr, no traceback, nothing new."""
    before = _tree(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err
    assert named in err, err
    assert "Traceback" not in err
    assert _tree(tmp_path) == before
    return err


# --- 1. options validated once, at construction ------------------------------------------

GROUP_BAD = [
    (["--n-perm", "0"], "--n-perm", "[2, inf)"),
    (["--n-perm", "-1"], "--n-perm", "[2, inf)"),
    (["--n-perm", "1"], "--n-perm", "[2, inf)"),
    (["--fwhm", "-3"], "--fwhm", "[0, 50] mm"),
    (["--fwhm", "nan"], "--fwhm", "[0, 50] mm"),
    (["--fwhm", "1e6"], "--fwhm", "[0, 50] mm"),
    (["--loso-n-perm", "-1"], "--loso-n-perm", "[0, 100000]"),
    (["--loso-n-perm", "1000000"], "--loso-n-perm", "[0, 100000]"),
    (["--gm-threshold", "2"], "--gm-threshold", "(0, 1)"),
    (["--gm-threshold", "-1"], "--gm-threshold", "(0, 1)"),
    (["--alpha", "2"], "--alpha", "(0, 1)"),
    (["--resolution", "nan"], "--resolution", "[0.5, 8] mm"),
    (["--n-jobs", "0"], "--n-jobs", "[1, inf)"),
    (["--n-jobs", "-1"], "--n-jobs", "[1, inf)"),
    (["--n-jobs", "99999999999999999999"], "--n-jobs", "at most"),
    (["--n-perm", "1000000000"], "--n-perm", "of memory"),
    (["--n-perm", "20000000", "--metrics", "fa"], "--n-perm", "more than 10,000,000"),
    (["--slurm-cores", "0"], "--slurm-cores", "[1, 1024]"),
    (["--scheduler", "localhost"], "--scheduler", "tcp://"),
]


@pytest.mark.parametrize(("extra", "option", "allowed"), GROUP_BAD,
                         ids=[" ".join(e) for e, _, _ in GROUP_BAD])
def test_group_option_refused_before_any_file(tmp_path, capsys, bids, extra, option, allowed):
    out = bids / "derivatives" / "microvba"
    err = refused(tmp_path, capsys, [str(bids), str(out), "group", "--score", "score",
                                     *extra], option)
    assert allowed in err
    assert "fwhm_mm" not in err and "parameter" not in err


PARTICIPANT_BAD = [
    (["--resolution", "0"], "--resolution", "[0.5, 8] mm"),
    (["--resolution", "-2"], "--resolution", "[0.5, 8] mm"),
    (["--models", "tensor,foo"], "--models", "allowed: tensor, noddi"),
    (["--dti-bmax", "0"], "--dti-bmax", "(50, 100000] s/mm^2"),
    (["--d-par", "0.01"], "--d-par", "[0.0001, 0.005] mm^2/s"),
    (["--d-par", "0.004", "--d-iso", "0.003"], "--d-par", "below --d-iso"),
    (["--n-jobs", "0"], "--n-jobs", "[1, inf)"),
]


@pytest.mark.parametrize(("extra", "option", "allowed"), PARTICIPANT_BAD,
                         ids=[" ".join(e) for e, _, _ in PARTICIPANT_BAD])
def test_participant_option_refused_before_any_file(tmp_path, capsys, bids, extra, option,
                                                    allowed):
    out = bids / "derivatives" / "microvba"
    err = refused(tmp_path, capsys, [str(bids), str(out), "participant", *extra], option)
    assert allowed in err


def test_fit_option_refused_before_reading_the_image(tmp_path, capsys):
    err = refused(tmp_path, capsys, ["fit", str(tmp_path / "missing.nii.gz"), "--bval", "b",
                                     "--bvec", "v", "-o", str(tmp_path / "out"),
                                     "--model", "tensor,foo"], "--models")
    assert "missing.nii.gz" not in err  # the option is checked before the files


def test_settings_dataclasses_name_the_public_option():
    from microvba._validation import InputError
    from microvba.workflows.group import GroupSettings
    from microvba.workflows.participant import ParticipantSettings

    with pytest.raises(InputError, match="--fwhm") as exc:
        GroupSettings(score="s", fwhm=-3.0)
    assert "fwhm_mm" not in str(exc.value)
    with pytest.raises(InputError, match="--models"):
        ParticipantSettings(models=("tensor", "foo"))
    with pytest.raises(InputError, match="--score"):
        GroupSettings(score="")
    assert GroupSettings(score="s").n_perm == 5000  # defaults are valid


def test_cli_defaults_come_from_the_settings_dataclasses():
    from dataclasses import fields

    from microvba.cli import build_bids_app_parser
    from microvba.workflows.group import GroupSettings
    from microvba.workflows.participant import ParticipantSettings

    args = build_bids_app_parser().parse_args(["B", "O", "participant"])
    for cls in (ParticipantSettings, GroupSettings):
        for f in fields(cls):
            if hasattr(args, f.name) and f.name not in ("metrics", "covariates", "score",
                                                        "data_dir"):
                value = getattr(args, f.name)
                value = tuple(value) if isinstance(value, list) else value
                assert value == f.default, (cls.__name__, f.name)


def test_every_known_model_is_accepted_by_models():
    from microvba.models import KNOWN_MODELS
    from microvba.workflows.participant import ParticipantSettings

    assert ParticipantSettings(models=KNOWN_MODELS).models == KNOWN_MODELS


def test_n_jobs_capped_to_cores_unless_oversubscribe(caplog):
    from microvba.workflows.executor import check_n_jobs

    assert check_n_jobs(1000, cores=2) == 2
    assert "--oversubscribe" in caplog.text
    assert check_n_jobs(8, oversubscribe=True, cores=2) == 8
    assert check_n_jobs(None) is None


def test_n_perm_below_one_over_alpha_warns(tmp_path, capsys, bids):
    # accepted (exit 2 later because the participant stage never ran) but warned about
    main([str(bids), str(bids / "derivatives" / "m"), "group", "--score", "score",
          "--n-perm", "10", "--no-decode"])
    err = capsys.readouterr().err
    assert "no FWE p-value can be below 1/10" in err


# --- 2. resources bounded before allocating ----------------------------------------------

RANDOMISE_BAD = [
    (["-n", "1000000000"], "-n/--n-perm", "of memory"),
    (["-n", "0"], "-n/--n-perm", "[2, inf)"),
    (["--tfce-H", "nan"], "--tfce-H", "(0, 10]"),
    (["--n-jobs", "0"], "--n-jobs", "[1, inf)"),
]


@pytest.fixture
def rdata(tmp_path):
    rng = np.random.default_rng(0)
    n, shape = 8, (4, 4, 3)
    nib.save(nib.Nifti1Image(rng.normal(size=shape + (n,)).astype(np.float32), AFFINE),
             tmp_path / "all.nii.gz")
    nib.save(nib.Nifti1Image(np.ones(shape, np.uint8), AFFINE), tmp_path / "mask.nii.gz")
    rows = [f"sub-{i:02d}\tS{i:02d}x\t{rng.normal():.3f}\t{rng.normal(40, 5):.1f}"
            for i in range(n)]
    (tmp_path / "design.tsv").write_text("participant_id\tsubject_id\tscore\tage\n"
                                         + "\n".join(rows) + "\n")
    return tmp_path


def _randomise(d, *extra, design="design.tsv", inputs=("all.nii.gz",)):
    return ["randomise", "-i", *[str(d / i) for i in inputs], "-m", str(d / "mask.nii.gz"),
            "-d", str(d / design), "--contrast", "score", "-o", str(d / "out" / "fa"),
            *extra]


@pytest.mark.parametrize(("extra", "option", "allowed"), RANDOMISE_BAD,
                         ids=[" ".join(e) for e, _, _ in RANDOMISE_BAD])
def test_randomise_option_refused(rdata, capsys, extra, option, allowed):
    err = refused(rdata, capsys, _randomise(rdata, *extra), option)
    assert allowed in err


def test_randomise_identifier_column_is_not_an_implicit_covariate(rdata, capsys):
    import json

    assert main(_randomise(rdata, "-n", "20")) == 0
    err = capsys.readouterr().err
    assert "left out as identifiers" in err and "subject_id" in err
    params = json.loads((rdata / "out" / "fa_randomise.json").read_text())
    text = json.dumps(params)
    assert '"covariates": ["age"]' in text


def _bomb(path: Path) -> Path:
    """A plain .nii whose header claims 2000^3 x 8 int16 voxels: a sparse 128 GB file."""
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((2000, 2000, 2000, 8))
    hdr.set_data_dtype(np.int16)
    hdr.set_qform(AFFINE, 1)
    with open(path, "wb") as fh:
        fh.write(hdr.binaryblock)
        fh.write(b"\0" * 4)
        fh.truncate(352 + 2000**3 * 8 * 2)
    return path


def _time_and_rss(argv: list[str], cwd: Path) -> tuple[int, str, float, float]:
    """Exit code, stderr, seconds and peak RSS (MB) of ``microvba argv`` in a child."""
    code = textwrap.dedent(f"""
        import sys, time
        t = time.perf_counter()
        from microvba.cli import main
        rc = main({argv!r})
        dt = time.perf_counter() - t
        # VmHWM: this process image's peak RSS (ru_maxrss would include the parent's
        # peak, inherited through fork + exec)
        hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
        rss = int(hwm[0].split()[1]) / 1024
        print(f"RESULT {{rc}} {{dt}} {{rss}}", file=sys.stderr)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=cwd, timeout=120, env={**os.environ, "MICROVBA_PROGRESS": "0"})
    last = [ln for ln in res.stderr.splitlines() if ln.startswith("RESULT")][-1].split()
    return int(last[1]), res.stderr, float(last[2]), float(last[3])


def test_sparse_nifti_header_bomb_refused_fast_and_small(tmp_path):
    try:
        bomb = _bomb(tmp_path / "dwi.nii")
    except OSError:
        pytest.skip("no sparse files here")
    before = _tree(tmp_path)
    rc, err, seconds, rss = _time_and_rss(
        ["fit", str(bomb), "--bval", str(bomb), "--bvec", str(bomb), "-o",
         str(tmp_path / "out"), "-q"], tmp_path)
    assert rc == 2, err
    assert "dwi.nii" in err and "of memory available" in err and "Traceback" not in err
    # memory is asserted (the 128 GB image is never read); the time (about 2-4 s on a loaded
    # machine, package import included) is measured in benchmarks/bench_refusals.py
    assert rss < 500, (seconds, rss)
    assert _tree(tmp_path) == before


def test_sparse_nifti_header_bomb_refused_by_dataset_validation(tmp_path):
    from microvba._validation import ProblemCollector
    from microvba.io.bids import DwiSeries, _check_dwi_image

    try:
        bomb = _bomb(tmp_path / "sub-01_dwi.nii")
    except OSError:
        pytest.skip("no sparse files here")
    found = ProblemCollector()
    assert _check_dwi_image(DwiSeries(bomb, bomb, bomb, None), found) is None
    assert "of memory available" in found.problems[0].problem
    assert found.problems[0].file == str(bomb)


def test_randomise_permutation_bomb_refused_fast_and_small(rdata):
    rc, err, seconds, rss = _time_and_rss(_randomise(rdata, "-n", "1000000000"), rdata)
    assert rc == 2 and "-n/--n-perm" in err and "59.6 GiB" in err
    assert rss < 500, (seconds, rss)  # 59.6 GiB never allocated; time: bench_refusals.py
    assert not (rdata / "out").exists()


def test_participants_tsv_pointing_at_dev_zero_refused(tmp_path):
    from microvba._validation import InputError
    from microvba.io.participants import read_participants

    link = tmp_path / "participants.tsv"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputError, match="a device, not a regular file") as exc:
        read_participants(link)
    assert str(link) in str(exc.value)


def test_participants_tsv_fifo_refused_without_hanging(tmp_path):
    from microvba._validation import InputError
    from microvba.io.participants import read_participants

    fifo = tmp_path / "participants.tsv"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"named pipe \(FIFO\)"):
        read_participants(fifo)  # would block forever if opened


def test_participants_tsv_larger_than_the_table_limit_refused(tmp_path):
    from microvba._resources import MAX_TABLE_BYTES
    from microvba._validation import InputError
    from microvba.io.participants import read_participants

    big = tmp_path / "participants.tsv"
    with open(big, "wb") as fh:
        fh.write(b"participant_id\n")
        fh.truncate(MAX_TABLE_BYTES + 1)
    with pytest.raises(InputError, match="more than the 64 MiB a table may have"):
        read_participants(big)


def test_randomise_design_fifo_refused(rdata, capsys):
    os.mkfifo(rdata / "fifo.tsv")
    refused(rdata, capsys, _randomise(rdata, design="fifo.tsv"), "fifo.tsv")


def test_bval_that_is_a_device_refused(tmp_path):
    from microvba._validation import InputError
    from microvba.io.gradients import read_bvals

    link = tmp_path / "dwi.bval"
    link.symlink_to("/dev/zero")
    with pytest.raises(InputError, match="not a regular file"):
        read_bvals(link)


# --- 4. output folder placement and the written configuration -------------------------------

@pytest.mark.parametrize("where", ["sub-01/dwi/out", "sub-99", "sub-01"])
def test_output_inside_raw_subject_or_named_like_one_refused(tmp_path, capsys, bids, where):
    err = refused(tmp_path, capsys, [str(bids), str(bids / where), "participant"],
                  str(bids / where))
    assert "derivatives" in err


def test_output_under_bids_derivatives_allowed():
    from microvba._validation import check_output_placement

    check_output_placement("/data/bids", "/data/bids/derivatives/microvba")
    check_output_placement("/data/bids", "/data/out")
    check_output_placement("/data/bids", "/data/bids-derivatives/sub-01")


def test_newline_in_output_path_written_as_valid_toml(tmp_path):
    import argparse

    from microvba.cli._config import tomllib, write_effective_config

    odd = str(tmp_path / "out\nwith\ttab \"quote\" \\ back\x01")
    path = write_effective_config(argparse.Namespace(output_dir=odd, n_perm=10),
                                  tmp_path / "config.toml")
    assert tomllib.loads(path.read_text()) == {"output_dir": odd, "n_perm": 10}


def test_binary_config_refused_cleanly(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    cfg.write_bytes(bytes(range(128, 256)) * 4)
    refused(tmp_path, capsys, ["fit", "x.nii", "--bval", "b", "--bvec", "v", "-o",
                               str(tmp_path / "o"), "--config", str(cfg)], str(cfg))


def test_fifo_config_refused_without_hanging(tmp_path, capsys):
    cfg = tmp_path / "run.toml"
    os.mkfifo(cfg)
    err = refused(tmp_path, capsys, ["fit", "x.nii", "--bval", "b", "--bvec", "v", "-o",
                                     str(tmp_path / "o"), "--config", str(cfg)], str(cfg))
    assert "named pipe" in err


# --- 5. signals and temporary folders --------------------------------------------------------

def test_sigterm_exits_143_with_a_message_and_cleans_temp_folders(tmp_path):
    import signal
    import time

    stale = tmp_path / "microvba-xfm-999999999-abc"  # a pid that cannot exist
    stale.mkdir()
    (stale / "x.mat").write_text("x")
    code = textwrap.dedent(f"""
        import sys, time, tempfile
        tempfile.tempdir = {str(tmp_path)!r}
        from microvba.cli import bids_app, main
        def slow(args):
            print("READY", file=sys.stderr, flush=True)
            time.sleep(60)
        bids_app.run = slow
        sys.exit(main(["B", "O", "participant", "--n-jobs", "1"]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    deadline = time.monotonic() + 60
    while "READY" not in line and time.monotonic() < deadline:
        line = proc.stderr.readline()
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 143
    assert "terminated (SIGTERM)" in err and "Traceback" not in err
    assert not stale.exists()


def test_clean_stale_tempdirs_keeps_folders_of_running_processes(tmp_path):
    from microvba.workflows.executor import clean_stale_tempdirs

    live = tmp_path / f"microvba-xfm-{os.getpid()}-a"
    dead = tmp_path / "microvba-xfm-999999999-b"
    other = tmp_path / "unrelated-999999999-c"
    for p in (live, dead, other):
        p.mkdir()
    assert clean_stale_tempdirs(str(tmp_path)) == 1
    assert live.exists() and other.exists() and not dead.exists()


# --- 6. offline and degraded machines ---------------------------------------------------------

def test_local_cluster_failure_falls_back_to_serial_with_a_hint(monkeypatch, caplog):
    from microvba.workflows import executor

    def no_network(n, memory_limit):
        raise OSError("Cluster failed to start: Timed out trying to connect to tcp://127.0.0.1")

    monkeypatch.setattr(executor, "_local_cluster", no_network)
    ex = executor.make_executor(n_jobs=2)
    assert isinstance(ex, executor.SerialExecutor)
    assert "--n-jobs 1" in caplog.text and "running serially" in caplog.text
    assert [r.value for r in ex.map(abs, [-1, -2])] == [1, 2]


def test_disk_full_names_the_path_and_the_fix(tmp_path, capsys, monkeypatch):
    import errno

    from microvba.cli import bids_app

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device",
                      str(tmp_path / "group" / "fa" / "fa_tstat1.nii.gz"))

    monkeypatch.setattr(bids_app, "run", full)
    assert main(["B", str(tmp_path), "group", "--score", "s"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "fa_tstat1.nii.gz" in err
    assert "free disk space" in err and "Traceback" not in err


def test_loopback_down_falls_back_at_once_in_a_network_namespace(tmp_path):
    import shutil

    if shutil.which("unshare") is None or subprocess.run(
            ["unshare", "-n", "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here (needs unshare and privileges)")
    code = ("from microvba._logging import configure; configure(0)\n"
            "from microvba.workflows.executor import make_executor, loopback_works\n"
            "assert not loopback_works()\n"
            "ex = make_executor(n_jobs=2)\n"
            "print(type(ex).__name__, [r.value for r in ex.map(abs, [-1, -2])])\n")
    res = subprocess.run(["unshare", "-n", sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "MICROVBA_PROGRESS": "0"})
    assert res.returncode == 0, res.stderr
    assert "SerialExecutor [1, 2]" in res.stdout
    assert "--n-jobs 1" in res.stderr and "loopback" in res.stderr


def test_loopback_works_on_a_normal_machine():
    from microvba.workflows.executor import loopback_works

    assert loopback_works()


@pytest.mark.parametrize("extra", [["--n-perm", "0"], ["--n-jobs", "0"],
                                   ["--n-subjects", "2"]], ids=lambda e: " ".join(e))
def test_demo_options_refused_before_simulating(tmp_path, capsys, extra):
    refused(tmp_path, capsys, ["demo", "--out", str(tmp_path / "demo"), *extra], extra[0])


def test_simulate_n_jobs_zero_refused(tmp_path, capsys):
    refused(tmp_path, capsys, ["simulate", str(tmp_path / "sim"), "--box", "--n-jobs", "0"],
            "--n-jobs")


def test_group_stack_larger_than_memory_refused(monkeypatch):
    from microvba._validation import InputError
    from microvba.workflows.group import GroupSettings, _check_stack_memory

    settings = GroupSettings(score="s", metrics=("fa", "md"))
    _check_stack_memory(30, 10_000, settings)  # 7 MB: fine
    monkeypatch.setenv("MICROVBA_MEMORY_LIMIT", str(2**30))
    with pytest.raises(InputError, match="--resolution/--metrics") as exc:
        _check_stack_memory(1000, 1_500_000, settings)  # 36 GB of float64
    assert "1000 subjects x 1500000 gray-matter voxels" in str(exc.value)
