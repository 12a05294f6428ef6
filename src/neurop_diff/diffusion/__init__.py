"""Pure diffusion maths: schedules, the forward process, level grids and samplers over a clean-estimate denoiser."""

from neurop_diff.diffusion.ksamplers import SAMPLERS, Sampler, run_sampler
from neurop_diff.diffusion.sampling import (
    Denoiser,
    Spacing,
    ancestral_step,
    ddim_timesteps,
    get_sigmas,
    sample_ddim,
)
from neurop_diff.diffusion.schedule import (
    NoiseSchedule,
    cosine_betas,
    gamma_to_sigma,
    linear_betas,
    make_schedule,
    predict_start_from_noise,
    q_posterior,
    q_sample,
    sample_levels,
    sigma_to_gamma,
)

__all__ = [
    "SAMPLERS",
    "Denoiser",
    "NoiseSchedule",
    "Sampler",
    "Spacing",
    "ancestral_step",
    "cosine_betas",
    "ddim_timesteps",
    "gamma_to_sigma",
    "get_sigmas",
    "linear_betas",
    "make_schedule",
    "predict_start_from_noise",
    "q_posterior",
    "q_sample",
    "run_sampler",
    "sample_ddim",
    "sample_levels",
    "sigma_to_gamma",
]
