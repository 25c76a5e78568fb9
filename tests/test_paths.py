import json
import os
from pathlib import Path

import pytest

from mepo_lab import paths


def test_argument_beats_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MEPO_LAB_DATA", str(tmp_path / "env"))
    assert paths.data_home(tmp_path / "arg") == tmp_path / "arg"
    assert paths.data_home() == tmp_path / "env"


def test_checkout_data_dir_is_the_default(monkeypatch):
    monkeypatch.delenv("MEPO_LAB_DATA", raising=False)
    repo = Path(paths.__file__).resolve().parent.parent
    assert paths.data_home(create=False) == repo / "data"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_data_home_names_the_fix(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    with pytest.raises(PermissionError, match="not writable.*set MEPO_LAB_DATA"):
        paths.data_home(locked / "sub")


def test_data_home_that_is_a_file_names_the_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PermissionError, match="not writable.*set MEPO_LAB_DATA"):
        paths.data_home(blocker)


def test_atomic_json_replaces_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "r.json"
    paths.atomic_save_json(target, {"a": 1.0, "nan": float("nan")})
    paths.atomic_save_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_atomic_write_keeps_old_file_when_writer_fails(tmp_path):
    target = tmp_path / "r.json"
    paths.atomic_save_json(target, [1])

    def boom(handle):
        handle.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        paths.atomic_write(target, boom)
    assert json.loads(target.read_text()) == [1]
    assert len(list(tmp_path.iterdir())) == 1


def test_load_matching_json_reuses_only_a_readable_file_of_the_same_fingerprint(tmp_path):
    from mepo_lab.paths import atomic_save_json, load_matching_json

    path = tmp_path / "results.json"
    assert load_matching_json(path, "a") == {}  # missing
    atomic_save_json(path, {"fingerprint": "a", "rows": [1]})
    assert load_matching_json(path, "a") == {"fingerprint": "a", "rows": [1]}
    assert load_matching_json(path, "b") == {}  # another configuration
    path.write_text("{not json")
    assert load_matching_json(path, "a") == {}  # a torn or hand-edited file
