"""``microvba report`` on a group folder with a damaged map or figure: exit 2 naming the file
(it ended with EOFError / UnidentifiedImageError, exit 1, no file named)."""

from __future__ import annotations

import shutil

import pytest

from microvba.cli import main


def _cut(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(("name", "damage", "text"), [
    ("fa/fa_tstat1.nii.gz", _cut, "truncated or corrupt image data"),
    ("fa/fa_pos_cluster-1_scatter.png", lambda p: p.write_bytes(b"xx"), "not a PNG image"),
    ("fa/fa_pos_cluster-1_scatter.png", _cut, "damaged PNG figure"),
])
def test_damaged_group_file_refused(report_out, tmp_path, capsys, name, damage, text):
    out = tmp_path / "out"
    shutil.copytree(report_out, out)
    (out / "group" / "report.html").unlink(missing_ok=True)  # built by another test
    damage(out / "group" / name)
    assert main(["report", str(out)]) == 2
    err = capsys.readouterr().err
    assert name.split("/")[-1] in err and text in err and "Traceback" not in err
    assert not (out / "group" / "report.html").exists()
