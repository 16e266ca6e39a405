import subprocess
import sys

import pytest

from microvba import __version__
from microvba.cli import SUBCOMMANDS, main


def test_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert __version__ in capsys.readouterr().out


def test_bids_app_help_lists_subcommands(capsys):
    try:
        main(["--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    for name in ("participant", "group", "bids_dir"):
        assert name in out
    assert "fit" in out


def test_console_script_participant_help():
    res = subprocess.run([sys.executable, "-m", "microvba.cli", "BIDS", "OUT", "participant",
                          "--help"], capture_output=True, text=True)
    assert res.returncode == 0
    assert "--participant-label" in res.stdout


def test_output_equal_to_input_refused(tmp_path):
    assert main([str(tmp_path), str(tmp_path), "participant"]) == 2


def test_every_subcommand_module_has_contract():
    import importlib

    for name, mod in SUBCOMMANDS.items():
        try:
            m = importlib.import_module(f"microvba.cli.{mod}")
        except ModuleNotFoundError:
            continue  # stage not built yet
        assert callable(m.add_arguments) and callable(m.run) and m.HELP, name


def test_output_folder_that_is_a_file_exits_2_before_validation(tmp_path, capsys):
    out = tmp_path / "derivatives"
    out.write_text("not a folder")
    assert main([str(tmp_path / "no-such-dataset"), str(out), "participant", "-q"]) == 2
    err = capsys.readouterr().err
    assert "is an existing file, not a folder" in err and str(out) in err
    assert out.read_text() == "not a folder"


def test_dask_dashboard_port_warning_is_silenced(tmp_path):
    """A second local Dask cluster moves its dashboard to another port: no warning shown."""
    import warnings

    with warnings.catch_warnings():
        assert main(["fit", str(tmp_path / "x.nii.gz"), "--bval", "b", "--bvec", "v",
                     "-o", str(tmp_path / "o"), "-q"]) == 2
        assert any(f[0] == "ignore" and f[1] is not None and f[1].match(
            "Port 8787 is already in use.\nPerhaps you already have a cluster running?")
            for f in warnings.filters)


def test_model_names_accept_dti_and_any_case():
    from microvba.cli._types import parse_models

    assert parse_models("DTI, NODDI") == ["tensor", "noddi"]
    assert parse_models("tensor,dti") == ["tensor"]


def test_diffusivity_in_um2_per_ms_is_explained(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit) as exc:
        main(["fit", "dwi.nii.gz", "--bval", "b", "--bvec", "v", "-o", str(tmp_path),
              "--d-par", "1.7"])
    assert exc.value.code == 2
    assert "pass 1.7e-3" in capsys.readouterr().err
    from microvba.cli._types import diffusivity

    assert diffusivity("1.7e-3") == 1.7e-3


def test_data_fetch_into_a_file_fails_before_downloading(tmp_path, capsys):
    f = tmp_path / "data"
    f.write_text("x")
    assert main(["data", "fetch", "--data-dir", str(f), "--base-url", "http://invalid.",
                 "-q"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "invalid." not in err


def test_report_without_group_results_exits_2_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "sub-01").mkdir()
    assert main(["report", str(tmp_path), "-q"]) == 2
    assert "run the group stage first" in capsys.readouterr().err.lower()
    assert not (tmp_path / "group").exists()


def test_group_metrics_unknown_and_defaults(tmp_path, capsys, caplog):
    import pytest

    from microvba.cli.bids_app import _default_metrics

    with pytest.raises(SystemExit) as exc:
        main(["BIDS", str(tmp_path / "out"), "group", "--metrics", "fa,xyz"])
    assert exc.value.code == 2
    assert "unknown metric(s) ['xyz']" in capsys.readouterr().err
    out = tmp_path / "out"
    d = out / "sub-01" / "dwi"
    d.mkdir(parents=True)
    assert _default_metrics(out) == ["fa", "md", "rd", "ad", "icvf", "odi", "isovf"]
    (d / "sub-01_space-MNI152NLin2009aSym_model-tensor_param-fa_dwimap.nii.gz").touch()
    assert _default_metrics(out) == ["fa", "md", "rd", "ad"]  # a tensor-only participant run
    assert "no NODDI map" in caplog.text
    (d / "sub-01_space-MNI152NLin2009aSym_model-noddi_param-icvf_dwimap.nii.gz").touch()
    assert _default_metrics(out) == ["fa", "md", "rd", "ad", "icvf", "odi", "isovf"]


@pytest.mark.parametrize("sub", [["randomise", "-i", "a", "-m", "m", "-d", "d", "-o", "o",
                                  "--contrast", "s"],
                                 ["decode", "--roi", "r", "-o", "o"], ["simulate", "o"]])
def test_negative_seed_is_an_argument_error(sub, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*sub, "--seed", "-1"])
    assert exc.value.code == 2
    assert "is negative" in capsys.readouterr().err


@pytest.mark.parametrize("scale", ["0", "-1", "3.5", "20"])
def test_demo_bad_effect_scale_exits_2_and_writes_nothing(tmp_path, capsys, scale):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--effect-scale", scale]) == 2
    assert "--effect-scale" in capsys.readouterr().err
    assert not out.exists()
