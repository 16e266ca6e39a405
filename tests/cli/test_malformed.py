"""The BIDS-App refuses every malformed dataset of the corpus before writing anything.

For each dataset of ``tests/io/bids_factory.py``'s ``MALFORMED`` corpus (every failure mode of
the validation, plus a wrong path and an empty folder), ``microvba BIDS OUT <level>`` must exit
with code 2, name the offending file on stderr without a traceback, and leave ``OUT`` exactly
as it was (no new file, not even a dataset_description.json or a log).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from microvba.cli import main


def _factory():
    path = Path(__file__).resolve().parents[1] / "io" / "bids_factory.py"
    name = "microvba_tests_bids_factory"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


factory = _factory()


def _run(tmp_path: Path, case, capsys) -> tuple[int, str, Path, set[str]]:
    bids = factory.build_case(tmp_path, case)
    out = tmp_path / "out"
    out.mkdir()
    (out / "existing.txt").write_text("left by the user\n")
    before = factory.tree(out)
    code = main([str(bids), str(out), case.level, *case.cli_args])
    err = capsys.readouterr().err
    return code, err, out, before


def test_corpus_size():
    assert len(factory.MALFORMED) >= 15


@pytest.mark.parametrize("name", sorted(factory.MALFORMED))
def test_malformed_dataset_exit_2_names_file_writes_nothing(tmp_path, capsys, name):
    case = factory.MALFORMED[name]
    code, err, out, before = _run(tmp_path, case, capsys)
    assert code == 2, err
    assert case.file in err
    assert "Traceback" not in err
    assert factory.tree(out) == before


def test_output_folder_is_not_created_for_invalid_input(tmp_path, capsys):
    """Default execution options (a local Dask cluster), and OUT not created."""
    out = tmp_path / "derivatives" / "microvba"
    code = main([str(tmp_path / "missing"), str(out), "participant"])
    assert code == 2
    assert "missing" in capsys.readouterr().err
    assert not out.exists()


def test_debug_shows_the_traceback(tmp_path):
    from microvba._validation import InputError

    with pytest.raises(InputError, match="does not exist"):
        main([str(tmp_path / "missing"), str(tmp_path / "out"), "participant", "--debug",
              "--n-jobs", "1"])
