"""SRNO operator and EDSR encoder: structure, exact chunked evaluation, query semantics, errors."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from neurop_diff.models import SRNO, EDSREncoder, GalerkinBlock, chunked, query
from neurop_diff.models.galerkin import HeadLayerNorm
from neurop_diff.models.lift import lr_features, neighbours
from neurop_diff.models.query import AUTO_CHUNK_POINTS, AUTO_FULL_POINTS

TINY = {"encoder_blocks": 1, "encoder_width": 8, "width": 16, "blocks": 2, "heads": 4, "head_width": 12}


def tiny(seed: int = 0) -> SRNO:
    torch.manual_seed(seed)
    model = SRNO(**TINY).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine so both are exercised
        for block in model.blocks:
            for norm in (block.k_norm, block.v_norm):
                norm.weight.add_(0.3 * torch.randn_like(norm.weight))
                norm.bias.add_(0.3 * torch.randn_like(norm.bias))
    return model


def lr_image(b: int = 2, h: int = 6, w: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_parameter_count_default():
    conv3 = 64 * 64 * 9 + 64
    encoder = (3 * 64 * 9 + 64) + 16 * 2 * conv3 + conv3
    block = (256 * 768 + 768) + 4 * 16 * 16 + 2 * (256 * 256 + 256)
    operator = (266 * 256 + 256) + 2 * block + (256 * 256 + 256) + (256 * 3 + 3)
    model = SRNO()
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    assert n_enc == encoder == 1_220_416
    assert sum(p.numel() for p in model.parameters()) == encoder + operator == 2_015_299


def test_encoder_structure():
    enc = EDSREncoder(n_resblocks=2, n_feats=8).eval()
    x = lr_image(1, 5, 6)

    def conv(t, m):
        return F.conv2d(t, m.weight, m.bias, padding=1)

    with torch.no_grad():
        head = conv(x, enc.head)
        res = head
        for block in enc.blocks:
            res = res + conv(torch.relu(conv(res, block.conv1)), block.conv2)
        torch.testing.assert_close(enc(x), head + conv(res, enc.body_conv))
        assert enc(x).shape == (1, 8, 5, 6)
        enc.body_conv.weight.zero_()
        enc.body_conv.bias.zero_()
        torch.testing.assert_close(enc(x), head)  # only the global skip remains


def test_head_layer_norm_unbiased_std_eps_on_std():
    norm = HeadLayerNorm(heads=2, head_dim=4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([[[1.0, 2, 3, 4]], [[-1.0, 0, 1, 2]]]))
        norm.bias.copy_(torch.tensor([[[0.5, 0, 0, 0]], [[0.0, 0, 0, -1]]]))
    x = torch.tensor([[[1.0, 2, 3, 6], [0, 0, 0, 4]]])  # (1, heads=2, 4)
    # head 0: mean 3, unbiased std sqrt((4+1+0+9)/3)
    std0 = (14 / 3) ** 0.5
    expect0 = torch.tensor([-2.0, -1, 0, 3]) / (std0 + 1e-5) * torch.tensor([1.0, 2, 3, 4]) + torch.tensor(
        [0.5, 0, 0, 0]
    )
    std1 = ((1 + 1 + 1 + 9) / 3) ** 0.5  # mean 1
    expect1 = torch.tensor([-1.0, -1, -1, 3]) / (std1 + 1e-5) * torch.tensor([-1.0, 0, 1, 2]) + torch.tensor(
        [0, 0, 0, -1.0]
    )
    torch.testing.assert_close(norm(x)[0], torch.stack([expect0, expect1]))


def test_galerkin_block_matches_naive_per_head_computation():
    torch.manual_seed(0)
    block = GalerkinBlock(width=12, heads=3)
    with torch.no_grad():
        block.k_norm.weight.normal_(1, 0.3)
        block.v_norm.bias.normal_(0, 0.3)
    x = torch.randn(2, 10, 12)
    qkv = x @ block.qkv.weight.t() + block.qkv.bias
    attn = torch.empty(2, 10, 12)
    for h in range(3):
        q, k, v = (
            qkv[..., h * 12 : h * 12 + 4],
            qkv[..., h * 12 + 4 : h * 12 + 8],
            qkv[..., h * 12 + 8 : h * 12 + 12],
        )

        def ln(t, norm, h=h):
            return (t - t.mean(-1, keepdim=True)) / (t.std(-1, keepdim=True) + 1e-5) * norm.weight[
                h, 0
            ] + norm.bias[h, 0]

        k, v = ln(k, block.k_norm), ln(v, block.v_norm)
        attn[..., h * 4 : h * 4 + 4] = q @ (k.transpose(1, 2) @ v) / 10
    r = x + attn
    expect = x + block.proj2(F.gelu(block.proj1(r)))
    torch.testing.assert_close(block(x), expect, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("lift", ["direct", "table", "auto"])
def test_chunked_evaluator_equals_the_reference_forward(monkeypatch, lift):
    """models/chunked.evaluate (every lift mode, stored pieces or chunks) gives SRNO.reference's numbers."""
    model, lr = tiny(), lr_image()
    size = (17, 19)  # x2.83 / x2.71, N = 323 points
    coord = _grid(size).expand(2, -1, -1, -1).reshape(2, -1, 2)
    cell = torch.tensor([2 / 17, 2 / 19]).expand(2, 2)
    with torch.no_grad():
        feat = model.encode(lr)
        ref = model.reference(feat, lr, coord, cell)
        ref_feats = model.reference(feat, lr, coord, cell, output="features")
        assert ref.shape == (2, 323, 3) and ref_feats.shape == (2, 323, 16)
        # chunk=None keeps activations of cache-sized pieces (here 60 per item)
        monkeypatch.setattr(chunked, "PIECE_POINTS", 120)
        for chunk in (None, 1, 50, 100, 322, 323, 1000):
            out = chunked.evaluate(model, feat, lr, coord, cell, chunk=chunk, lift=lift)
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
        for chunk in (None, 64):
            out = chunked.evaluate(model, feat, lr, coord, cell, chunk=chunk, lift=lift, output="features")
            torch.testing.assert_close(out, ref_feats, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="lift must be"):
        chunked.evaluate(model, feat, lr, coord, cell, lift="fast")


