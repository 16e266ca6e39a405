"""A truncated or corrupt database file is an input error naming it, with the fetch command."""

from __future__ import annotations

import pytest

from microvba._validation import InputError
from microvba.decode.database import FILES, load_database


@pytest.mark.parametrize("key", ["coordinates", "features", "vocab_metadata"])
def test_corrupt_database_file_names_it(shared_data, tmp_path, key):
    folder = tmp_path / "neurosynth"
    folder.mkdir()
    for k, name in FILES["neurosynth"].items():
        src = shared_data / "neurosynth" / name
        if k == key:
            raw = src.read_bytes()
            (folder / name).write_bytes(raw[: min(500, len(raw) // 2)])  # cut short
        else:
            (folder / name).symlink_to(src)
    with pytest.raises(InputError) as exc:
        load_database("neurosynth", tmp_path)
    (p,) = exc.value.problems
    assert p.file == str(folder / FILES["neurosynth"][key])
    assert "truncated or corrupt" in p.problem
    assert "microvba data fetch --database neurosynth" in p.fix
