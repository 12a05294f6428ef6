"""SRMetrics in real Trainer runs: logged keys and values against independent numbers, files, OOD, LPIPS, sanity."""

from __future__ import annotations

import csv
import warnings

import lightning as L
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from PIL import Image
from torch.utils.data import DataLoader

from conftest import make_alexnet_file
from neurop_diff.callbacks import SRMetrics
from neurop_diff.evaluation import lpips as lp
from neurop_diff.evaluation.convention import MetricConvention, quantize, ssim_per_image, to_unit
from neurop_diff.evaluation.realism import lsd_hi, swd
from test_detail import numpy_share

H = 32
SCALES = (2.0, 4.1, 8.0)  # scale_max 5: x8 is out of distribution; x4.1 tests the non-integer key and crop
SCALE_MAX = 5.0


def delta(hr: torch.Tensor, amount: float) -> torch.Tensor:
    """A known, deterministic error pattern: +-amount in a (h + w + c) mod 3 pattern."""
    c, h, w = torch.meshgrid(*(torch.arange(n) for n in hr.shape[-3:]), indexing="ij")
    return amount * ((c + h + w) % 3 - 1).to(hr.dtype)


def make_batches() -> list[dict]:
    """Post-transfer batches (hr, lr in [-1,1], true and nominal scale, names); names arrive unsorted."""
    g = torch.Generator().manual_seed(0)
    names = ["d", "b", "a", "c"]
    batches = []
    for s in SCALES:
        for part in (names[:2], names[2:]):
            coarse = torch.rand(len(part), 3, 8, 8, generator=g)
            hr = (F.interpolate(coarse, size=(H, H), mode="bicubic", align_corners=False) * 1.6 - 0.8).clamp(
                -1, 1
            )
            h = round(H / s)
            lr = F.interpolate(hr, size=(h, h), mode="bicubic", antialias=True, align_corners=False).clamp(
                -1, 1
            )
            n = len(part)
            batches.append(
                {
                    "hr": hr,
                    "lr": lr,
                    "scale": torch.full((n,), H / h),
                    "nominal_scale": torch.full((n,), s),
                    "name": [f"img/{x}" for x in part],
                }
            )
    return batches


class FakeData(L.LightningDataModule):
    scale_max = SCALE_MAX

    def __init__(self) -> None:
        super().__init__()
        self.batches = make_batches()

    def train_dataloader(self):
        return DataLoader(self.batches[:1], batch_size=None)

    def val_dataloader(self):
        return DataLoader(self.batches, batch_size=None)

    def test_dataloader(self):
        return DataLoader(self.batches, batch_size=None)


class Tiny(L.LightningModule):
    """Own method "diffusion" = HR + delta(0.05); extra row "operator" = HR + delta(0.1)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def _sr(self, batch):
        hr = batch["hr"]
        return {
            "diffusion": (hr + delta(hr, 0.05)).clamp(-1, 1),
            "operator": (hr + delta(hr, 0.1)).clamp(-1, 1),
        }

    def training_step(self, batch, batch_idx):
        return (self.w - 1).pow(2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def validation_step(self, batch, batch_idx):
        return {"sr": self._sr(batch)}

    def test_step(self, batch, batch_idx):
        return {"sr": self._sr(batch)}


# ---- independent expectations (numpy float64, BasicSR definitions) ----


def _u8(x: torch.Tensor) -> np.ndarray:
    return np.round(np.clip((x.double().numpy() + 1) / 2, 0, 1) * 255)


def _prep(x: torch.Tensor, channel: str, border: int) -> np.ndarray:
    a = _u8(x)  # (3, H, W) on 0..255
    if channel == "y":
        a = (np.tensordot(np.array([65.481, 128.553, 24.966]), a / 255.0, axes=1) + 16.0)[None]
    return a[:, border : a.shape[1] - border, border : a.shape[2] - border] if border else a


def expected(channel: str = "rgb", borders=None) -> dict:
    """{(method, scale): [(psnr, ssim), ...]} computed without the package's convention code."""
    out: dict = {}
    for b in make_batches():
        s = round(float(b["nominal_scale"][0]), 2)
        border = borders[s] if borders else 0
        hr = b["hr"]
        preds = {
            "diffusion": (hr + delta(hr, 0.05)).clamp(-1, 1),
            "operator": (hr + delta(hr, 0.1)).clamp(-1, 1),
            "bicubic": F.interpolate(b["lr"], size=(H, H), mode="bicubic", align_corners=False).clamp(-1, 1),
        }
        for m, p in preds.items():
            for i in range(hr.shape[0]):
                a, t = _prep(p[i], channel, border), _prep(hr[i], channel, border)
                psnr = 10 * np.log10(255.0**2 / np.mean((a - t) ** 2))
                ssim = ssim_per_image(torch.from_numpy(a / 255)[None], torch.from_numpy(t / 255)[None]).item()
                out.setdefault((m, s), []).append((psnr, ssim))
    return out


