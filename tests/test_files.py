import pytest

from softviz.files import atomic_file


def test_atomic_file_replaces_whole_or_keeps_the_old(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    with atomic_file(target) as tmp:
        open(tmp, "w").write("one")
    assert target.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "one"  # the old content survives
    assert [p.name for p in target.parent.iterdir()] == ["f.txt"]  # no temporary file left


def test_atomic_file_gets_the_mode_a_plain_open_would(tmp_path):
    """A new file gets 0666 minus the umask (not mkstemp's private 0600); a replaced file keeps its mode."""
    import os

    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    new = tmp_path / "new.txt"
    with atomic_file(new) as tmp:
        open(tmp, "w").write("x")
    assert new.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
    os.chmod(new, 0o640)
    with atomic_file(new) as tmp:
        open(tmp, "w").write("y")
    assert new.stat().st_mode & 0o777 == 0o640 and new.read_text() == "y"
