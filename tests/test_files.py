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
