"""Unpacking a bundle refuses unsafe members also on Pythons without tarfile's data filter (3.11 < 3.11.4)."""
import io
import tarfile

import pytest

from submission.errors import HarnessError
from submission.packaging import unpack_checked


def _archive(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("has_filter", [True, False])
def test_unsafe_member_is_refused_with_or_without_the_data_filter(tmp_path, monkeypatch, has_filter):
    if not has_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    bad = _archive(tmp_path / "bad.tar.gz", {"bundle/../escaped.txt": b"x"})
    with pytest.raises(HarnessError, match="not a readable bundle archive"):
        unpack_checked(bad, tmp_path / "out_bad")
    assert not (tmp_path / "escaped.txt").exists()
    good = _archive(tmp_path / "good.tar.gz", {"bundle/SHA256SUMS": b"", "bundle/a.txt": b"a"})
    with pytest.raises(HarnessError, match="a.txt is not listed"):  # unpacked, then checked
        unpack_checked(good, tmp_path / "out_good")
