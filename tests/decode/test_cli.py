"""CLI: ``microvba decode`` and ``microvba data fetch`` (against a local HTTP server)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import nibabel as nib
import pandas as pd
import pytest

from microvba._validation import InputError
from microvba.cli import main
from microvba.decode.database import FILES
from microvba.decode.fetch import PUBLISHER_URLS, SHA256, fetch_databases, file_url


def test_decode_cli_writes_outputs(shared_data, map_cache, rois, roi_maps, tmp_path, capsys):
    roi = tmp_path / "amygdala.nii.gz"
    stat = tmp_path / "stat.nii.gz"
    nib.save(rois["amygdala"], roi)
    nib.save(roi_maps["amygdala"], stat)
    out = tmp_path / "out"
    code = main(["decode", "--roi", str(roi), "--map", str(stat), "--vocabulary", "lda50",
                 "--data-dir", str(shared_data), "--cache-dir", str(map_cache),
                 "--n-null", "100", "-o", str(out), "-q"])
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {"amygdala_vocab-lda50_decoding.tsv", "amygdala_vocab-lda50_mapdecoding.tsv",
            "amygdala_vocab-lda50_bar.png", "amygdala_vocab-lda50_polar.png",
            "amygdala_vocab-lda50_map_bar.png", "amygdala_vocab-lda50_decoding.json"} <= names
    table = pd.read_table(out / "amygdala_vocab-lda50_decoding.tsv")
    assert table["feature"].iloc[0] == "26_emotional_amygdala_negative"
    assert "26_emotional_amygdala_negative" in capsys.readouterr().out


def test_decode_cli_missing_database_exits_2(tmp_path, capsys, rois):
    roi = tmp_path / "roi.nii.gz"
    nib.save(rois["dCa_R"], roi)
    code = main(["decode", "--roi", str(roi), "--data-dir", str(tmp_path / "none"),
                 "-o", str(tmp_path / "o")])
    assert code == 2
    assert "microvba data fetch" in capsys.readouterr().err


def test_decode_cli_needs_an_input(tmp_path, capsys):
    code = main(["decode", "-o", str(tmp_path)])
    assert code == 2 and "Nothing to decode" in capsys.readouterr().err


@pytest.fixture
def file_server(tmp_path):
    """Serve a folder on 127.0.0.1 (a thread; shut down after the test, 30 s socket timeout)."""
    root = tmp_path / "served"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        timeout = 30

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_data_fetch_from_local_server(shared_data, file_server, tmp_path, capsys):
    root, url = file_server
    (root / "neurosynth").symlink_to(shared_data / "neurosynth")
    dest = tmp_path / "data"
    code = main(["data", "fetch", "--database", "neurosynth", "--data-dir", str(dest),
                 "--base-url", url, "-q"])
    assert code == 0
    for name in FILES["neurosynth"].values():
        got = dest / "neurosynth" / name
        assert hashlib.sha256(got.read_bytes()).hexdigest() == SHA256[name]
    assert "6 files ready" in capsys.readouterr().out
    # present files are kept (the server is not asked again)
    (root / "neurosynth").unlink(missing_ok=True)
    assert len(fetch_databases(["neurosynth"], dest, base_url=url)) == 6


def test_data_fetch_rejects_a_bad_checksum(file_server, tmp_path):
    root, url = file_server
    folder = root / "neurosynth"
    folder.mkdir()
    for name in FILES["neurosynth"].values():
        (folder / name).write_bytes(b"not the published file")
    dest = tmp_path / "data"
    with pytest.raises(InputError, match="Checksum mismatch"):
        fetch_databases(["neurosynth"], dest, base_url=url)
    assert not list((dest / "neurosynth").glob("*"))  # nothing half-written kept


def test_data_fetch_unreachable_server(tmp_path):
    with pytest.raises(InputError, match="Download of .* failed"):
        fetch_databases(["neuroquery"], tmp_path, base_url="http://127.0.0.1:9", timeout=5)


def test_publisher_urls():
    assert file_url("neurosynth", "a.tsv") == PUBLISHER_URLS["neurosynth"] + "a.tsv"
    assert PUBLISHER_URLS["neurosynth"].startswith("https://github.com/neurosynth/neurosynth-data")
    assert PUBLISHER_URLS["neuroquery"].startswith("https://github.com/neuroquery/neuroquery_data")
    assert file_url("neuroquery", "b", "http://m/") == "http://m/neuroquery/b"
    assert set(SHA256) == {n for f in FILES.values() for n in f.values()}


def test_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MICROVBA_DATA", str(tmp_path))
    with pytest.raises(InputError, match=str(Path(tmp_path) / "neurosynth")):
        from microvba.decode import load_database

        load_database("neurosynth")


# ------------------------------------------------------------------ figures in a child process


def _decode_args(roi, shared_data, map_cache, out):
    return ["decode", "--roi", str(roi), "--data-dir", str(shared_data), "--cache-dir",
            str(map_cache), "--n-null", "50", "-o", str(out), "-q"]


@pytest.fixture
def amygdala_roi(rois, tmp_path):
    roi = tmp_path / "amygdala.nii.gz"
    nib.save(rois["amygdala"], roi)
    return roi


def test_decode_figures_from_the_child_equal_those_drawn_in_process(
        shared_data, map_cache, amygdala_roi, tmp_path, monkeypatch):
    """The forked figure process writes the same PNG files, byte for byte, as drawing in
    the command's own process (no fork available)."""
    from microvba.decode import writer

    # threads left by other tests in this process would turn the fork off: not here
    monkeypatch.setattr(writer.threading, "active_count", lambda: 1)
    forked = writer.FigureProcess()
    assert forked.forked  # the child route is exercised
    forked.close()
    out_child, out_here = tmp_path / "child", tmp_path / "here"
    assert main(_decode_args(amygdala_roi, shared_data, map_cache, out_child)) == 0
    monkeypatch.delattr(writer.os, "fork")
    assert not writer.FigureProcess().forked
    assert main(_decode_args(amygdala_roi, shared_data, map_cache, out_here)) == 0
    names = sorted(p.name for p in out_child.iterdir())
    assert names == sorted(p.name for p in out_here.iterdir())
    pngs = [n for n in names if n.endswith(".png")]
    assert pngs == ["amygdala_vocab-lda50_bar.png", "amygdala_vocab-lda50_polar.png"]
    for name in pngs + ["amygdala_vocab-lda50_decoding.tsv"]:
        assert (out_child / name).read_bytes() == (out_here / name).read_bytes(), name