def test_chunked_equals_full_evaluation(monkeypatch):
    model, lr = tiny(), lr_image()
    size = (17, 19)  # x2.83 / x2.71, N = 323 points
    full = model(lr, size).detach()  # autograd on: the reference pass
    feats = model.features(lr, size).detach()
    assert full.shape == (2, 3, 17, 19) and feats.shape == (2, 16, 17, 19)
    with torch.no_grad():
        # without autograd, chunk_size=None keeps activations of cache-sized pieces (here 60 per item)
        monkeypatch.setattr(chunked, "PIECE_POINTS", 120)
        torch.testing.assert_close(model(lr, size), full, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.features(lr, size), feats, atol=1e-5, rtol=0)
        for chunk in (1, 50, 100, 322, 323, 1000):
            torch.testing.assert_close(model(lr, size, chunk_size=chunk), full, atol=1e-5, rtol=0)
        torch.testing.assert_close(model.features(lr, size, chunk_size=64), feats, atol=1e-5, rtol=0)
        # naive chunking (separate attention per chunk, as the reference eval) really differs
        coord = _grid(size).expand(2, -1, -1, -1).reshape(2, -1, 2)
        naive = model.query(model.encode(lr), lr, coord[:, :100], torch.tensor([2 / 17, 2 / 19]))
        assert (naive - full.flatten(2).transpose(1, 2)[:, :100]).abs().max() > 1e-3


def test_operator_module_has_no_mode_switch():
    """The lift mode is an argument of the evaluator, not state of the model that tests or users flip."""
    assert not hasattr(SRNO, "lift_mode")
    assert "lift" in inspect.signature(chunked.evaluate).parameters


def _grid(size):
    h, w = size
    ys = -1 + (2 * torch.arange(h) + 1) / h
    xs = -1 + (2 * torch.arange(w) + 1) / w
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).unsqueeze(0).float()


def test_query_semantics():
    model, lr = tiny(), lr_image()
    size = (11, 13)
    cell = torch.tensor([2 / 11, 2 / 13]).expand(2, 2)
    coord = _grid(size).expand(2, -1, -1, -1).reshape(2, -1, 2)
    with torch.no_grad():
        feat = model.encode(lr)
        full = model.query(feat, lr, coord, cell)
        assert full.shape == (2, 143, 3)
        # the full grid through query equals forward
        torch.testing.assert_close(full, model(lr, size).flatten(2).transpose(1, 2), atol=1e-6, rtol=0)
        # points are a set: permutation equivariant, and duplicating every point leaves the mean k^T v unchanged
        perm = torch.randperm(143)
        torch.testing.assert_close(
            model.query(feat, lr, coord[:, perm], cell), full[:, perm], atol=1e-5, rtol=0
        )
        twice = model.query(feat, lr, torch.cat([coord, coord], 1), cell)
        torch.testing.assert_close(twice, torch.cat([full, full], 1), atol=1e-5, rtol=0)
        # random-subset quadrature (training): exactly those points, values differ from the full grid's
        sub = model.query(feat, lr, coord[:, :40], cell)
        assert sub.shape == (2, 40, 3) and (sub - full[:, :40]).abs().max() > 1e-4
        # given coordinates through forward: (H, W, 2) broadcast over the batch
        torch.testing.assert_close(model(lr, coord=_grid(size)[0]), model(lr, size), atol=1e-6, rtol=0)


