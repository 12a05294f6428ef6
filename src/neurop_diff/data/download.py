"""Download, checksum and safe, atomic extraction of a zip archive (used for UCMerced).

Guarantees: the archive is streamed to a temporary ``.part`` file inside ``root`` and checked against its
md5 before anything is extracted; every member is checked before any is written (no absolute paths, no
``..``, no symlinks, nothing that resolves outside the destination); members are extracted into a hidden
temporary folder inside ``root`` and only then renamed into place. On any failure the temporary files and
folders are removed, so ``root`` never holds a half-downloaded archive or a half-extracted dataset.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import tempfile
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from neurop_diff.files import atomic_write

__all__ = ["ChecksumError", "UnsafeArchiveError", "download_and_extract", "download_url", "safe_extract_zip"]

_CHUNK = 1 << 20


class ChecksumError(ValueError):
    """The downloaded file's md5 differs from the expected one."""


class UnsafeArchiveError(ValueError):
    """An archive member would land outside the extraction folder (absolute path, ``..``, symlink)."""


def download_url(url: str, dest: str | Path, md5: str | None = None, progress: bool = True) -> Path:
    """Stream ``url`` to the file ``dest`` (via a temporary ``.part`` file beside it) and check its md5.

    On an md5 mismatch (``ChecksumError`` naming both checksums) or any other failure nothing is left behind.
    """
    dest = Path(dest)
    digest = hashlib.md5()
    request = urllib.request.Request(url, headers={"User-Agent": "neurop-diff"})
    with atomic_write(dest, suffix=".part", mode=0o600) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(request, timeout=60) as response:
            total = response.headers.get("Content-Length")
            with tqdm(
                total=int(total) if total else None,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"download {dest.name}",
                disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        actual = digest.hexdigest()
        if md5 is not None and actual != md5.lower():
            raise ChecksumError(
                f"md5 mismatch for {url}: expected {md5.lower()}, got {actual}; the download was removed"
            )
    return dest


def _check_member(info: zipfile.ZipInfo, dest: Path) -> None:
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UnsafeArchiveError(f"refusing archive member {name!r}: symbolic links are not extracted")
    posix = PurePosixPath(name.replace("\\", "/"))
    if posix.is_absolute() or (posix.parts and ":" in posix.parts[0]) or ".." in posix.parts:
        raise UnsafeArchiveError(f"refusing archive member {name!r}: its path leaves the extraction folder")
    target = (dest / posix).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise UnsafeArchiveError(f"refusing archive member {name!r}: it resolves to {target}, outside {dest}")


def safe_extract_zip(archive: str | Path, root: str | Path) -> list[Path]:
    """Extract ``archive`` into ``root`` atomically and safely; return the top-level paths created.

    All members are checked first (``UnsafeArchiveError`` naming the member). Extraction goes to a hidden
    temporary folder inside ``root``; its top-level entries are then renamed into ``root``. A top-level entry
    that already exists in ``root`` raises ``FileExistsError`` before anything is moved.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    moved: list[Path] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                _check_member(info, staging)
            zf.extractall(staging, members)
        entries = sorted(staging.iterdir())
        for entry in entries:
            if (root / entry.name).exists():
                raise FileExistsError(f"{root / entry.name} already exists; remove it to extract {archive}")
        for entry in entries:
            target = root / entry.name
            os.replace(entry, target)
            moved.append(target)
    except BaseException:
        for path in moved:  # roll back the entries already renamed into place
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return moved


def download_and_extract(
    url: str, root: str | Path, md5: str | None, filename: str | None = None, progress: bool = True
) -> list[Path]:
    """Download the zip at ``url`` into ``root``, verify ``md5`` (None skips it), extract it safely, delete it.

    Returns the top-level paths extracted into ``root``. ``filename`` names the temporary archive (default:
    the last component of the URL). See the module docstring for the atomicity guarantees.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = filename or Path(urllib.parse.urlparse(url).path).name or "download.zip"
    archive = root / f".{name}"
    try:
        download_url(url, archive, md5=md5, progress=progress)
        return safe_extract_zip(archive, root)
    finally:
        archive.unlink(missing_ok=True)