def test_decode_figure_error_in_the_child_fails_the_command(
        shared_data, map_cache, amygdala_roi, tmp_path, monkeypatch, caplog):
    """An error while drawing in the child is reported by the command (exit 1, the
    figure named) and no sidecar marks the output complete."""
    from microvba.decode import figures, writer

    def broken(table, top=10):
        raise ValueError("no polar today")

    monkeypatch.setattr(writer.threading, "active_count", lambda: 1)  # fork
    monkeypatch.setattr(figures, "polar_plot", broken)  # inherited by the forked child
    out = tmp_path / "out"
    assert main(_decode_args(amygdala_roi, shared_data, map_cache, out)) == 1
    assert "amygdala_vocab-lda50_polar.png" in caplog.text and "no polar today" in caplog.text
    assert not (out / "amygdala_vocab-lda50_decoding.json").exists()
    assert not (out / "amygdala_vocab-lda50_polar.png").exists()
    assert (out / "amygdala_vocab-lda50_bar.png").exists()  # drawn by the other process


def test_decode_figure_child_failing_before_the_tables_fails_the_command(
        shared_data, map_cache, amygdala_roi, tmp_path, monkeypatch, caplog):
    """A child that stops before reading the tables (its matplotlib setup failed): the
    command still ends, with exit 1 and the child's error, and no figure or sidecar."""
    from microvba.decode import figures, writer

    def no_fonts(texts, size):
        raise OSError("no fonts here")

    monkeypatch.setattr(writer.threading, "active_count", lambda: 1)  # fork
    monkeypatch.setattr(figures, "_text_width_pt", no_fonts)
    out = tmp_path / "out"
    assert main(_decode_args(amygdala_roi, shared_data, map_cache, out)) == 1
    assert "no fonts here" in caplog.text
    assert not list(out.glob("*.png")) and not list(out.glob("*.json"))


def test_decode_failure_before_the_tables_leaves_no_figure(
        shared_data, map_cache, amygdala_roi, tmp_path, monkeypatch, capsys):
    """Invalid input found after the figure process started: exit 2, no file written, the
    child stopped (no figure appears later)."""
    import os

    from microvba.decode.decoder import Decoder

    def refuse(self, *args, **kwargs):
        raise InputError("refused for the test", file="roi", fix="none")

    monkeypatch.setattr(Decoder, "decode_roi", refuse)
    out = tmp_path / "out"
    assert main(_decode_args(amygdala_roi, shared_data, map_cache, out)) == 2
    assert "refused for the test" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    with pytest.raises(ChildProcessError):  # the child was reaped: no process left
        os.waitpid(-1, os.WNOHANG)
