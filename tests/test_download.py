"""Download + md5 + safe extraction against a real HTTP server on 127.0.0.1, and UCMerced(download=True)."""

from __future__ import annotations

import hashlib
import http.server
import io
import stat
import threading
import urllib.error
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neurop_diff.data.datasets import UCMerced
from neurop_diff.data.download import (
    ChecksumError,
    UnsafeArchiveError,
    download_and_extract,
    safe_extract_zip,
)


def _tif_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
        buf, format="TIFF"
    )
    return buf.getvalue()


def _ucmerced_zip(path: Path, extra: dict[str, bytes] | None = None) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for c, name in enumerate(["agricultural", "beach"]):
            for i in range(5):
                zf.writestr(f"UCMerced_LandUse/Images/{name}/{name}{i:02d}.tif", _tif_bytes(10 * c + i))
        for member, data in (extra or {}).items():
            zf.writestr(member, data)
    return hashlib.md5(path.read_bytes()).hexdigest()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """Serves tmp_path/served on a random port; yields (base url, served folder, list of requested paths)."""
    served = tmp_path / "served"
    served.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served, requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_ucmerced_download_end_to_end(server, tmp_path, monkeypatch):
    base, served, requests = server
    md5 = _ucmerced_zip(served / "UCMerced_LandUse.zip")
    monkeypatch.setattr(UCMerced, "url", f"{base}/UCMerced_LandUse.zip")
    monkeypatch.setattr(UCMerced, "md5", md5)
    root = tmp_path / "data"
    ds = UCMerced(root, split="train", hr_size=8, download=True, progress=False)
    assert ds.names == [f"agricultural/agricultural{i:02d}" for i in range(3)] + [
        f"beach/beach{i:02d}" for i in range(3)
    ]
    assert ds.image_root == (root / "UCMerced_LandUse" / "Images").resolve()
    assert [p.name for p in root.iterdir()] == ["UCMerced_LandUse"]  # no archive, no staging folder left
    expected = np.asarray(Image.open(io.BytesIO(_tif_bytes(10))))
    assert np.array_equal(ds[3]["hr"].permute(1, 2, 0).numpy(), expected)
    assert requests == ["/UCMerced_LandUse.zip"]
    UCMerced(root, split="test", hr_size=8, download=True, progress=False)  # present: not downloaded again
    UCMerced.ensure_downloaded(root)
    assert requests == ["/UCMerced_LandUse.zip"]


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    base, served, _ = server
    good = _ucmerced_zip(served / "ok.zip")
    data = bytearray((served / "ok.zip").read_bytes())
    data[100] ^= 0xFF  # one flipped byte
    (served / "corrupt.zip").write_bytes(bytes(data))
    actual = hashlib.md5(bytes(data)).hexdigest()
    root = tmp_path / "data"
    with pytest.raises(ChecksumError) as err:
        download_and_extract(f"{base}/corrupt.zip", root, md5=good, progress=False)
    assert good in str(err.value) and actual in str(err.value)
    assert list(root.iterdir()) == []


def test_missing_url_leaves_nothing(server, tmp_path):
    base, _, _ = server
    root = tmp_path / "data"
    with pytest.raises(urllib.error.HTTPError):
        download_and_extract(f"{base}/nope.zip", root, md5=None, progress=False)
    assert list(root.iterdir()) == []


def test_parent_member_is_refused_over_http(server, tmp_path):
    base, served, _ = server
    md5 = _ucmerced_zip(served / "evil.zip", extra={"../evil.txt": b"gotcha"})
    root = tmp_path / "data"
    with pytest.raises(UnsafeArchiveError, match=r"\.\./evil\.txt"):
        download_and_extract(f"{base}/evil.zip", root, md5=md5, progress=False)
    assert list(root.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "served"]


def _zip_with(path: Path, member: zipfile.ZipInfo | str, data: bytes = b"x") -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok/file.txt", b"fine")
        zf.writestr(member, data)
    return path


@pytest.mark.parametrize("name", ["/abs/evil.txt", "ok/../../evil.txt", "..\\evil.txt", "C:/evil.txt"])
def test_unsafe_member_paths_are_refused(tmp_path, name):
    archive = _zip_with(tmp_path / "a.zip", zipfile.ZipInfo(name))
    root = tmp_path / "root"
    with pytest.raises(UnsafeArchiveError) as err:
        safe_extract_zip(archive, root)
    assert repr(name) in str(err.value)
    assert list(root.iterdir()) == []


def test_symlink_member_is_refused(tmp_path):
    link = zipfile.ZipInfo("ok/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip_with(tmp_path / "a.zip", link, b"/etc/passwd")
    root = tmp_path / "root"
    with pytest.raises(UnsafeArchiveError, match="ok/link"):
        safe_extract_zip(archive, root)
    assert list(root.iterdir()) == []


def test_existing_target_is_not_overwritten(tmp_path):
    archive = _zip_with(tmp_path / "a.zip", "other/file.txt")
    root = tmp_path / "root"
    (root / "other").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="other"):
        safe_extract_zip(archive, root)
    assert sorted(p.name for p in root.iterdir()) == ["other"]  # nothing moved, staging removed
    assert list((root / "other").iterdir()) == []
    assert sorted(p.name for p in safe_extract_zip(archive, tmp_path / "fresh")) == ["ok", "other"]
    assert (tmp_path / "fresh" / "ok" / "file.txt").read_bytes() == b"fine"


def test_datamodule_prepare_data_downloads_only(server, tmp_path, monkeypatch):
    from neurop_diff.data.datamodule import SRDataModule

    base, served, requests = server
    monkeypatch.setattr(UCMerced, "url", f"{base}/UCMerced_LandUse.zip")
    monkeypatch.setattr(UCMerced, "md5", _ucmerced_zip(served / "UCMerced_LandUse.zip"))
    root = tmp_path / "data"
    dm = SRDataModule(
        dataset="ucmerced",
        root=str(root),
        download=True,
        hr_size=8,
        val_scales=[2],
        num_workers=0,
        test_scales=[2],
        scale_max=2,  # 8 px images: LRs of at least 4 px
    )
    dm.prepare_data()
    assert (root / "UCMerced_LandUse" / "Images" / "beach" / "beach04.tif").is_file() and dm.datasets == {}
    dm.prepare_data()
    assert requests == ["/UCMerced_LandUse.zip"]
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 6 and len(dm.datasets["val"]) == 2
