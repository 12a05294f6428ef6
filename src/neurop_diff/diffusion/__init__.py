"""Pure diffusion maths: schedules, the forward process and samplers over a callable denoiser."""

from neurop_diff.diffusion.sampling import (
    Denoiser,
    ddim_sample,
    ddim_sigma,
    ddim_step,
    ddim_timesteps,
    ddpm_sample,
)
from neurop_diff.diffusion.schedule import (
    NoiseSchedule,
    cosine_betas,
    linear_betas,
    make_schedule,
    predict_start_from_noise,
    q_posterior,
    q_sample,
    sample_gamma,
)

__all__ = [
    "Denoiser",
    "NoiseSchedule",
    "cosine_betas",
    "ddim_sample",
    "ddim_sigma",
    "ddim_step",
    "ddim_timesteps",
    "ddpm_sample",
    "linear_betas",
    "make_schedule",
    "predict_start_from_noise",
    "q_posterior",
    "q_sample",
    "sample_gamma",
]
