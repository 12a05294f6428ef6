"""Weights & Biases logging that works with and without an account, and never waits for a network it lacks;
it also shows the metrics callback's results (``log_sr_results``: grids, figure, per-image table)."""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger as _WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from neurop_diff.compat import close_wandb_run, set_init_arg, started_wandb_run
from neurop_diff.evaluation.results import EvalResults

Mode = Literal["auto", "online", "offline", "disabled"]


def _api_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(timeout: float) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(mode: Mode = "auto", probe_timeout: float = 3.0) -> tuple[str, str | None]:
    """The W&B mode to use and, when it differs from what was asked, why.

    `WANDB_MODE` in the environment wins over `mode`. `auto` is online when an API key is configured and the
    server answers within `probe_timeout` seconds, offline otherwise. An online request without network falls
    back to offline (runs can be uploaded later with `wandb sync`).
    """
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    asked = {"dryrun": "offline", "run": "online"}.get(env, env) or mode
    if asked in ("offline", "disabled"):
        return asked, None
    if asked == "auto" and not _api_key_configured():
        return "offline", "no W&B API key configured (wandb login / WANDB_API_KEY)"
    if not _reachable(probe_timeout):
        return "offline", f"the W&B server did not answer within {probe_timeout:.0f} s"
    return "online", None


class WandbLogger(_WandbLogger):
    """Lightning's WandbLogger, with a mode that adapts to the machine and run names from the experiment.

    Args:
        project: W&B project (default `neurop-diff`, so both stages, ablations and datasets share a dashboard).
        name, group, tags: default to `<stage>-<dataset>-<condition>-x<min>-<max>`, `<dataset>` and
            `[stage, dataset, condition, "x<min>-<max>"]`, filled from the hyper-parameters at the start of the run.
        mode: `auto` (online with a key and a network, otherwise offline), `online`, `offline`, `disabled`;
            `WANDB_MODE` overrides it.
        log_model: upload checkpoints as artifacts (`True`: at the end, `"all"`: every checkpoint).
    """

    def __init__(
        self,
        project: str = "neurop-diff",
        name: str | None = None,
        group: str | None = None,
        tags: list[str] | None = None,
        save_dir: str = "runs",
        mode: Mode = "auto",
        log_model: bool | Literal["all"] = False,
        probe_timeout: float = 3.0,
        **kwargs: Any,
    ) -> None:
        if not os.environ.get("WANDB_MODE", "x").strip():
            os.environ.pop("WANDB_MODE")  # an empty value would make wandb.init fail
        self.mode, reason = resolve_mode(mode, probe_timeout)
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        if reason:
            self._notice(f"W&B: logging offline because {reason}.")
        super().__init__(
            name=name,
            save_dir=save_dir,
            project=project,
            group=group,
            tags=tags,
            log_model=log_model,
            mode=self.mode,
            **kwargs,
        )
        self._names_given = {"name": name, "group": group, "tags": tags}

    @staticmethod
    @rank_zero_only
    def _notice(text: str) -> None:
        print(text, flush=True)

    def set_run_names(self, hparams: dict[str, Any]) -> None:
        """Fills the run name, group and tags the user left unset from the hyper-parameters (before the run
        starts; the CLI calls it once model and data exist)."""
        for key, value in run_names(hparams).items():
            if self._names_given.get(key) is None:
                set_init_arg(self, key, value)

    @rank_zero_only
    def log_sr_results(self, results: EvalResults) -> None:
        """An evaluation epoch's media (``EvalResults`` from ``SRMetrics``): image grids, the metrics-vs-scale
        and perception-distortion figures and, in test, a table of per-image results, at the epoch's global
        step."""
        if self.mode == "disabled":
            return
        import wandb

        stage = results.stage
        payload: dict[str, Any] = {
            f"{stage}/grid_x{key}": wandb.Image(image, caption=f"{stage} x{key}: LR, bicubic, methods, HR")
            for key, image in results.grids.items()
        }
        for name in ("metrics_vs_scale", "perception_distortion"):
            figure = results.files.get(f"{name}.png")
            if figure is not None:
                payload[f"{stage}/{name}"] = wandb.Image(str(figure))
        if stage == "test" and results.rows:
            columns = list(results.rows[0])
            payload[f"{stage}/per_image"] = wandb.Table(
                columns=columns, data=[[row.get(c) for c in columns] for row in results.rows]
            )
        self.experiment.log({**payload, "trainer/global_step": results.step})

    @property
    def experiment(self) -> Any:
        first = started_wandb_run(self) is None
        run = _WandbLogger.experiment.fget(self)
        if first and started_wandb_run(self) is not None:
            self._after_init()
        return run

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)
        # Close the run so its summary is written now (and a later fit/test in this process starts a new run).
        close_wandb_run(self, exit_code=0 if status == "success" else 1)

    def _after_init(self) -> None:
        run = started_wandb_run(self)
        if self.mode == "disabled" or run is None:
            return
        summaries = (
            ("val/psnr*", "max"),
            ("val/ssim*", "max"),
            ("val/lpips*", "min"),
            ("val/lr_psnr*", "max"),
            ("val/swd_*", "min"),
            ("val/lsd_hi*", "min"),
        )
        for pattern, summary in summaries:
            run.define_metric(pattern, summary=summary, step_metric="trainer/global_step")
        if self.mode == "offline":
            run_dir = Path(run.dir).parent
            self._notice(f"W&B: offline run in {run_dir}; upload it with `wandb sync {run_dir}`")


def run_names(hparams: dict[str, Any]) -> dict[str, Any]:
    """Run name, group and tags from model + datamodule hyper-parameters (stage, dataset, condition, scales)."""
    stage = "diffusion" if "condition" in hparams else "operator"
    if stage == "diffusion" and hparams.get("process") == "flow":
        stage = "flow"
    dataset = str(hparams.get("dataset", "data"))
    lo, hi = hparams.get("scale_min", 1.0), hparams.get("scale_max", 8.0)
    scales = f"x{lo:g}-{hi:g}"
    parts = [stage, dataset] + ([str(hparams["condition"])] if stage != "operator" else []) + [scales]
    return {"name": "-".join(parts), "group": dataset, "tags": parts}
