"""core/io/atomic.py: the one atomic writer every CSV/JSON/zip/cache file goes through."""

from __future__ import annotations

import csv
import zipfile

import pytest

from comet_studio.core.io.atomic import atomic_path, write_csv_atomic


def test_csv_is_written_whole_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    write_csv_atomic(target, [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}], ("a", "b"))
    write_csv_atomic(target, [{"a": 3, "b": "z", "extra": 0}], ("a", "b"), extrasaction="ignore")
    with open(target, newline="") as handle:
        assert list(csv.DictReader(handle)) == [{"a": "3", "b": "z"}]
    assert [p.name for p in target.parent.iterdir()] == ["table.csv"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "table.csv"
    write_csv_atomic(target, [{"a": 1}], ("a",))
    with pytest.raises(ValueError):  # a key the header lacks: DictWriter refuses it mid-table
        write_csv_atomic(target, [{"a": 2}, {"b": 3}], ("a",))
    assert target.read_text().splitlines() == ["a", "1"]
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_a_zip_through_atomic_path(tmp_path):
    target = tmp_path / "out.zip"
    with atomic_path(target) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        archive.writestr("x.txt", "hello")
    with zipfile.ZipFile(target) as archive:
        assert archive.read("x.txt") == b"hello"
    assert [p.name for p in tmp_path.iterdir()] == ["out.zip"]
