"""``microvba data fetch`` fetches every external file; ``demo`` fetches on first use
(issue 14, point 9). A local HTTP server on 127.0.0.1 plays the publishers; never the internet.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from microvba._validation import InputError
from microvba.cli import main
from microvba.decode.database import FILES
from microvba.decode.fetch import FETCHABLE, ensure_data, fetch_databases, file_url
from microvba.regions.atlases import (
    BRAINNETOME_SHA256,
    BRAINNETOME_URL,
    load_atlas,
    packaged_file,
)

BN = Path("atlases") / "brainnetome" / "BN_Atlas_246_1mm_spmgrid.nii.gz"


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/served`` on 127.0.0.1; yields (folder, url, list of requested paths)."""
    root = tmp_path / "served"
    root.mkdir()
    asked: list[str] = []

    class Quiet(http.server.SimpleHTTPRequestHandler):
        timeout = 30

        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802 - http.server's name
            asked.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}", asked
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


def _serve(root: Path, shared: Path, *names: str) -> None:
    for name in names:
        rel = BN.parent if name == "brainnetome" else Path(name)
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(shared / rel)


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def test_data_fetch_default_fetches_everything(shared_data, server, tmp_path, capsys):
    root, url, _ = server
    _serve(root, shared_data, "neurosynth", "neuroquery", "brainnetome")
    dest = tmp_path / "data"
    code = main(["data", "fetch", "--data-dir", str(dest), "--base-url", url, "-q"])
    assert code == 0, capsys.readouterr().err
    n = sum(len(f) for f in FILES.values()) + 1
    assert f"{n} files ready" in capsys.readouterr().out
    got = dest / BN
    assert hashlib.sha256(got.read_bytes()).hexdigest() == BRAINNETOME_SHA256
    assert FETCHABLE == ("neurosynth", "neuroquery", "brainnetome")


def test_fetched_atlas_loads_with_the_packaged_corrected_labels(shared_data, server, tmp_path):
    root, url, _ = server
    _serve(root, shared_data, "brainnetome")
    dest = tmp_path / "data"
    fetch_databases(["brainnetome"], dest, base_url=url)
    assert sorted(p.name for p in (dest / BN.parent).iterdir()) == [BN.name]  # image only
    atlas = load_atlas("brainnetome", dest)
    assert atlas.find("A7r", "L") == [125] and atlas.find("A7r", "R") == [126]
    # independent check of the label table against the image: A7r_L's centroid (Fan 2016 /
    # the shared README: MNI -16, -59, 62)
    data = np.asarray(atlas.img.dataobj)
    ijk = np.argwhere(data == 125).mean(axis=0)
    xyz = atlas.img.affine[:3, :3] @ ijk + atlas.img.affine[:3, 3]
    assert np.allclose(xyz, [-16, -59, 62], atol=4.0), xyz
    assert "SPL, Superior Parietal Lobule: A7r" in atlas.labels.loc[125, "description"]


def test_packaged_tables_agree_with_each_other():
    """Every id: the label table's subregion code and hemisphere equal the LUT's."""
    lut = {}
    for line in packaged_file("BN_Atlas_246_LUT.txt").read_text().splitlines():
        parts = line.split()
        if parts and parts[0].isdigit() and int(parts[0]) > 0:
            lut[int(parts[0])] = parts[1]
    table = pd.read_csv(packaged_file("BN_Atlas_246_labels.csv"), header=None,
                        names=["id", "code", "lobe", "gyrus", "sub"])
    assert len(lut) == len(table) == 246
    for i, code, sub in zip(table["id"], table["code"], table["sub"], strict=True):
        region, hemi = lut[i].rsplit("_", 1)
        assert sub.split(",")[0].strip() == region and code.split("_")[1] == hemi, i


def test_brainnetome_bad_checksum_keeps_nothing(server, tmp_path, capsys):
    root, url, _ = server
    (root / BN).parent.mkdir(parents=True)
    (root / BN).write_bytes(b"an older or altered atlas")
    dest = tmp_path / "data"
    code = main(["data", "fetch", "--database", "brainnetome", "--data-dir", str(dest),
                 "--base-url", url])
    err = capsys.readouterr().err
    assert code == 2 and "Checksum mismatch" in err and BN.name in err
    assert "Traceback" not in err
    assert not [p for p in dest.rglob("*") if p.is_file()]


def test_unknown_database_exits_2_before_any_download(server, tmp_path, capsys):
    _, url, asked = server
    dest = tmp_path / "data"
    code = main(["data", "fetch", "--database", "brainnetome,aal", "--data-dir", str(dest),
                 "--base-url", url])
    err = capsys.readouterr().err
    assert code == 2 and "'database'" in err and "brainnetome" in err
    assert "Traceback" not in err
    assert asked == [] and not dest.exists()


def test_publisher_url_is_pinned():
    assert file_url("brainnetome", BN.name) == BRAINNETOME_URL
    assert BRAINNETOME_URL.startswith("https://atlas.brainnetome.org/")
    assert file_url("brainnetome", BN.name, "http://m/") == f"http://m/{BN.as_posix()}"


def test_ensure_data_fetches_only_what_is_missing(shared_data, server, tmp_path):
    root, url, asked = server
    _serve(root, shared_data, "brainnetome")
    dest = tmp_path / "data"
    (dest / "neurosynth").mkdir(parents=True)
    for name in FILES["neurosynth"].values():
        (dest / "neurosynth" / name).symlink_to(shared_data / "neurosynth" / name)
    fetched = ensure_data(["brainnetome", "neurosynth"], dest, base_url=url)
    assert fetched == [dest / BN]
    assert len(asked) == 1
    assert ensure_data(["brainnetome", "neurosynth"], dest, base_url=url) == []
    assert len(asked) == 1  # present: the server is not asked again


def test_demo_offline_names_the_one_command(tmp_path, capsys):
    data, out = tmp_path / "empty_data", tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--data-dir", str(data),
                 "--base-url", "http://127.0.0.1:9"])  # nothing listens on port 9
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert (f"microvba data fetch --database brainnetome,neurosynth,neuroquery "
            f"--data-dir {data}") in err
    assert BN.name in err and "Traceback" not in err
    assert not out.exists() and _tree(data) == set()


def test_demo_no_decode_needs_only_the_atlas(tmp_path, capsys):
    data = tmp_path / "d"
    code = main(["demo", "--out", str(tmp_path / "o"), "--data-dir", str(data), "--no-decode",
                 "--base-url", "http://127.0.0.1:9"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and f"microvba data fetch --database brainnetome --data-dir {data}" in err


def test_missing_atlas_errors_name_the_fetch_command(tmp_path):
    from microvba.simulate.anatomy import atlas_path

    for call in (lambda: load_atlas("brainnetome", tmp_path),
                 lambda: atlas_path(tmp_path)):
        with pytest.raises(InputError, match="microvba data fetch --database brainnetome") as e:
            call()
        assert "shared data folder" not in str(e.value)
        assert BN.name in str(e.value)
