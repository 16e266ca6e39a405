"""The group stage's family setting: CLI spellings, validation, and what it runs."""

from __future__ import annotations

import pytest

from microvba._validation import InputError
from microvba.cli import build_bids_app_parser, main
from microvba.workflows.group import GroupSettings, settings_from_args

BASE = ["bids", "out", "group", "--score", "resilience", "--metrics", "fa,md"]


def parse(*extra):
    return build_bids_app_parser().parse_args([*BASE, *extra])


@pytest.mark.parametrize(("argv", "family"), [
    ((), "all"),  # the unchanged command now controls the whole family
    (("--correct-across",), "all"),  # the old bare flag keeps its meaning
    (("--correct-across", "none"), "none"),
    (("--correct-across", "metrics"), "metrics"),
    (("--correct-across", "SIGNS"), "signs"),
])
def test_correct_across_spellings(argv, family):
    settings = settings_from_args(parse(*argv))
    assert settings.correct_across == family
    assert settings.correction.across.value == family
    assert settings.npc == ()


def test_npc_option():
    settings = settings_from_args(parse("--npc", "fisher,Tippett"))
    assert settings.npc == ("fisher", "tippett")
    # a bare flag before the positional-like value still parses as the default family
    assert settings.correct_across == "all"


@pytest.mark.parametrize("argv", [("--correct-across", "everything"), ("--npc", "stouffer")])
def test_bad_values_exit_2_naming_the_option(argv, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse: usage error, exit code 2
        main([*BASE, *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert argv[0] in err


def test_settings_validated_on_construction():
    assert GroupSettings(score="s", correct_across=True).correct_across == "all"
    assert GroupSettings(score="s", correct_across=False).correct_across == "none"
    with pytest.raises(InputError, match="--correct-across"):
        GroupSettings(score="s", correct_across="maps")
    with pytest.raises(InputError, match="--npc"):
        GroupSettings(score="s", npc=("mean",))