def fmt(s: float) -> str:
    return {2.0: "2", 4.1: "4.1", 8.0: "8"}[s]


def trainer(tmp_path, callbacks, **kw) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=CSVLogger(tmp_path / "logs"),
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        **kw,
    )


@pytest.fixture(autouse=True)
def offline_lpips(monkeypatch, tmp_path):
    """Empty TORCH_HOME, no network, fresh once-per-process warning registry."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(lp, "_WARNED", set())

    def no_network(url, dest, timeout_s):
        raise OSError("offline (test)")

    monkeypatch.setattr(lp, "_download", no_network)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_validate_logs_writes_files_and_runs_without_lpips(tmp_path):
    cb = SRMetrics(grid_images=3)  # lpips=True, but TORCH_HOME has no backbone
    t = trainer(tmp_path, [cb])
    with pytest.warns(UserWarning, match="TORCH_HOME") as record:
        t.validate(Tiny(), datamodule=FakeData(), verbose=False)
    assert sum("LPIPS disabled" in str(w.message) for w in record) == 1
    m = {k: v.item() for k, v in t.callback_metrics.items()}
    exp = expected()
    for s in SCALES:
        for method, tag in (("diffusion", ""), ("operator", "_operator"), ("bicubic", "_bicubic")):
            vals = np.array(exp[(method, s)])
            assert m[f"val/psnr{tag}_x{fmt(s)}"] == pytest.approx(vals[:, 0].mean(), abs=1e-3)
            assert m[f"val/ssim{tag}_x{fmt(s)}"] == pytest.approx(vals[:, 1].mean(), abs=1e-4)
    own = np.array([v for s in SCALES for v in exp[("diffusion", s)]])
    assert m["val/psnr"] == pytest.approx(own[:, 0].mean(), abs=1e-3)
    assert m["val/ssim"] == pytest.approx(own[:, 1].mean(), abs=1e-4)
    assert m["val/psnr_x2"] > m["val/psnr_operator_x2"]  # the smaller known error scores higher
    assert not any("lpips" in k for k in m)
    # Detail measures (evaluation/detail.py) per method, and HR's share as the reference, at every scale.
    for s in SCALES:
        for tag in ("", "_operator", "_bicubic"):
            assert {f"val/{k}{tag}_x{fmt(s)}" for k in ("hf_share", "hf_psnr", "hf_ssim")} <= set(m)
        hr_shares = [
            numpy_share(_u8(b["hr"][i]) / 255)
            for b in make_batches()
            for i in range(2)
            if b["nominal_scale"][0] == s
        ]
        assert m[f"val/hf_share_hr_x{fmt(s)}"] == pytest.approx(np.mean(hr_shares), rel=1e-4)
        # the +-delta pattern adds high frequencies to the (smooth, synthetic) HR
        assert m[f"val/hf_share_hr_x{fmt(s)}"] < m[f"val/hf_share_x{fmt(s)}"]
        assert m[f"val/hf_psnr_x{fmt(s)}"] > m[f"val/hf_psnr_operator_x{fmt(s)}"]  # half the error amplitude
    assert {"val/hf_share", "val/hf_share_hr", "val/hf_share_operator", "val/hf_ssim_bicubic"} <= set(m)

    out = tmp_path / "logs" / "lightning_logs" / "version_0" / "results" / "val"
    assert cb.results.files["metrics.csv"] == out / "metrics.csv"
    table = read_csv(out / "metrics.csv")
    assert [(r["method"], r["scale"]) for r in table] == [
        (meth, fmt(s)) for s in SCALES for meth in ("bicubic", "operator", "diffusion")
    ]
    assert all("lpips" not in r for r in table)
    assert {"hf_share", "hf_share_hr", "hf_psnr", "hf_ssim"} <= set(table[0])
    assert {r["scale"]: r["ood"] for r in table} == {"2": "False", "4.1": "False", "8": "True"}
    assert all(r["n_images"] == "4" and r["convention"].startswith("RGB, no border crop") for r in table)
    row = next(r for r in table if r["method"] == "operator" and r["scale"] == "8")
    assert float(row["psnr"]) == pytest.approx(np.array(exp[("operator", 8.0)])[:, 0].mean(), abs=1e-3)
    per_image = read_csv(out / "per_image.csv")
    assert len(per_image) == 3 * 3 * 4 and {r["name"] for r in per_image} == {
        "img/a",
        "img/b",
        "img/c",
        "img/d",
    }
    md = (out / "metrics.md").read_text()
    assert "RGB, no border crop, 8-bit quantised, data range [0,1]" in md and "| n/a |" in md and "OOD" in md
    assert "| HF share | HF share HR | HF PSNR (dB) | HF SSIM |" in md
    assert {"hf_share", "hf_psnr"} <= set(per_image[0])
    assert Image.open(out / "metrics_vs_scale.png").size[0] > 500
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["x2.png", "x4.1.png", "x8.png"]

    # Grid: the first 3 names (a, b, c) in rows; columns lr, bicubic, operator, diffusion, hr.
    grid = np.asarray(Image.open(out / "grids" / "x2.png"))
    k = 4  # 32-pixel images are shown 4x (nearest) so panels are >= 128 pixels
    assert grid.shape[0] == 2 * 14 + 3 * (14 + 2 * k * H + 4)
    assert grid.shape[1] == 5 * (k * H + 4) + 4
    a = next(b for b in make_batches() if b["name"][0] == "img/a" and b["nominal_scale"][0] == 2.0)
    hr_a = _u8(a["hr"][0]).transpose(1, 2, 0)
    x0, y0 = 4 + 4 * (k * H + 4), 2 * 14 + 14  # HR column, first row
    patch = grid[y0 : y0 + k * H : k, x0 : x0 + k * H : k].astype(float)
    inside = np.ones((H, H), bool)
    inside[12:20, 12:20] = False  # the zoom box outline is drawn over the centre
    assert np.array_equal(patch[inside], hr_a[inside])
    zoomed = grid[y0 + k * H : y0 + 2 * k * H : 4 * k, x0 : x0 + k * H : 4 * k].astype(float)
    assert np.array_equal(zoomed, hr_a[12:20, 12:20])  # centre crop, 1/4 of the side, enlarged 4x more
    assert (
        cb.results.stage == "val"
        and len(cb.results.rows) == 36
        and set(cb.results.grids) == {"2", "4.1", "8"}
    )


def test_test_stage_with_local_lpips_y_channel_and_crop(tmp_path, capsys):
    make_alexnet_file(tmp_path / "torch_home")
    cb = SRMetrics(channel="y", crop_border="scale", out_dir=str(tmp_path / "res"), grid_images=0)
    t = trainer(tmp_path, [cb])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="LPIPS disabled")
        t.test(Tiny(), datamodule=FakeData(), verbose=False)
    m = {k: v.item() for k, v in t.callback_metrics.items()}
    exp = expected("y", borders={2.0: 2, 4.1: 5, 8.0: 8})
    for s in SCALES:
        vals = np.array(exp[("diffusion", s)])
        assert m[f"test/psnr_x{fmt(s)}"] == pytest.approx(vals[:, 0].mean(), abs=1e-3)
        assert m[f"test/ssim_x{fmt(s)}"] == pytest.approx(vals[:, 1].mean(), abs=1e-4)
    # LPIPS: uncropped RGB in [-1, 1] after 8-bit quantisation, per image, with the local backbone.
    model = lp.load_lpips("alex", download=False)
    q = lambda x: torch.from_numpy(_u8(x) / 127.5 - 1).float()  # noqa: E731
    by_scale: dict = {}
    for b in make_batches():
        sr = (b["hr"] + delta(b["hr"], 0.05)).clamp(-1, 1)
        vals = model(torch.stack([q(x) for x in sr]), torch.stack([q(x) for x in b["hr"]]))
        by_scale.setdefault(round(float(b["nominal_scale"][0]), 2), []).extend(vals.tolist())
    for s in SCALES:
        assert m[f"test/lpips_x{fmt(s)}"] == pytest.approx(np.mean(by_scale[s]), abs=1e-5)
        assert m[f"test/lpips_x{fmt(s)}"] > 0
    assert m["test/lpips"] == pytest.approx(np.mean([v for s in SCALES for v in by_scale[s]]), abs=1e-5)
    assert "test/lpips_bicubic_x8" in m and "test/lpips_operator" in m
    table = read_csv(tmp_path / "res" / "test" / "metrics.csv")
    assert all(float(r["lpips"]) > 0 for r in table)
    assert table[0]["convention"].startswith("Y (BT.601), border crop ceil(scale) px")
    assert "grids/x2.png" not in cb.results.files
    printed = capsys.readouterr().out
    assert "Y (BT.601)" in printed and "x8 OOD" in printed and str(tmp_path / "res" / "test") in printed
    assert "| LR-PSNR  SWD-l0  LSD-hi |" in printed  # the realism block of the console table
    # Y, border crop: x8 leaves 16 px, so the low-pass level (4 px) has no 7x7 patch: no swd_l2 there
    assert "test/swd_l0_x8" in m and "test/swd_l2_x8" not in m and "test/swd_l2_x2" in m
    assert {r["scale"]: r["swd_l2"] for r in table if r["method"] == "diffusion"}["8"] == ""
    header = next(line for line in printed.splitlines() if line.startswith("scale"))
    assert header.index("bicubic") < header.index("operator") < header.index("diffusion")


class SanityProbe(L.Callback):
    def __init__(self, metrics: SRMetrics) -> None:
        self.metrics = metrics
        self.seen = None

    def on_sanity_check_end(self, trainer, pl_module):
        out = self.metrics.resolve_out_dir(trainer, "val")
        self.seen = (out.exists(), self.metrics.results)


def test_sanity_check_does_not_leak_into_first_epoch(tmp_path):
    cb = SRMetrics(lpips=False, grid_images=1)
    probe = SanityProbe(cb)
    t = trainer(
        tmp_path,
        [cb, probe],
        max_epochs=1,
        limit_train_batches=1,
        num_sanity_val_steps=2,
        log_every_n_steps=1,
    )
    t.fit(Tiny(), datamodule=FakeData())
    assert probe.seen == (False, None)  # no files and no results from the sanity check
    summary = {(r["method"], r["scale"]): r["n_images"] for r in cb.results.summary}
    assert summary[("diffusion", 2.0)] == 4 and len(cb.results.rows) == 36
    exp = np.array(expected()[("diffusion", 2.0)])
    assert t.callback_metrics["val/psnr_x2"].item() == pytest.approx(exp[:, 0].mean(), abs=1e-3)
    assert cb.results.files["grids/x2.png"].is_file()


class BadModule(Tiny):
    def validation_step(self, batch, batch_idx):
        return {"operator": batch["hr"]}


def test_wrong_step_output_is_explained(tmp_path):
    with pytest.raises(ValueError, match=r"\{'sr': \{method"):
        trainer(tmp_path, [SRMetrics(lpips=False)]).validate(
            BadModule(), datamodule=FakeData(), verbose=False
        )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"grid_zoom": 0}, "grid_zoom"),
        ({"grid_images": -1}, "grid_images"),
        ({"crop_border": "edge"}, "crop"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SRMetrics(**kwargs)


# ---- realism measures (evaluation/realism.py) ----


def preds(hr: torch.Tensor, lr: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        "diffusion": (hr + delta(hr, 0.05)).clamp(-1, 1),
        "operator": (hr + delta(hr, 0.1)).clamp(-1, 1),
        "bicubic": F.interpolate(lr, size=hr.shape[-2:], mode="bicubic", align_corners=False).clamp(-1, 1),
    }


def per_scale() -> dict[float, tuple[torch.Tensor, torch.Tensor]]:
    """{scale: (hr, lr)} of the four images, in name order."""
    out = {}
    for s in SCALES:
        parts = [b for b in make_batches() if b["nominal_scale"][0] == s]
        names = [n for b in parts for n in b["name"]]
        order = sorted(range(len(names)), key=names.__getitem__)
        out[s] = tuple(torch.cat([b[k] for b in parts])[order] for k in ("hr", "lr"))
    return out


class OneBatchPerScale(FakeData):
    """The same images and scales, four per batch instead of two, in another order."""

    def __init__(self) -> None:
        super().__init__()
        merged = []
        for a, b in zip(self.batches[::2], self.batches[1::2], strict=True):
            merged.append({k: b[k] + a[k] if k == "name" else torch.cat([b[k], a[k]]) for k in a})
        self.batches = merged[::-1]


def test_realism_keys_values_files_and_batch_independence(tmp_path):
    cb = SRMetrics(lpips=False, grid_images=0)
    t = trainer(tmp_path, [cb])
    t.validate(Tiny(), datamodule=FakeData(), verbose=False)
    m = {k: v.item() for k, v in t.callback_metrics.items()}
    conv = MetricConvention()
    for s, (hr, lr) in per_scale().items():
        for method, sr in preds(hr, lr).items():
            tag = "" if method == "diffusion" else f"_{method}"
            # LR-PSNR of the saved (8-bit) SR: antialiased bicubic to the LR size, clamped, data range 1
            saved = quantize(to_unit(sr)) * 2 - 1
            down = F.interpolate(
                saved, size=lr.shape[-2:], mode="bicubic", antialias=True, align_corners=False
            )
            mse = ((down.clamp(-1, 1).double() - lr.double()) / 2).square().mean(dim=(1, 2, 3))
            assert m[f"val/lr_psnr{tag}_x{fmt(s)}"] == pytest.approx(
                (-10 * torch.log10(mse)).mean().item(), abs=1e-3
            )
            lsd = lsd_hi(conv.prepare(sr, s), conv.prepare(hr, s)).mean().item()
            assert m[f"val/lsd_hi{tag}_x{fmt(s)}"] == pytest.approx(lsd, abs=1e-4)
            for k, v in swd(conv.prepare(sr, s), conv.prepare(hr, s)).items():  # the set of the 4 images
                assert m[f"val/{k}{tag}_x{fmt(s)}"] == pytest.approx(v, rel=1e-5)
        # the known error pattern of twice the amplitude is farther from HR's patches
        assert m[f"val/swd_l0_operator_x{fmt(s)}"] > m[f"val/swd_l0_x{fmt(s)}"] > 0
    # overall: the mean over the scales (4 images each), as if every row carried its set's value
    assert m["val/swd_l0"] == pytest.approx(np.mean([m[f"val/swd_l0_x{fmt(s)}"] for s in SCALES]), rel=1e-6)
    assert {"val/lr_psnr", "val/lsd_hi_operator", "val/swd_l2_bicubic"} <= set(m)
    assert not any("seed_std" in k for k in m)  # the step output gave none

    out = cb.resolve_out_dir(t, "val")
    table = read_csv(out / "metrics.csv")
    assert {"lr_psnr", "swd_l0", "swd_l1", "swd_l2", "lsd_hi"} <= set(table[0]) and "seed_std" not in table[0]
    row = next(r for r in table if r["method"] == "operator" and r["scale"] == "4.1")
    assert float(row["swd_l0"]) == pytest.approx(m["val/swd_l0_operator_x4.1"], abs=1e-5)
    per_image = read_csv(out / "per_image.csv")
    assert {"lr_psnr", "lsd_hi"} <= set(per_image[0]) and not any(k.startswith("swd") for k in per_image[0])
    md = (out / "metrics.md").read_text()
    assert "| LR-PSNR (dB) | SWD l0 (x1e3) | SWD l1 (x1e3) | SWD l2 (x1e3) | LSD-hi (dB) |" in md
    assert cb.results.files["perception_distortion.png"] == out / "perception_distortion.png"
    assert Image.open(out / "perception_distortion.png").size == (640, 480)

    # Four images per batch in another order: the same numbers (descriptors are per image, sets by name)
    cb4 = SRMetrics(lpips=False, grid_images=0, write_files=False)
    t4 = trainer(tmp_path / "b4", [cb4])
    t4.validate(Tiny(), datamodule=OneBatchPerScale(), verbose=False)
    m4 = {k: v.item() for k, v in t4.callback_metrics.items()}
    for k in (k for k in m if any(x in k for x in ("swd", "lr_psnr", "lsd_hi"))):
        assert m4[k] == pytest.approx(m[k], rel=1e-6), k


class WithSeedStd(Tiny):
    """The own method reports a known seed spread per image: 0.01 for img/a ... 0.04 for img/d."""

    def validation_step(self, batch, batch_idx):
        spread = torch.tensor([0.01 * (ord(n[-1]) - ord("a") + 1) for n in batch["name"]])
        return {"sr": self._sr(batch), "seed_std": {"diffusion": spread}}


def test_seed_std_from_the_step_output(tmp_path):
    cb = SRMetrics(lpips=False, grid_images=0)
    t = trainer(tmp_path, [cb])
    t.validate(WithSeedStd(), datamodule=FakeData(), verbose=False)
    m = {k: v.item() for k, v in t.callback_metrics.items()}
    for s in SCALES:
        assert m[f"val/seed_std_x{fmt(s)}"] == pytest.approx(0.025, abs=1e-7)
    assert m["val/seed_std"] == pytest.approx(0.025, abs=1e-7)
    assert not any(k.startswith(("val/seed_std_operator", "val/seed_std_bicubic")) for k in m)
    out = cb.resolve_out_dir(t, "val")
    table = read_csv(out / "metrics.csv")
    assert {r["method"]: r["seed_std"] for r in table if r["scale"] == "2"} == {
        "bicubic": "",
        "operator": "",
        "diffusion": "0.025",
    }
    per_image = read_csv(out / "per_image.csv")
    assert {
        r["name"]: r["seed_std"] for r in per_image if r["method"] == "diffusion" and r["scale"] == "8"
    } == {
        "img/a": "0.01",
        "img/b": "0.02",
        "img/c": "0.03",
        "img/d": "0.04",
    }


class BadSeedStd(Tiny):
    def validation_step(self, batch, batch_idx):
        return {"sr": self._sr(batch), "seed_std": {"diffusion": torch.zeros(3)}}


def test_seed_std_of_the_wrong_length_is_refused(tmp_path):
    with pytest.raises(ValueError, match="seed_std"):
        trainer(tmp_path, [SRMetrics(lpips=False)]).validate(
            BadSeedStd(), datamodule=FakeData(), verbose=False
        )
