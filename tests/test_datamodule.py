"""SRDataModule on real RSSCN7 images: pairs per mode, one scale per batch, determinism, eval coverage, args."""

from __future__ import annotations

import math
from collections import Counter

import lightning as L
import pytest
import torch

from neurop_diff.data.datamodule import SRDataModule
from neurop_diff.data.degradation import bicubic_resize, degrade, sample_scale


def _dm(shared_data, **kwargs) -> SRDataModule:
    args = dict(dataset="rsscn7", root=str(shared_data / "rsscn7"), max_train_images=8, max_eval_images=4,
                batch_size=4, num_workers=0, lr_patch=16, val_scales=[2, 3, 4], seed=0)  # fmt: skip
    args.update(kwargs)
    return SRDataModule(**args)


@pytest.fixture(scope="module")
def fitted(shared_data):
    dm = _dm(shared_data)
    dm.setup("fit")
    return dm


def _first_batches(dm: SRDataModule, n: int) -> list[dict]:
    return [batch for _, batch in zip(range(n), dm.train_dataloader(), strict=False)]


def _dihedral(x: torch.Tensor, hflip: bool, vflip: bool, transpose: bool) -> torch.Tensor:
    if hflip:
        x = torch.flip(x, dims=[-1])
    if vflip:
        x = torch.flip(x, dims=[-2])
    return x.transpose(-1, -2) if transpose else x


def test_patch_pairs_shapes_ranges_and_crops(fitted):
    raw = _first_batches(fitted, 3)
    fitted.generator.manual_seed(11)
    pairs = [fitted.on_after_batch_transfer(dict(b), 0) for b in raw]
    replay = torch.Generator().manual_seed(11)
    scales = set()
    for batch, pair in zip(raw, pairs, strict=True):
        assert set(pair) == {"hr", "lr", "scale", "name"}
        assert pair["name"] == batch["name"]
        # replay the documented draws (scale, tops, lefts, flips) and rebuild the crops independently
        s = sample_scale(1.0, 8.0, replay)
        side = round(16 * s)
        tops = torch.randint(0, 256 - side + 1, (4,), generator=replay).tolist()
        lefts = torch.randint(0, 256 - side + 1, (4,), generator=replay).tolist()
        flips = (torch.rand((4, 3), generator=replay) < 0.5).tolist()
        assert pair["hr"].shape == (4, 3, side, side) and pair["hr"].dtype == torch.float32
        assert pair["lr"].shape == (4, 3, 16, 16)
        assert (
            pair["hr"].min() >= -1
            and pair["hr"].max() <= 1
            and pair["lr"].min() >= -1
            and pair["lr"].max() <= 1
        )
        assert pair["scale"].dtype == torch.float32 and pair["scale"].shape == (4,)
        assert torch.all(pair["scale"] == torch.tensor(side / 16, dtype=torch.float32))  # true scale H / h
        for i in range(4):
            crop = batch["hr"][i, :, tops[i] : tops[i] + side, lefts[i] : lefts[i] + side]
            expected = _dihedral(crop, *flips[i]).float() / 127.5 - 1
            assert torch.equal(pair["hr"][i], expected)
        # the LR is the bicubic downsampling of the returned (augmented) HR: flips keep LR and HR consistent
        assert torch.equal(pair["lr"], bicubic_resize(pair["hr"], (16, 16)).clamp(-1, 1))
        scales.add(side)
    assert len(scales) > 1  # a new scale every batch


def test_full_mode_and_no_augment(shared_data, fitted):
    dm = _dm(shared_data, mode="full", augment=False)
    dm.datasets = fitted.datasets  # same decoded images; skip decoding twice
    raw = _first_batches(dm, 2)
    for batch in raw:
        pair = dm.on_after_batch_transfer(dict(batch), 0)
        h = pair["lr"].shape[-1]
        s = 256 / h
        assert pair["hr"].shape == (4, 3, 256, 256)
        assert torch.equal(pair["hr"], batch["hr"].float() / 127.5 - 1)  # whole image, not augmented
        assert pair["lr"].shape == (4, 3, h, h) and s >= 1 and h >= round(256 / 8)
        assert torch.allclose(pair["scale"], torch.full((4,), s))
        assert torch.equal(pair["lr"], degrade(pair["hr"], pair["scale"][0].item())[0])