def test_features_head_and_bilinear_skip_give_forward():
    model, lr = tiny(), lr_image()
    with torch.no_grad():
        feats = model.features(lr, (14, 16))
        rgb = model.head(feats.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        bilinear = F.interpolate(lr, size=(14, 16), mode="bilinear", align_corners=False)
        torch.testing.assert_close(model(lr, (14, 16)), rgb + bilinear, atol=1e-5, rtol=0)


def test_any_real_scale_and_downscaling():
    model, lr = tiny(), lr_image(1, 6, 7)
    with torch.no_grad():
        for size in ((6, 7), (7, 9), (60, 70), (3, 4), (1, 1)):
            out = model(lr, size)
            assert out.shape == (1, 3, *size) and torch.isfinite(out).all()


def test_auto_chunk(monkeypatch):
    assert AUTO_CHUNK_POINTS < AUTO_FULL_POINTS
    monkeypatch.setattr(query, "AUTO_FULL_POINTS", 100)
    monkeypatch.setattr(query, "AUTO_CHUNK_POINTS", 64)
    calls = []
    orig = GalerkinBlock.kv_reduce
    monkeypatch.setattr(
        GalerkinBlock, "kv_reduce", lambda self, kv, *a: calls.append(kv.shape[1]) or orig(self, kv, *a)
    )
    model, lr = tiny(), lr_image()
    with torch.no_grad():
        out = model(lr, (10, 13), chunk_size="auto")
    # 130 points in chunks of 64 // B=2, one pass per block, one image after the other
    assert calls == [32, 32, 32, 32, 2] * 4
    with torch.no_grad():
        torch.testing.assert_close(out, model(lr, (10, 13)), atol=1e-5, rtol=0)


def test_gradients_reach_every_parameter():
    for mode in ("reference", "direct", "table"):
        model = SRNO(**TINY)
        lr = lr_image()
        coord = torch.rand(2, 50, 2) * 2 - 1
        cell = torch.tensor([0.1, 0.1])
        if mode == "reference":
            out = model.query(model.encode(lr), lr, coord, cell)
        else:  # the evaluator is differentiable too
            out = chunked.evaluate(model, model.encode(lr), lr, coord, cell.expand(2, 2), chunk=20, lift=mode)
        out.abs().mean().backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (mode, name)


def test_bad_inputs_raise():
    model, lr = tiny(), lr_image()
    with pytest.raises(ValueError, match="size"):
        model(lr)
    with pytest.raises(ValueError, match=r"\(B, 3, h, w\)"):
        model(lr[:, :2], (8, 8))
    with pytest.raises(ValueError, match="chunk_size"):
        model(lr, (8, 8), chunk_size=0)
    with pytest.raises(ValueError, match="does not match"):
        model(lr, (8, 8), coord=_grid((9, 9)).expand(2, -1, -1, -1))
    with pytest.raises(ValueError, match="size must be two positive ints"):
        model(lr, (8, 0))
    with pytest.raises(ValueError, match="cell"):
        model.query(model.encode(lr), lr, torch.zeros(2, 5, 2), torch.zeros(3))
    with pytest.raises(ValueError, match="heads"):
        SRNO(width=30, heads=4)


def test_bf16_autocast_matches_float32():
    """Mixed precision (bf16-mixed on CPU) runs the gathers and stays close to the float32 result."""
    from neurop_diff.coords import make_cell, make_coord

    torch.manual_seed(0)
    model = SRNO(encoder_blocks=1, encoder_width=8, width=16, heads=2, head_width=16)
    lr = torch.rand(2, 3, 12, 12) * 2 - 1
    ref = model(lr, (30, 30))
    coord = make_coord((30, 30)).reshape(1, -1, 2).expand(2, -1, -1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(lr, (30, 30))
        q = model.query(model.encode(lr), lr, coord, make_cell((30, 30), batch_size=2))
    assert torch.isfinite(q.float()).all()
    assert (out.float() - ref).abs().max() < 2e-2
    assert (q.float().reshape(2, 30, 30, 3).permute(0, 3, 1, 2) - ref).abs().max() < 5e-2


def test_models_import_no_higher_layer():
    """models/ is a floor below data/, lit/, callbacks/: it imports none of them (coords live in neurop_diff.coords)."""
    import ast
    from pathlib import Path

    import neurop_diff.models as models

    banned = ("neurop_diff.data", "neurop_diff.lit", "neurop_diff.callbacks", "neurop_diff.inference")
    for path in Path(models.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n.startswith(banned)], (path.name, names)


# from a 15 x 12 LR: about x4 (tables and block 0's tables pay) and x1.3 / x0.75 (the points are too few)
@pytest.mark.parametrize(("size", "tables"), [((61, 47), True), ((20, 9), False)])
def test_band_tables_are_exact_and_bounded(monkeypatch, size, tables):
    """One image in int chunks: the lift and block-0 tables are built per band of LR rows (memory bounded by
    BAND_TABLE_BYTES, not the scene), and give the reference's numbers; a piece reading outside its band fails."""
    model, lr = tiny(), lr_image(1, 15, 12)
    coord = _grid(size).reshape(1, -1, 2)
    cell = torch.tensor([[2 / size[0], 2 / size[1]]])
    bands, built = [], []
    real_bands, real_lift = chunked._bands, chunked._Lift.__init__
    monkeypatch.setattr(chunked, "_bands", lambda *a: bands.append(real_bands(*a)) or bands[-1])

    def spy(self, model, grid, band, *args):
        real_lift(self, model, grid, band, *args)
        built.append((band.hi - band.lo, self.table is not None, self.block0))

    monkeypatch.setattr(chunked._Lift, "__init__", spy)
    monkeypatch.setattr(chunked, "PIECE_POINTS", 64)
    # Tables of 6 LR rows per band: 12 px * 4 shifts * 4 tables * 16 channels * 4 bytes per row.
    monkeypatch.setattr(chunked, "BAND_TABLE_BYTES", 6 * 12 * 4 * 4 * 16 * 4)
    with torch.no_grad():
        feat = model.encode(lr)
        ref = model.reference(feat, lr, coord, cell)
        # a chunk below the image's points: activations are recomputed per pass, tables per band
        out = chunked.evaluate(model, feat, lr, coord, cell, chunk=coord.shape[1] - 1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert len(bands) == 1 and len(bands[0]) >= 3, bands
    # at most 6 rows of 12 pixels, unless one piece alone needs more
    assert all(b.hi - b.lo <= 6 * 12 or b.stop - b.first == 1 for b in bands[0]), bands
    assert len(built) == 3 * len(bands[0])  # tables per band and pass, never all at once
    assert all(has_table == tables and block0 == tables for _, has_table, block0 in built), built
    # the band of a piece is checked, not trusted: rows outside it are an error, never a silent wrong read
    band = chunked._Band(12, 24, 0, 1)
    lifter = chunked._Lift(model, lr_features(feat, cell, model.lift), band, 10**6, 1, "table")
    with pytest.raises(RuntimeError, match=r"(?i)index"):  # "Index 0 of input..." or "i < index_size"
        lifter.points(neighbours(lr_features(feat, cell, model.lift), coord[:, :64]))


def test_a_chunk_covering_the_image_keeps_activations(monkeypatch):
    """chunk >= the image's points: each piece is lifted once (activations kept across the passes); a smaller
    chunk lifts every piece again in each pass (memory bounded by the chunk). Same numbers either way."""
    model, lr = tiny(), lr_image(1, 15, 12)
    coord = _grid((40, 30)).reshape(1, -1, 2)
    cell = torch.tensor([[2 / 40, 2 / 30]])
    monkeypatch.setattr(chunked, "PIECE_POINTS", 256)
    calls = []
    real = chunked.lift_direct
    monkeypatch.setattr(chunked, "lift_direct", lambda *a: calls.append(1) or real(*a))
    pieces = -(-coord.shape[1] // 256)
    with torch.no_grad():
        feat = model.encode(lr)
        ref = model.reference(feat, lr, coord, cell)
        outs = {}
        for chunk in (coord.shape[1], coord.shape[1] - 1):
            calls.clear()
            outs[chunk] = chunked.evaluate(model, feat, lr, coord, cell, chunk=chunk, lift="direct")
            assert len(calls) == (pieces if chunk == coord.shape[1] else (len(model.blocks) + 1) * pieces)
    for out in outs.values():
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_srno_and_liif_meet_the_operator_interface():
    from neurop_diff.models import LIIF, SRNO, Operator

    for model in (SRNO(encoder_blocks=1, encoder_width=8, width=16, blocks=1, heads=2, head_width=16),
                  LIIF(encoder_blocks=1, encoder_width=8, mlp_width=16, mlp_depth=1)):  # fmt: skip
        assert isinstance(model, Operator)
        assert model.arch == type(model).__name__.lower()
        lr = torch.rand(1, 3, 6, 6) * 2 - 1
        feat = model.encode(lr)
        assert feat.shape == (1, 8, 6, 6)
        coord = torch.rand(1, 5, 2) * 2 - 1
        with torch.no_grad():
            assert model.query(feat, lr, coord, torch.tensor([2 / 12, 2 / 12])).shape == (1, 5, 3)
            assert model(lr, (12, 12)).shape == (1, 3, 12, 12)
    assert not isinstance(torch.nn.Linear(2, 2), Operator)
