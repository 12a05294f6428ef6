"""NeurOp-Diff built without Lightning (models/build.py) and the one sampling-options record
(diffusion/options.py), as DiffusionModule and inference use them."""

from __future__ import annotations

import inspect

import pytest
import torch

from neurop_diff.diffusion.options import SamplingOptions
from neurop_diff.lit.diffusion import DiffusionModule
from neurop_diff.models.build import MODEL_ARGS, build_neuropdiff, neuropdiff_from_hparams

TINY = {"base_channels": 16, "channel_mults": (1, 2), "attn_resolutions": (), "image_size": 16,
        "norm_groups": 8, "dropout": 0.0, "condition": "bicubic"}  # fmt: skip


def test_the_module_builds_its_model_with_build_neuropdiff():
    torch.manual_seed(0)
    module = DiffusionModule(**TINY, prediction="x0", residual=True, noise_embedding="log_sigma")
    torch.manual_seed(0)
    plain = neuropdiff_from_hparams(module.hparams)
    ours, theirs = module.model.state_dict(), plain.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # same construction, same initial weights
    assert plain.residual and plain.prediction == "x0" and not plain.unet.out_conv.weight.detach().any()


def test_model_args_and_defaults_match_the_module():
    """build_neuropdiff's keywords are DiffusionModule's of the same name, with the same defaults."""
    module_params = inspect.signature(DiffusionModule.__init__).parameters
    build_params = inspect.signature(build_neuropdiff).parameters
    for name in MODEL_ARGS:
        assert name in module_params, name
        assert module_params[name].default == build_params[name].default, name
    assert set(MODEL_ARGS) <= set(DiffusionModule.ARCH_HPARAMS) | {
        "dropout", "channels_last", "schedule", "timesteps", "beta_start", "beta_end", "clip_denoised",
        "chunk_size",
    }  # fmt: skip


def test_a_flow_is_built_refused_when_inconsistent():
    model = build_neuropdiff(**{k: v for k, v in TINY.items() if k != "condition"}, condition="bicubic",
                             process="flow", noise_embedding="time", conditioned=False)  # fmt: skip
    assert model.process == "flow" and model.unet.in_channels == 3
    with pytest.raises(ValueError, match="flow"):
        build_neuropdiff(condition="bicubic", process="flow", noise_embedding="sr3")


def test_sampling_options_from_hparams_overrides_and_errors():
    assert SamplingOptions.from_hparams({}) == SamplingOptions()  # an old checkpoint: the defaults
    hp = {"sampler": "euler", "sampling_steps": 8, "lr_consistency": "project", "samples": 4, "eta": 0.0,
          "spacing": "trailing", "seed": 2, "timesteps": 1000}  # fmt: skip
    opts = SamplingOptions.from_hparams(hp, steps=None, sampler="heun")
    assert (opts.sampler, opts.steps, opts.lr_consistency, opts.samples, opts.seed) == (
        "heun",
        8,
        "project",
        4,
        2,
    )
    assert opts.calls(1000) == 15 and opts.replace(sampler="ddpm").calls(1000) == 1000
    assert opts.sample_kwargs() == {"sampler": "heun", "steps": 8, "eta": 0.0, "spacing": "trailing",
                                    "lr_consistency": "project"}  # fmt: skip
    for bad, match in [({"sampler": "dpm"}, "sampler must be one of"), ({"steps": 0}, "sampling_steps"),
                       ({"spacing": "cubic"}, "spacing must be"), ({"eta": 2.0}, "eta"),
                       ({"samples": 0}, "samples must be >= 1"), ({"lr_consistency": "ddnm"}, "lr_consistency")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            SamplingOptions(**bad)
    with pytest.raises(ValueError, match="samples must be >= 1"):
        DiffusionModule(**TINY, samples=0)  # checked at construction, not at the first validation