def test_crop_larger_than_image_shrinks_the_lr_patch(shared_data, fitted):
    for scale, lr_patch, hr_side in ((8.0, 32, 256), (7.5, 34, 255)):
        dm = _dm(shared_data, lr_patch=48, scale_min=scale, scale_max=scale)  # 48 * s > 256
        pair = dm.make_train_pair(next(iter(fitted.train_dataloader())), dm.generator)
        assert pair["lr"].shape[-2:] == (lr_patch, lr_patch) and pair["hr"].shape[-2:] == (hr_side, hr_side)
        assert pair["scale"][0].item() == pytest.approx(hr_side / lr_patch)


def test_same_seed_same_batches_and_state_dict_resume(shared_data, fitted):
    def run(seed: int, n: int = 3):
        dm = _dm(shared_data, seed=seed)
        dm.datasets = fitted.datasets
        return dm, [dm.on_after_batch_transfer(b, 0) for b in _first_batches(dm, n)]

    _, a = run(0)
    _, b = run(0)
    for x, y in zip(a, b, strict=True):
        assert x["name"] == y["name"] and torch.equal(x["hr"], y["hr"]) and torch.equal(x["lr"], y["lr"])
    _, c = run(1)
    assert [p["hr"].shape for p in c] != [p["hr"].shape for p in a]

    dm1 = _dm(shared_data)
    batch = next(iter(fitted.train_dataloader()))
    dm1.make_train_pair(batch, dm1.generator)
    state = dm1.state_dict()
    expected = [dm1.make_train_pair(batch, dm1.generator) for _ in range(2)]
    dm2 = _dm(shared_data, seed=5)
    dm2.load_state_dict(state)
    resumed = [dm2.make_train_pair(batch, dm2.generator) for _ in range(2)]
    for x, y in zip(expected, resumed, strict=True):
        assert torch.equal(x["hr"], y["hr"]) and torch.equal(x["lr"], y["lr"])


def test_eval_covers_every_image_scale_once_deterministically(shared_data, fitted):
    dm = _dm(shared_data, eval_batch_size=3, test_scales=[2, 3.1, 9])
    dm.datasets = fitted.datasets
    dm.setup("test")
    for split, loader, scales in (
        ("val", dm.val_dataloader, [2.0, 3.0, 4.0]),
        ("test", dm.test_dataloader, [2.0, 3.1, 9.0]),
    ):
        first = [dm.on_after_batch_transfer(b, 0) for b in loader()]
        second = [dm.on_after_batch_transfer(b, 0) for b in loader()]
        seen, order = Counter(), []
        for p, q in zip(first, second, strict=True):
            assert set(p) == {"hr", "lr", "scale", "nominal_scale", "name"}
            assert torch.equal(p["lr"], q["lr"]) and p["name"] == q["name"]
            s = p["nominal_scale"]
            assert s.dtype == torch.float32 and torch.all(s == s[0])  # one scale per batch
            h = round(256 / s[0].item())
            assert p["hr"].shape[-2:] == (256, 256) and p["lr"].shape[-2:] == (h, h)
            assert torch.allclose(p["scale"], torch.full_like(p["scale"], 256 / h))
            assert torch.equal(p["lr"], bicubic_resize(p["hr"], (h, h)).clamp(-1, 1))
            seen.update((name, round(s[0].item(), 4)) for name in p["name"])
            order.append(round(s[0].item(), 4))
        names = dm.datasets[split].names
        assert len(names) == 4
        assert seen == Counter({(n, s): 1 for n in names for s in scales})  # every (image, scale) once
        assert order == [s for s in scales for _ in range(2)]  # scale-major, ceil(4 / 3) batches per scale
    assert dm.test_scales == [2.0, 3.1, 9.0] and dm.scale_max == 8.0 and dm.val_scales == [2.0, 3.0, 4.0]


def test_predict_uses_the_test_split(shared_data, fitted):
    dm = _dm(shared_data, test_scales=[4])
    dm.setup("predict")
    assert set(dm.datasets) == {"test"}
    batch = next(iter(dm.predict_dataloader()))
    assert (
        batch["nominal_scale"].tolist() == [4.0] * 4
        and len(set(batch["name"]) & set(fitted.datasets["val"].names)) == 0
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"scale_min": 0.5}, "scale_min"), ({"scale_min": 4, "scale_max": 2}, "scale_max"),
     ({"scale_max": math.nan}, "scale_max"), ({"scale_max": math.inf}, "scale_max"),
     ({"val_scales": [2, 0.5]}, "val_scales"), ({"test_scales": [math.nan]}, "test_scales"),
     ({"val_scales": []}, "val_scales"), ({"lr_patch": 0}, "lr_patch"), ({"batch_size": 0}, "batch_size"),
     ({"eval_batch_size": 0}, "eval_batch_size"), ({"num_workers": -1}, "num_workers"),
     ({"hr_size": 0}, "hr_size"), ({"split": (0.5, 0.5, 0.5)}, "split"), ({"dataset": "nwpu"}, "dataset"),
     ({"mode": "crop"}, "mode"), ({"dataset": "aid", "download": True}, "download=True"),
     ({"max_train_images": 0}, "max_train_images")],
)  # fmt: skip
def test_bad_arguments_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SRDataModule(**kwargs)


