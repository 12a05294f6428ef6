"""Datasets: layouts, HR protocol, splits, split files, image modes, decode cache and bad input."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neurop_diff.data.datasets import (
    AID,
    RSSCN7,
    CorruptImageError,
    ImageFolder,
    UCMerced,
    split_counts,
)

AID_CLASS_SIZES = [360, 310, 220, 400, 360, 260, 240, 350, 410, 300, 370, 250, 390, 280, 290,
                   340, 350, 390, 370, 420, 380, 260, 290, 410, 300, 300, 330, 290, 360, 420]  # fmt: skip


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _make_classes(root: Path, classes: dict[str, int], size: int = 8, ext: str = ".png") -> None:
    for c, (name, n) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(_rgb(size, size, 100 * c + i)).save(root / name / f"{name}{i:02d}{ext}")


def _tiff16_rgb(arr: np.ndarray) -> bytes:
    """A minimal uncompressed little-endian 16-bit RGB TIFF (Pillow cannot write one)."""
    h, w, _ = arr.shape
    data = arr.astype("<u2").tobytes()
    bps_off = 8 + 2 + 12 * 9 + 4
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, bps_off), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, bps_off + 6), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(data))]  # fmt: skip
    out = b"II" + struct.pack("<HI", 42, 8) + struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        short = typ == 3 and count == 1
        out += (
            struct.pack("<HHIHH", tag, typ, count, value, 0)
            if short
            else struct.pack("<HHII", tag, typ, count, value)
        )
    return out + struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16) + data


# ----------------------------------------------------------------------------- real images
def test_rsscn7_real_items_follow_hr_protocol(shared_data):
    ds = RSSCN7(shared_data / "rsscn7", split="val", max_images=7, progress=False)
    # round-robin over classes: one val image (the first of the val range, a049) from each of the 7 classes
    assert ds.names == ["aGrass/a049", "bField/b049", "cIndustry/c049", "dRiverLake/d049", "eForest/e049",
                        "fResident/f049", "gParking/g049"]  # fmt: skip
    item = ds[6]
    assert item["name"] == "gParking/g049"
    assert item["hr"].dtype == torch.uint8 and item["hr"].shape == (3, 256, 256)
    # independent HR protocol: the 400x400 JPEG, PIL bicubic to 256
    ref = np.asarray(
        Image.open(shared_data / "rsscn7/gParking/g049.jpg").convert("RGB").resize((256, 256), Image.BICUBIC)
    )
    assert np.array_equal(item["hr"].permute(1, 2, 0).numpy(), ref)
    # root may point at the folder above: the lowercase layout is found
    above = RSSCN7(shared_data, split="val", max_images=1, progress=False)
    assert above.names == ["aGrass/a049"] and above.image_root == (shared_data / "rsscn7").resolve()


def test_ucmerced_and_aid_real_subsets(shared_data):
    uc = UCMerced(shared_data / "ucmerced", split="train", progress=False)
    assert len(uc) == 8 and "airplane/airplane00" in uc.names and "airplane/airplane07" not in uc.names
    assert UCMerced(shared_data / "ucmerced", split="test", progress=False).names == ["airplane/airplane07"]
    aid = AID(shared_data / "aid", split="train", progress=False)  # 600x600 -> 256
    assert aid.names == ["Bridge/bridge_19", "Commercial/commercial_32", "Parking/parking_60"]
    assert aid.images.shape == (3, 256, 256, 3)
    src = np.asarray(Image.open(shared_data / "aid/Bridge/bridge_19.png").convert("RGB"))
    assert abs(aid.images[0].astype(float).mean() - src.mean()) < 1.0  # a resize, not a crop of a corner


def test_distributed_layouts(tmp_path, shared_data):
    _make_classes(tmp_path / "uc" / "UCMerced_LandUse" / "Images", {"beach": 5, "forest": 5}, ext=".tif")
    uc = UCMerced(tmp_path / "uc", split="train", hr_size=8, progress=False)
    assert uc.image_root.name == "Images" and len(uc) == 6
    rs = tmp_path / "rs" / "RSSCN7" / "aGrass"
    rs.mkdir(parents=True)
    for f in sorted((shared_data / "rsscn7" / "aGrass").glob("*.jpg"))[:5]:
        os.symlink(f, rs / f.name)
    assert RSSCN7(tmp_path / "rs", split="test", hr_size=32, progress=False).names == ["aGrass/a005"]
    _make_classes(tmp_path / "aid" / "AID", {"Airport": 5}, ext=".jpg")
    assert len(AID(tmp_path / "aid", split="val", hr_size=8, progress=False)) == 1


# ----------------------------------------------------------------------------- splits
def test_split_counts_and_documented_sizes():
    assert split_counts(100, (0.6, 0.2, 0.2)) == (60, 20, 20)
    assert split_counts(400, (0.6, 0.2, 0.2)) == (240, 80, 80)
    assert split_counts(5, (0.6, 0.2, 0.2)) == (3, 1, 1)
    assert split_counts(3, (0.6, 0.2, 0.2)) == (2, 0, 1)  # boundaries round(1.8)=2, round(2.4)=2
    assert split_counts(7, (0.5, 0.25, 0.25)) == (4, 1, 2)  # boundaries: 3.5 -> 4 (half up), 5.25 -> 5
    assert split_counts(10, (1.0, 0.0, 0.0)) == (10, 0, 0)
    assert [sum(x) for x in zip(*[split_counts(n, (0.6, 0.2, 0.2)) for n in [100] * 21], strict=True)] == [
        1260,
        420,
        420,
    ]
    assert [sum(x) for x in zip(*[split_counts(n, (0.6, 0.2, 0.2)) for n in [400] * 7], strict=True)] == [
        1680,
        560,
        560,
    ]
    aid = [split_counts(n, (0.6, 0.2, 0.2)) for n in AID_CLASS_SIZES]
    assert sum(AID_CLASS_SIZES) == 10000
    assert [sum(x) for x in zip(*aid, strict=True)] == [6000, 2000, 2000]


def test_fraction_splits_are_per_class_sorted_disjoint(tmp_path):
    _make_classes(tmp_path, {"a": 10, "b": 5})
    parts = {
        s: ImageFolder(tmp_path, split=s, hr_size=8, progress=False).names for s in ("train", "val", "test")
    }
    assert parts["train"] == [f"a/a{i:02d}" for i in range(6)] + [f"b/b{i:02d}" for i in range(3)]
    assert parts["val"] == ["a/a06", "a/a07", "b/b03"]
    assert parts["test"] == ["a/a08", "a/a09", "b/b04"]
    custom = ImageFolder(tmp_path, split="val", hr_size=8, fractions=(0.5, 0.5, 0.0), progress=False)
    assert custom.names == [f"a/a{i:02d}" for i in range(5, 10)] + ["b/b03", "b/b04"]
    with pytest.raises(ValueError, match="sum to 1"):
        ImageFolder(tmp_path, fractions=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match=r"'test' .* is empty"):
        ImageFolder(tmp_path, split="test", hr_size=8, fractions=(0.5, 0.5, 0.0), progress=False)


def test_split_files(tmp_path):
    data, splits = tmp_path / "data", tmp_path / "splits"
    _make_classes(data, {"a": 3, "b": 3})
    splits.mkdir()
    (splits / "train.txt").write_text("# train\nb/b02.png\na00\n\nb/b00  # comment\n")
    (splits / "val.txt").write_text("a01.tif\n")  # another extension than on disk: matched by stem
    ds = RSSCN7(data, split="train", hr_size=8, split_dir=splits, progress=False)
    assert ds.names == ["a/a00", "b/b00", "b/b02"]
    assert RSSCN7(data, split="val", hr_size=8, split_dir=splits, progress=False).names == ["a/a01"]
    with pytest.raises(FileNotFoundError, match=r"test\.txt"):
        RSSCN7(data, split="test", hr_size=8, split_dir=splits)
    (splits / "test.txt").write_text("a/a09\n")
    with pytest.raises(ValueError, match="'a/a09' matches no image"):
        RSSCN7(data, split="test", hr_size=8, split_dir=splits)


# ----------------------------------------------------------------------------- HR protocol and modes
def test_center_crop_and_resize_policy(tmp_path):
    wide = _rgb(6, 10, 1)
    (tmp_path / "c").mkdir()
    Image.fromarray(wide).save(tmp_path / "c" / "wide.png")
    native = ImageFolder(tmp_path, hr_size=None, fractions=(1, 0, 0), progress=False)
    assert np.array_equal(native.images[0], wide[:, 2:8])  # the centred 6x6 square
    up = ImageFolder(
        tmp_path, hr_size=12, fractions=(1, 0, 0), progress=False
    )  # smaller than hr_size: upsampled
    ref = np.asarray(Image.fromarray(np.ascontiguousarray(wide[:, 2:8])).resize((12, 12), Image.BICUBIC))
    assert np.array_equal(up.images[0], ref)
    Image.fromarray(_rgb(8, 8, 2)).save(tmp_path / "c" / "zz.png")
    with pytest.raises(ValueError, match=r"zz\.png.*hr_size=None"):
        ImageFolder(tmp_path, hr_size=None, fractions=(1, 0, 0), progress=False)


def test_image_modes_become_8bit_rgb(tmp_path):
    rgb = _rgb(4, 4, 3)
    grey = rgb[..., 0]
    g16 = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369  # 0..65535 in steps of 17 * 257
    c16 = np.random.default_rng(4).integers(0, 65536, (4, 4, 3)).astype(np.uint16)
    pal = Image.fromarray(rgb).quantize(colors=8)
    rgba = np.concatenate([rgb, np.full((4, 4, 1), 7, np.uint8)], axis=2)
    (tmp_path / "m").mkdir()
    Image.fromarray(grey).save(tmp_path / "m" / "grey.png")
    Image.fromarray(rgba).save(tmp_path / "m" / "rgba.png")
    pal.save(tmp_path / "m" / "pal.png")
    Image.fromarray(g16).save(tmp_path / "m" / "g16.png")
    Image.fromarray(g16).save(tmp_path / "m" / "g16t.tiff")
    (tmp_path / "m" / "c16.tif").write_bytes(_tiff16_rgb(c16))
    Image.fromarray(grey).convert("1").save(tmp_path / "m" / "bw.bmp")
    assert (
        Image.open(tmp_path / "m" / "g16.png").mode == "I;16"
        and Image.open(tmp_path / "m" / "pal.png").mode == "P"
    )
    ds = ImageFolder(tmp_path, hr_size=None, fractions=(1, 0, 0), progress=False)
    got = {name.split("/")[1]: ds[i]["hr"].permute(1, 2, 0).numpy() for i, name in enumerate(ds.names)}
    for arr in got.values():
        assert arr.dtype == np.uint8 and arr.shape == (4, 4, 3)
    assert np.array_equal(got["grey"], np.repeat(grey[..., None], 3, 2))
    assert np.array_equal(got["rgba"], rgb)  # alpha dropped, colours kept
    assert np.array_equal(got["pal"], np.asarray(pal.convert("RGB")))
    expected16 = np.repeat((np.arange(16).reshape(4, 4) * 17)[..., None], 3, 2).astype(
        np.uint8
    )  # scaled, not clipped
    assert np.array_equal(got["g16"], expected16) and np.array_equal(got["g16t"], expected16)
    assert np.array_equal(got["c16"], (c16 >> 8).astype(np.uint8))  # Pillow keeps the high byte of 16-bit RGB
    assert np.abs(got["c16"].astype(int) - np.round(c16 / 257)).max() <= 1
    assert set(np.unique(got["bw"])) <= {0, 255}


# ----------------------------------------------------------------------------- decode cache
def test_cache_is_written_once_and_memory_mapped(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    _make_classes(data, {"a": 5, "b": 5})
    first = ImageFolder(data, hr_size=8, cache_dir=cache, progress=False)
    files = sorted(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".npy"
    second = ImageFolder(data, hr_size=8, cache_dir=cache, progress=False)
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    assert np.array_equal(np.asarray(second.images), np.asarray(first.images))
    assert sorted(cache.iterdir()) == files
    in_ram = ImageFolder(data, hr_size=8, progress=False)
    assert np.array_equal(in_ram.images, np.asarray(second.images))
    # a changed file changes the key: a new cache with the new pixels
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(data / "a" / "a00.png")
    os.utime(data / "a" / "a00.png", ns=(1, 1))
    third = ImageFolder(data, hr_size=8, cache_dir=cache, progress=False)
    assert len(list(cache.iterdir())) == 2 and third[0]["hr"].sum() == 0
    assert ImageFolder(data, hr_size=4, cache_dir=cache, progress=False).images.shape == (6, 4, 4, 3)


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("cls", "needles"),
    [(UCMerced, ["download=True", "UCMerced_LandUse/Images"]),
     (AID, ["captain-whu.github.io/AID", "AID/<Class>/*.jpg"]),
     (RSSCN7, ["qinzoucn", "RSSCN7/<class>/*.jpg"])],
)  # fmt: skip
def test_missing_root_says_how_to_get_the_data(tmp_path, cls, needles):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        cls(missing)
    for needle in [str(missing), *needles]:
        assert needle in str(err.value)


def test_no_images_and_empty_class_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        RSSCN7(tmp_path / "empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a").mkdir()
    (tmp_path / "notes" / "a" / "readme.txt").write_text("not an image")
    with pytest.raises(FileNotFoundError, match="no images"):
        ImageFolder(tmp_path / "notes")
    _make_classes(tmp_path / "data", {"a": 3})
    (tmp_path / "data" / "b").mkdir()
    with pytest.raises(ValueError, match=r"class folder .*data/b holds no images"):
        RSSCN7(tmp_path / "data", hr_size=8)


def test_corrupt_file_is_named_at_indexing(tmp_path):
    _make_classes(tmp_path, {"a": 5})
    (tmp_path / "a" / "a03.png").write_bytes(
        b"this is not a png"
    )  # a03 is a val image: the header check covers every indexed file
    with pytest.raises(CorruptImageError, match=r"a03\.png"):
        RSSCN7(tmp_path, split="train", hr_size=8)


def test_truncated_file_is_named(tmp_path):
    _make_classes(tmp_path, {"a": 5})
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64, 9)).save(buf, format="JPEG", quality=95)
    (tmp_path / "a" / "a01.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "a" / "a01.png").unlink()
    with pytest.raises(CorruptImageError, match=r"a01\.jpg.*truncated"):
        RSSCN7(tmp_path, split="train", hr_size=8)


def test_duplicate_names_and_bad_arguments(tmp_path):
    _make_classes(tmp_path, {"a": 2})
    Image.fromarray(_rgb(8, 8, 0)).save(tmp_path / "a" / "a00.jpg")
    with pytest.raises(ValueError, match="share the name 'a/a00'"):
        RSSCN7(tmp_path)
    with pytest.raises(ValueError, match="split"):
        RSSCN7(tmp_path, split="training")
    with pytest.raises(ValueError, match="hr_size"):
        RSSCN7(tmp_path, hr_size=0)
    with pytest.raises(ValueError, match="max_images"):
        RSSCN7(tmp_path, max_images=0)
