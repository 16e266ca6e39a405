"""TOML --config files: keys mirror the long options, the command line wins, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from microvba._validation import InputError
from microvba.cli import build_bids_app_parser, main
from microvba.cli._config import apply_config, effective_config, write_effective_config

POS = ["BIDS", "OUT", "group"]


def _parse(tmp_path: Path, toml: str, extra: list[str] | None = None):
    cfg = tmp_path / "run.toml"
    cfg.write_text(toml)
    argv = [*POS, "--config", str(cfg), *(extra or [])]
    parser = build_bids_app_parser()
    apply_config(parser, argv)
    return parser.parse_args(argv)


def test_config_sets_defaults_and_cli_overrides(tmp_path):
    args = _parse(tmp_path, 'n_perm = 100\nscore = "cdrisc"\ncovariates = ["age", "sex"]\n'
                            'd-iso = 2.5e-3\nfwhm = 8\nforce = true\nmodels = "DTI"\n',
                  ["--n-perm", "7"])
    assert args.n_perm == 7  # the command line wins
    assert args.score == "cdrisc" and args.covariates == ["age", "sex"]
    assert args.d_iso == 2.5e-3  # dashes accepted
    assert args.fwhm == 8.0 and isinstance(args.fwhm, float)  # TOML integer -> float
    assert args.force is True and args.models == ["tensor"]  # alias resolved


def test_config_diffusivity_in_wrong_unit_is_explained(tmp_path):
    with pytest.raises(InputError, match="looks like um\\^2/ms"):
        _parse(tmp_path, "d_par = 1.7\n")


def test_no_config_changes_nothing():
    parser = build_bids_app_parser()
    apply_config(parser, POS)
    assert parser.parse_args(POS).n_perm == 5000


def test_single_label_becomes_a_list(tmp_path):
    assert _parse(tmp_path, 'participant_label = "01"\n').participant_label == ["01"]
    assert _parse(tmp_path, 'participant_label = ["01", "02"]\n').participant_label == [
        "01", "02"]


@pytest.mark.parametrize("toml, match", [
    ("n_perm = 5\nbogus = 1\nalso = 2\n", r"unknown keys \['also', 'bogus'\]"),
    ("n_perm = \n", "not valid TOML"),
    ('n_perm = "many"\n', r"key 'n_perm': invalid value 'many'"),
    ("n_perm = 10.5\n", "key 'n_perm' has a value of the wrong type"),
    ("n_perm = true\n", "key 'n_perm' has a value of the wrong type"),
    ('tissue = "csf"\n', r"key 'tissue' must be one of \['wm', 'gm'\]"),
    ('force = "yes"\n', "key 'force' must be true or false"),
    ("participant_label = [1, 2]\n", "key 'participant_label' has a value of the wrong type"),
    ("models = [1]\n", "key 'models' must be a list of strings"),
    ("score = 3\n", "key 'score' has a value of the wrong type"),
    ("[group]\nn_perm = 3\n", r"unknown keys \['group'\]"),
    ('verbose = 2\n', r"unknown keys \['verbose'\]"),  # display options are not config
])
def test_bad_config_is_input_error_naming_the_file(tmp_path, toml, match):
    with pytest.raises(InputError, match=match) as info:
        _parse(tmp_path, toml)
    assert info.value.problems[0].file == str(tmp_path / "run.toml")


def test_every_bad_key_is_reported(tmp_path):
    with pytest.raises(InputError, match=r"^2 problems") as info:
        _parse(tmp_path, 'n_perm = "x"\ntissue = "csf"\n')
    assert {p.problem.split("'")[1] for p in info.value.problems} == {"n_perm", "tissue"}


def test_missing_config_file(tmp_path):
    parser = build_bids_app_parser()
    with pytest.raises(InputError, match="cannot read the config file"):
        apply_config(parser, [*POS, f"--config={tmp_path / 'nope.toml'}"])


def test_cli_bad_config_exits_2_naming_the_file(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('tissue = "csf"\n')
    assert main([*POS, "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml" in err and "tissue" in err and "Traceback" not in err


def test_effective_config_round_trip(tmp_path):
    argv = [*POS, "--score", "cdrisc", "--covariates", "age,sex", "--n-perm", "123",
            "--participant-label", "01", "02", "--force", "--fwhm", "0", "--data-dir",
            str(tmp_path / 'data "x"'), "-v", "--slurm-memory", "8GB"]
    parser = build_bids_app_parser()
    args = parser.parse_args(argv)
    out = write_effective_config(args, tmp_path / "out" / "microvba_config.toml")
    text = out.read_text()
    assert text.startswith("# microvba effective configuration")
    keys = {line.split(" = ")[0] for line in text.splitlines()[1:]}
    assert "n_perm" in keys and not keys & {"verbose", "quiet", "debug", "config"}
    again = _parse(tmp_path, text)  # same positionals, everything else from the file
    assert effective_config(again) == effective_config(args)
    assert again.data_dir == tmp_path / 'data "x"'