def test_cli_parser_validates_literals():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(SRDataModule, "data")
    cfg = parser.parse_args(
        ["--data.mode=full", "--data.val_scales=[2, 3.5]", "--data.split=[0.8, 0.1, 0.1]"]
    )
    assert cfg.data.mode == "full" and list(cfg.data.val_scales) == [2, 3.5]
    with pytest.raises(Exception, match="mode"):
        parser.parse_args(["--data.mode=crop"])


class _Tiny(L.LightningModule):
    """Checks the batches a real Trainer hands over after on_after_batch_transfer."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.seen: list[tuple[str, tuple, float]] = []

    def training_step(self, batch, batch_idx):
        assert batch["hr"].is_floating_point() and batch["hr"].min() >= -1
        self.seen.append(("train", tuple(batch["lr"].shape), batch["scale"][0].item()))
        up = torch.nn.functional.interpolate(batch["lr"], size=batch["hr"].shape[-2:], mode="bilinear")
        return (self.conv(up) - batch["hr"]).abs().mean()

    def validation_step(self, batch, batch_idx):
        self.seen.append(("val", tuple(batch["lr"].shape), batch["nominal_scale"][0].item()))

    def predict_step(self, batch, batch_idx):
        return [(name, round(batch["nominal_scale"][0].item(), 4)) for name in batch["name"]]

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_real_trainer_fast_dev_run_and_checkpointed_generator(shared_data, fitted, tmp_path):
    dm = _dm(shared_data)
    dm.datasets = fitted.datasets
    model = _Tiny()
    trainer = L.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=dm)
    train = [s for s in model.seen if s[0] == "train"]
    val = [s for s in model.seen if s[0] == "val"]
    assert len(train) == 2 and all(shape[0] == 4 and shape[2] == 16 for _, shape, _ in train)
    assert [s for _, _, s in val] == [2.0, 3.0]  # fast_dev_run: the first 2 val batches, one per scale
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=False)
    assert torch.equal(ckpt["SRDataModule"]["generator_state"], dm.generator.get_state())


def test_real_trainer_predict_covers_the_test_split(shared_data, fitted):
    dm = _dm(shared_data, test_scales=[2, 3.1], eval_batch_size=3)
    dm.datasets = dict(fitted.datasets)
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False
    )
    predictions = trainer.predict(_Tiny(), datamodule=dm)
    flat = [p for batch in predictions for p in batch]
    assert len(predictions) == 4 and Counter(flat) == Counter(
        {(n, s): 1 for n in dm.datasets["test"].names for s in (2.0, 3.1)}
    )


def test_scale_batch_sampler_under_a_distributed_sampler():
    from torch.utils.data import DistributedSampler

    from neurop_diff.data.datamodule import ScaleBatchSampler

    pairs = list(range(3 * 5))  # 5 images x 3 scales, scale-major
    shares = []
    for rank in range(2):
        sampler = ScaleBatchSampler(
            DistributedSampler(pairs, num_replicas=2, rank=rank, shuffle=False), 2, num_images=5
        )
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(len({i // 5 for i in b}) == 1 for b in batches)  # never mixes scales
        shares += [i for b in batches for i in b]
    assert sorted(set(shares)) == pairs  # the ranks together cover every (image, scale)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pairs_on_the_gpu_match_the_cpu(shared_data, fitted):
    batch = next(iter(fitted.train_dataloader()))
    on_gpu = {k: v.cuda() if torch.is_tensor(v) else v for k, v in batch.items()}
    cpu_dm, gpu_dm = _dm(shared_data, seed=3), _dm(shared_data, seed=3)
    cpu, gpu = (
        cpu_dm.make_train_pair(batch, cpu_dm.generator),
        gpu_dm.make_train_pair(on_gpu, gpu_dm.generator),
    )
    assert gpu["lr"].is_cuda and torch.equal(gpu["hr"].cpu(), cpu["hr"])
    assert (gpu["lr"].cpu() - cpu["lr"]).abs().max() < 1e-4
