"""atomic_dir: the one way datasets, checkpoints and bundles reach their final path."""

from __future__ import annotations

import pytest

from trm_kaggle.atomic import atomic_dir


def test_a_failed_block_leaves_the_old_directory_and_no_debris(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and (out / "old.txt").read_text() == "old"


@pytest.mark.parametrize("fsync", [False, True])
def test_a_finished_block_replaces_the_directory_whole(tmp_path, fsync):
    out = tmp_path / "deep" / "out"
    for content in ("first", "second"):
        with atomic_dir(out, fsync=fsync) as staging:
            (staging / "sub").mkdir()
            (staging / "sub" / "file.txt").write_text(content)
            assert not out.exists() or (out / "sub" / "file.txt").read_text() == "first"  # untouched until the end
    assert (out / "sub" / "file.txt").read_text() == "second"
    assert [p.name for p in out.parent.iterdir()] == ["out"]
