"""LIIF as the second operator: structure, exact chunking, import of the authors' checkpoint against an
independent implementation of the paper's equations, a real Lightning fit, guiding the diffusion stage, errors."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from neurop_diff.cli import main
from neurop_diff.lit import DiffusionModule, OperatorModule
from neurop_diff.lit.authors import lightning_checkpoint
from neurop_diff.models import LIIF, SRNO
from neurop_diff.weights import (
    build_operator,
    checkpoint_kind,
    convert_liif_state_dict,
    load_operator,
    read_checkpoint,
)
from test_cli import TINY_DATA, TINY_UNET, _metrics, _trainer_args

REPO = Path(__file__).resolve().parents[1]
#: The CPU-sized LIIF: the operator base, the LIIF overlay, the small overlay.
LIIF_SMALL = [
    *("--config", str(REPO / "configs/operator.yaml")),
    *("--config", str(REPO / "configs/model/liif.yaml")),
    *("--config", str(REPO / "configs/model/small.yaml")),
]
DIFF_SMALL = str(REPO / "configs/diffusion_small.yaml")
TINY = {"encoder_blocks": 1, "encoder_width": 8, "mlp_width": 16, "mlp_depth": 2}
TINY_LIIF = [
    *(f"--model.init_args.{k}={v}" for k, v in TINY.items()),
    "--model.init_args.sample_q=64",
    "--data.init_args.lr_patch=12",
]
TINY_SRNO = {"encoder_blocks": 1, "encoder_width": 8, "width": 16, "blocks": 1, "heads": 2, "head_width": 16}
# The args of the authors' released edsr-baseline-liif.pth (their configs/train-div2k/train_edsr-baseline-liif.yaml).
AUTHORS_ARGS = {
    "encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}},
    "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256, 256]}},
}


def authors_liif_state_dict(seed: int = 0, blocks: int = 16, c: int = 64, hidden: int = 256, depth: int = 4):
    """Random weights (seeded, activations O(1)) with the LIIF authors' parameter names and shapes."""
    shapes = {"encoder.sub_mean.weight": (3, 3, 1, 1), "encoder.sub_mean.bias": (3,)}
    shapes |= {"encoder.add_mean.weight": (3, 3, 1, 1), "encoder.add_mean.bias": (3,)}
    shapes |= {"encoder.head.0.weight": (c, 3, 3, 3), "encoder.head.0.bias": (c,)}
    for i in range(blocks):
        for j in (0, 2):
            shapes |= {
                f"encoder.body.{i}.body.{j}.weight": (c, c, 3, 3),
                f"encoder.body.{i}.body.{j}.bias": (c,),
            }
    shapes |= {f"encoder.body.{blocks}.weight": (c, c, 3, 3), f"encoder.body.{blocks}.bias": (c,)}
    dims = [9 * c + 4] + [hidden] * depth + [3]
    for k in range(depth + 1):
        shapes |= {
            f"imnet.layers.{2 * k}.weight": (dims[k + 1], dims[k]),
            f"imnet.layers.{2 * k}.bias": (dims[k + 1],),
        }
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in shapes.items():
        if name.endswith(".bias"):
            sd[name] = 0.1 * torch.randn(shape, generator=g)
        else:
            sd[name] = torch.randn(shape, generator=g) * (1.0 / math.sqrt(math.prod(shape[1:])))
    return sd


def authors_file(sd, args=AUTHORS_ARGS) -> dict:
    optimizer = {"name": "adam", "args": {"lr": 1e-4}, "sd": {"state": {}, "param_groups": []}}
    return {"model": {"name": "liif", "args": args, "sd": sd}, "optimizer": optimizer, "epoch": 1000}


def reference_liif(sd, inp, coord, cell):
    """LIIF from the paper's equations (method.md 2b) on the authors' tensors: EDSR-baseline, 3x3 unfolding,
    4 nearest latent codes with relative coordinates and cell, MLP, area-weighted local ensemble.
    inp (B, 3, h, w), coord (B, N, 2) (y, x), cell (B, 2) -> (B, N, 3)."""
    x = F.conv2d(inp, sd["encoder.head.0.weight"], sd["encoder.head.0.bias"], padding=1)
    res, i = x, 0
    while f"encoder.body.{i}.body.0.weight" in sd:
        p = f"encoder.body.{i}.body."
        t = F.relu(F.conv2d(res, sd[p + "0.weight"], sd[p + "0.bias"], padding=1))
        res = res + F.conv2d(t, sd[p + "2.weight"], sd[p + "2.bias"], padding=1)
        i += 1
    feat = x + F.conv2d(res, sd[f"encoder.body.{i}.weight"], sd[f"encoder.body.{i}.bias"], padding=1)
    b, c, h, w = feat.shape
    feat = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)
    ys = -1 + (2 * torch.arange(h, dtype=torch.float32) + 1) / h
    xs = -1 + (2 * torch.arange(w, dtype=torch.float32) + 1) / w
    centres = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), 0).expand(b, 2, h, w)
    layers = sorted(int(k.split(".")[2]) for k in sd if k.startswith("imnet.") and k.endswith("weight"))
    preds, areas = [], []
    for vy in (-1, 1):
        for vx in (-1, 1):
            q = coord.clone()
            q[..., 0] += vy / h + 1e-6
            q[..., 1] += vx / w + 1e-6
            q = q.clamp(-1 + 1e-6, 1 - 1e-6).flip(-1).unsqueeze(1)
            z = F.grid_sample(feat, q, mode="nearest", align_corners=False)[:, :, 0].permute(0, 2, 1)
            centre = F.grid_sample(centres, q, mode="nearest", align_corners=False)[:, :, 0].permute(0, 2, 1)
            rel = (coord - centre) * torch.tensor([h, w])
            rel_cell = (cell * torch.tensor([h, w])).unsqueeze(1).expand(b, coord.shape[1], 2)
            z = torch.cat([z, rel, rel_cell], -1)
            for j, layer in enumerate(layers):
                z = z @ sd[f"imnet.layers.{layer}.weight"].t() + sd[f"imnet.layers.{layer}.bias"]
                z = torch.relu(z) if j < len(layers) - 1 else z
            preds.append(z)
            areas.append((rel[..., 0] * rel[..., 1]).abs() + 1e-9)
    total = sum(areas)
    return sum(preds[k] * (areas[3 - k] / total).unsqueeze(-1) for k in range(4))


def _grid(hh: int, ww: int, b: int) -> torch.Tensor:
    ys = -1 + (2 * torch.arange(hh, dtype=torch.float32) + 1) / hh
    xs = -1 + (2 * torch.arange(ww, dtype=torch.float32) + 1) / ww
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(1, -1, 2).expand(b, -1, -1)


def _lr(b=2, h=7, w=9, seed=3) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------------------------------ the model
def test_parameter_count_default():
    model = LIIF()
    conv3 = 64 * 64 * 9 + 64
    encoder = (3 * 64 * 9 + 64) + 16 * 2 * conv3 + conv3
    mlp = (580 * 256 + 256) + 3 * (256 * 256 + 256) + (256 * 3 + 3)
    assert sum(p.numel() for p in model.encoder.parameters()) == encoder == 1_220_416
    assert sum(p.numel() for p in model.mlp.parameters()) == mlp == 346_883
    assert sum(p.numel() for p in model.parameters()) == 1_567_299
    assert [type(m).__name__ for m in model.mlp][:3] == ["Linear", "ReLU", "Linear"] and len(model.mlp) == 9


def test_chunking_is_exact_and_training_pass_agrees():
    torch.manual_seed(0)
    model = LIIF(**TINY).eval()
    lr = _lr()
    with torch.no_grad():
        full = model(lr, (19, 24))
        chunked = model(lr, (19, 24), chunk_size=7)
        auto = model(lr, (19, 24), chunk_size="auto")
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=0)
    torch.testing.assert_close(auto, full, atol=1e-6, rtol=0)
    assert full.shape == (2, 3, 19, 24) and full.std() > 0.05
    coord = _grid(19, 24, 2)
    cell = torch.tensor([2 / 19, 2 / 24])
    trained = model.query(model.encode(lr), lr, coord, cell)  # grad enabled: the one differentiable pass
    assert trained.requires_grad
    torch.testing.assert_close(
        trained.detach().transpose(1, 2).reshape(2, 3, 19, 24), full, atol=1e-6, rtol=0
    )
    trained.abs().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(ValueError, match="chunk_size"):
        model(lr, (19, 24), chunk_size=0)


# ------------------------------------------------------------------ the authors' checkpoint, imported
def test_import_weights_cli_reproduces_the_papers_liif(tmp_path, capsys):
    sd = authors_liif_state_dict(seed=2)
    src = tmp_path / "edsr-baseline-liif.pth"
    torch.save(authors_file(sd), src)
    assert checkpoint_kind(read_checkpoint(src)) == "liif"
    out = tmp_path / "liif.ckpt"
    main(["import-weights", str(src), "--out", str(out)])
    assert str(out) in capsys.readouterr().out
    assert checkpoint_kind(read_checkpoint(out)) == "OperatorModule"

    module = OperatorModule.load_from_checkpoint(out, map_location="cpu")
    assert module.hparams.arch == "liif" and isinstance(module.model, LIIF)
    operator, args = load_operator(out)
    assert args == {
        "arch": "liif",
        "encoder_blocks": 16,
        "encoder_width": 64,
        "mlp_width": 256,
        "mlp_depth": 4,
    }
    direct, _ = load_operator(src)  # the authors' file itself is an operator checkpoint too
    at_init = OperatorModule(arch="liif", weights=str(src)).model  # OperatorModule's `weights` argument
    assert all(torch.equal(v, module.model.state_dict()[k]) for k, v in at_init.state_dict().items())
    lr = _lr()
    size = (19, 24)  # x2.71 / x2.67: a non-integer scale
    coord, cell = _grid(*size, 2), torch.tensor([[2 / 19, 2 / 24]] * 2)
    with torch.no_grad():
        ref = reference_liif(sd, lr, coord, cell).transpose(1, 2).reshape(2, 3, *size)
        outputs = [module(lr, size), operator(lr, size, chunk_size=50), direct(lr, size)]
    assert ref.abs().max() > 0.5 and ref.std() > 0.1  # not a degenerate comparison
    for got in outputs:
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_conversion_names_every_problem():
    sd = authors_liif_state_dict(blocks=2, c=8, hidden=16, depth=2)
    ours = convert_liif_state_dict(sd)
    assert set(ours) == set(LIIF(2, 8, 16, 2).state_dict()) and not any("mean" in k for k in ours)
    assert torch.equal(ours["mlp.4.weight"], sd["imnet.layers.4.weight"])
    assert torch.equal(ours["encoder.body_conv.bias"], sd["encoder.body.2.bias"])
    del sd["imnet.layers.4.bias"]
    sd["imnet.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        convert_liif_state_dict(sd, model=LIIF(2, 8, 16, 2))
    msg = str(info.value)
    assert "LIIF state dict does not fit the model" in msg
    assert (
        "missing (1): imnet.layers.4.bias (ours: mlp.4.bias)" in msg
        and "unexpected (1): imnet.extra.weight" in msg
    )


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"feat_unfold": False}, "'feat_unfold'"),
        ({"local_ensemble": False}, "'local_ensemble'"),
        ({"cell_decode": False}, "'cell_decode'"),
        ({"cell": False}, "'cell'"),
        ({"encoder_spec": {"name": "rdn", "args": {"no_upsampling": True}}}, "'rdn'"),
    ],
)
def test_unsupported_liif_variants_are_refused(tmp_path, capsys, change, named):
    src = tmp_path / "variant.pth"
    torch.save(
        authors_file(authors_liif_state_dict(blocks=1, c=8, hidden=16, depth=2), {**AUTHORS_ARGS, **change}),
        src,
    )
    out = tmp_path / "x.ckpt"
    with pytest.raises(SystemExit) as exc:
        main(["import-weights", str(src), "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "variant.pth" in err and named in err and "not supported" in err
    assert not out.exists()


def test_variant_is_refused_from_shapes_alone():
    sd = authors_liif_state_dict(blocks=1, c=8, hidden=16, depth=2)
    sd["imnet.layers.0.weight"] = sd["imnet.layers.0.weight"][:, :74]  # no cell decoding: 9 * 8 + 2 inputs
    with pytest.raises(ValueError, match=r"takes 74 inputs.*76.*not supported"):
        load_operator({"model": sd})


# ------------------------------------------------------------------------- arch in checkpoints, errors
def test_arch_mismatch_and_old_srno_checkpoints():
    liif = lightning_checkpoint(OperatorModule(arch="liif", **TINY))
    with pytest.raises(ValueError, match=r"arch: checkpoint 'liif' vs model 'srno'"):
        OperatorModule.from_checkpoint(liif, arch="srno")
    old = lightning_checkpoint(OperatorModule(**TINY_SRNO))
    for key in ("arch", "mlp_width", "mlp_depth"):  # as written before LIIF was added
        del old["hyper_parameters"][key]
    assert isinstance(OperatorModule.from_checkpoint(old).model, SRNO)
    operator, args = load_operator(old)
    assert isinstance(operator, SRNO) and args == {"arch": "srno", **TINY_SRNO}
    with pytest.raises(ValueError, match=r"arch: checkpoint 'srno' vs model 'liif'"):
        OperatorModule.from_checkpoint(old, arch="liif")
    with pytest.raises(ValueError, match=r"\['width'\] are not sizes of the liif operator"):
        build_operator({"arch": "liif", "width": 16})
    with pytest.raises(ValueError, match="unknown operator arch 'fno'"):
        OperatorModule(arch="fno")


def test_cli_refuses_a_config_of_the_other_arch(tmp_path, shared_data):
    srno = tmp_path / "srno.ckpt"
    torch.save(lightning_checkpoint(OperatorModule(**TINY_SRNO)), srno)
    with pytest.raises(ValueError, match=r"arch: checkpoint 'srno', given 'liif'"):
        main(["test", *LIIF_SMALL, f"--data.init_args.root={shared_data / 'rsscn7'}",
              *_trainer_args(tmp_path, "x", 1), f"--ckpt_path={srno}"])  # fmt: skip


UNIT_UNET = {"base_channels": 8, "channel_mults": (1, 2), "attn_resolutions": (8,), "image_size": 16,
             "norm_groups": 4, "timesteps": 50, "sampling_steps": 3}  # fmt: skip


@pytest.mark.parametrize(("condition", "channels"), [("operator", 6), ("bicubic", 6), ("encoder", 11)])
def test_liif_conditions_of_the_diffusion_stage(condition, channels):
    module = DiffusionModule(operator_args={"arch": "liif", **TINY}, condition=condition, **UNIT_UNET)
    assert isinstance(module.operator, LIIF) and module.hparams.operator_args["arch"] == "liif"
    assert next(p for p in module.unet.parameters() if p.dim() == 4).shape[1] == channels
    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    lr = F.interpolate(hr, size=(5, 5), mode="bicubic", antialias=True).clamp(-1, 1)
    batch = {"hr": hr, "lr": lr, "scale": torch.full((2,), 3.2), "name": ["a/0", "a/1"]}
    module.eval()
    out = module.validation_step(batch, 0)["sr"]
    assert out["diffusion"].shape == (2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(out["operator"], module.operator(lr, (16, 16)))


def test_operator_features_needs_srno():
    with pytest.raises(ValueError, match=r"'operator_features' condition.*LIIF \(arch 'liif'\)"):
        DiffusionModule(operator_args={"arch": "liif", **TINY}, condition="operator_features", **UNIT_UNET)


# --------------------------------------------------------------- real Lightning runs on the shared images
@pytest.fixture(scope="module")
def liif_fit(tmp_path_factory, shared_data):
    tmp = tmp_path_factory.mktemp("liif")
    data = [f"--data.init_args.root={shared_data / 'rsscn7'}", *TINY_DATA]
    main(["fit", *LIIF_SMALL, *data, *TINY_LIIF, *_trainer_args(tmp, "liif", 8),
          "--trainer.log_every_n_steps=1"])  # fmt: skip
    return tmp, tmp / "liif/v0/checkpoints/last.ckpt", data


def test_training_step_with_arch_liif_learns(shared_data):
    """OperatorModule's own training step (sample_q points, L1) with LIIF fits a fixed batch of real patches."""
    from PIL import Image

    from neurop_diff.data.degradation import degrade

    images = sorted((shared_data / "rsscn7" / "aGrass").glob("*.jpg"))[:2]
    hr = torch.stack(
        [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"))[:36, :36].copy()) for f in images]
    )
    hr = hr.permute(0, 3, 1, 2).float() / 127.5 - 1
    lr, scale = degrade(hr, 3.0)
    batch = {"hr": hr, "lr": lr, "scale": torch.full((2,), scale)}
    torch.manual_seed(0)
    module = OperatorModule(arch="liif", **TINY, sample_q=256)
    module.log = lambda *args, **kwargs: None  # the real step, outside a trainer
    opt = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = module.training_step(batch, 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses


def test_fit_with_arch_liif_round_trips(liif_fit):
    tmp, ckpt, _ = liif_fit
    rows = list(csv.DictReader((tmp / "liif/v0/metrics.csv").open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 8 and all(math.isfinite(v) and 0 < v < 2 for v in losses)
    metrics = _metrics(tmp / "liif/v0")
    assert 5 < metrics["val/psnr_x2"] < 60 and "val/psnr_bicubic_x4" in metrics
    stored = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert stored["hyper_parameters"]["arch"] == "liif" and stored["global_step"] == 8
    module = OperatorModule.load_from_checkpoint(ckpt, map_location="cpu")
    operator, _ = load_operator(ckpt)
    assert isinstance(module.model, LIIF)
    for name, value in module.model.state_dict().items():
        assert torch.equal(value, stored["state_dict"]["model." + name]), name
        assert torch.equal(operator.state_dict()[name], value), name


def test_liif_checkpoint_guides_the_diffusion_stage(liif_fit, tmp_path):
    _, op_ckpt, data = liif_fit
    own = tmp_path / "liif.ckpt"
    shutil.copy(op_ckpt, own)
    main(["fit", "--config", DIFF_SMALL, *data, *TINY_UNET, *_trainer_args(tmp_path, "diffusion", 2),
          f"--model.init_args.operator_ckpt={own}"])  # fmt: skip
    diff_ckpt = tmp_path / "diffusion/v0/checkpoints/last.ckpt"
    hp = torch.load(diff_ckpt, weights_only=True, map_location="cpu")["hyper_parameters"]
    assert hp["operator_args"] == {"arch": "liif", **TINY}
    assert "val/psnr_operator_x4" in _metrics(tmp_path / "diffusion/v0")
    own.unlink()  # test rebuilds the LIIF from the diffusion checkpoint alone
    test = ["--data.init_args.test_scales=[3]", "--data.init_args.max_eval_images=2"]
    main(["test", "--config", DIFF_SMALL, *data, *TINY_UNET, *_trainer_args(tmp_path, "diff_test", 1), *test,
          f"--ckpt_path={diff_ckpt}"])  # fmt: skip
    main(["test", *LIIF_SMALL, *data, *TINY_LIIF, *_trainer_args(tmp_path, "op_test", 1), *test,
          f"--ckpt_path={op_ckpt}"])  # fmt: skip
    diffusion, operator = _metrics(tmp_path / "diff_test/v0"), _metrics(tmp_path / "op_test/v0")
    assert "test/psnr_x3" in diffusion
    # the operator row of the diffusion test is the LIIF operator's own result on the same images
    assert diffusion["test/psnr_operator_x3"] == pytest.approx(operator["test/psnr_x3"], abs=1e-4)


def test_operator_overlays_compose(capsys):
    """One operator base (configs/operator.yaml, SRNO) and configs/model/ overlays: liif switches the arch and
    LIIF's optimiser, small sizes either arch for the CPU, srno switches back."""
    import yaml

    def composed(*overlays: str) -> dict:
        files = ["operator.yaml", *(f"model/{o}.yaml" for o in overlays)]
        with pytest.raises(SystemExit):
            main(
                [
                    "fit",
                    *(a for f in files for a in ("--config", str(REPO / "configs" / f))),
                    "--print_config",
                ]
            )
        cfg = yaml.safe_load(capsys.readouterr().out)
        return {**cfg["model"]["init_args"], **cfg["data"]["init_args"], "trainer": cfg["trainer"]}

    base, liif, small = composed(), composed("liif"), composed("small")
    liif_small, back = composed("liif", "small"), composed("liif", "srno")
    assert (
        base["arch"] == "srno" and base["width"] == 256 and base["heads"] == 16 and base["batch_size"] == 64
    )
    assert liif["arch"] == "liif" and liif["mlp_width"] == 256 and liif["mlp_depth"] == 4
    assert liif["lr"] == pytest.approx(1e-4) and liif["warmup_fraction"] == 0.0
    assert liif["batch_size"] == 16 and liif["lr_patch"] == 48 and liif["dataset"] == "ucmerced"
    assert liif["trainer"]["logger"][0]["init_args"]["name"] == "liif"
    assert small["arch"] == "srno" and (small["width"], small["heads"], small["encoder_blocks"]) == (64, 4, 4)
    assert small["dataset"] == "rsscn7" and small["hr_size"] == 96 and small["lr_patch"] == 32
    assert small["lr"] == pytest.approx(1e-3) and small["trainer"]["max_steps"] == 300
    assert small["trainer"]["max_epochs"] is None and small["trainer"]["accelerator"] == "cpu"
    assert liif_small["arch"] == "liif" and liif_small["mlp_width"] == 64 and liif_small["batch_size"] == 16
    assert back == base  # srno undoes liif, loggers included
