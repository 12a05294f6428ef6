"""SRMetrics: the one metrics callback of both stages: PSNR, SSIM, LPIPS and the detail measures per scale.

It reads the step outputs `{"sr": {method: (B, 3, H, W) in [-1, 1]}}` (the module's own method first) with the
post-transfer batch (`hr`, `lr`, `scale`, `nominal_scale`, `name`), adds the bicubic baseline, and at epoch end
logs `{stage}/{metric}_x{s}` (own method), `{stage}/{metric}` (own method, mean over all image-scale pairs),
`{stage}/{metric}_{method}_x{s}` and `{stage}/{metric}_{method}` (other methods), with metric in psnr, ssim,
lpips, hf_share, hf_psnr, hf_ssim (evaluation/detail.py), and HR's `{stage}/hf_share_hr_x{s}`; and the
realism measures of evaluation/realism.py: lr_psnr (degrade(SR) against the batch's `lr`), lsd_hi, swd_l0,
swd_l1, swd_l2 and, when the step output carries `{"seed_std": {method: (B,)}}`, seed_std. SWD is a set
measure: the SR set of a method at a scale against the HR set of the same images, from descriptors kept per
image over the epoch; per-image rows do not carry it, the summary row of (method, scale) does, and the
overall `{stage}/swd_l0` is the mean of the per-scale values weighted by their image counts. Its job ends
with one `EvalResults` (evaluation/results.py), kept as `results` and handed to the writer
(evaluation/writer.py: `out_dir/{stage}/`, overwritten at each epoch) and to loggers that show more than
scalars (`ResultsLogger`, e.g. `neurop_diff.loggers.WandbLogger`).

Under DDP every rank evaluates its share; at epoch end the per-image rows (and grid candidates) of all ranks
are gathered, repeats of an (method, scale, image) are dropped (the distributed samplers pad uneven shares),
and every rank computes the same summary from the same sorted rows, so the logged values equal a
single-process run and are identical on all ranks. Only rank 0 writes files, prints and sends media.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from neurop_diff.evaluation.convention import (
    MetricConvention,
    format_scale,
    psnr_per_image,
    quantize,
    ssim_per_image,
    to_unit,
)
from neurop_diff.evaluation.detail import DETAIL_METRICS, detail_metrics, hf_share
from neurop_diff.evaluation.figures import to_uint8
from neurop_diff.evaluation.lpips import LPIPS, backbone_path, load_lpips
from neurop_diff.evaluation.realism import SWD_KEYS, SetSWD, lr_psnr, lsd_hi
from neurop_diff.evaluation.report import PER_IMAGE_REALISM, REALISM, summarize
from neurop_diff.evaluation.results import EvalResults, ExamplePicker, ResultsLogger
from neurop_diff.evaluation.writer import console_report, make_grids, write_results

BICUBIC = "bicubic"


class SRMetrics(L.Callback):
    """Per-scale PSNR/SSIM/LPIPS for the module's methods and bicubic, logged and written as tables and figures.

    Args:
        channel: "rgb" or "y" (BT.601 luma, as BasicSR) for PSNR/SSIM.
        crop_border: pixels cut from each side for PSNR/SSIM: "none", "scale" (ceil of the nominal scale),
            "scale+6", or an int.
        quantize: round SR and HR to 8-bit levels first (what saved images hold).
        lpips: compute LPIPS (on uncropped RGB in [-1, 1]); without backbone weights it is left out with one warning.
        lpips_net: LPIPS backbone, "alex" (as the paper) or "vgg".
        out_dir: folder for the results; default `<trainer.log_dir or default_root_dir>/results`.
        grid_images: images per scale in the image grids (the first ones by name); 0 disables grids.
        grid_zoom: side fraction of the centre crop shown zoomed under each grid image.
        write_files: write tables, figure and grids (rank 0, not during the sanity check).

    After each val/test epoch (not the sanity check), `results` holds that epoch's `EvalResults`.
    """

    def __init__(
        self,
        channel: Literal["rgb", "y"] = "rgb",
        crop_border: Literal["none", "scale", "scale+6"] | int = "none",
        quantize: bool = True,
        lpips: bool = True,
        lpips_net: Literal["alex", "vgg"] = "alex",
        out_dir: str | None = None,
        grid_images: int = 4,
        grid_zoom: float = 0.25,
        write_files: bool = True,
    ) -> None:
        super().__init__()
        if grid_images < 0:
            raise ValueError(f"SRMetrics.grid_images must be >= 0, got {grid_images}")
        if not 0.0 < grid_zoom <= 1.0:
            raise ValueError(f"SRMetrics.grid_zoom must be in (0, 1], got {grid_zoom}")
        if lpips_net not in ("alex", "vgg"):
            raise ValueError(f"SRMetrics.lpips_net must be 'alex' or 'vgg', got {lpips_net!r}")
        self.convention = MetricConvention(channel=channel, crop_border=crop_border, quantize=quantize)
        self.lpips = lpips
        self.lpips_net = lpips_net
        self.out_dir = out_dir
        self.grid_images = grid_images
        self.grid_zoom = grid_zoom
        self.write_files = write_files
        self.lpips_model: LPIPS | None = None
        self._lpips_tried = False
        self.results: EvalResults | None = None
        self._reset()

    # ---- state -------------------------------------------------------------------------------------------

    def _reset(self) -> None:
        # Per batch and method: tensors stay on the device until epoch end, so a later all-gather is one call
        # per tensor (names would need all_gather_object).
        self._records: list[tuple[str, float, list[str], dict[str, Tensor]]] = []
        self._methods: list[str] = []  # order of the step outputs; the first is the module's own
        self._examples = ExamplePicker(self.grid_images)
        self._swd = SetSWD()  # descriptors per (method, scale, image), HR's per (scale, image)

    def _ensure_lpips(self, device: torch.device) -> None:
        if self.lpips and not self._lpips_tried:
            self._lpips_tried = True
            self.lpips_model = load_lpips(self.lpips_net)
        if self.lpips_model is not None:
            self.lpips_model.to(device)

    @property
    def has_lpips(self) -> bool:
        return self.lpips_model is not None

    def method_order(self) -> list[str]:
        """Display order: bicubic, further methods, the module's own method last (bicubic, operator, diffusion)."""
        if not self._methods:
            return [BICUBIC]
        return [BICUBIC, *self._methods[1:], self._methods[0]]

    # ---- hooks -------------------------------------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage in ("fit", "validate", "test"):
            self._ensure_lpips(pl_module.device)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        self._ensure_lpips(pl_module.device)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        self._ensure_lpips(pl_module.device)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._update(trainer, outputs, batch, batch_idx)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._update(trainer, outputs, batch, batch_idx)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._finish(trainer, pl_module, "test")

    # ---- per batch -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def _update(self, trainer: L.Trainer, outputs: Any, batch: dict, batch_idx: int) -> None:
        if not isinstance(outputs, dict) or not isinstance(outputs.get("sr"), dict) or not outputs["sr"]:
            raise ValueError(
                "SRMetrics expects validation_step/test_step to return {'sr': {method: (B,3,H,W) in [-1,1]}}, "
                f"got {type(outputs).__name__}"
                + (f" with keys {sorted(outputs)}" if isinstance(outputs, dict) else "")
            )
        for key in ("hr", "lr", "scale"):
            if key not in batch:
                raise ValueError(f"SRMetrics: batch has no {key!r} (keys: {sorted(batch)})")
        hr, lr = batch["hr"], batch["lr"]
        methods = list(outputs["sr"])
        if BICUBIC in methods:
            raise ValueError(
                "SRMetrics adds the 'bicubic' row itself; the step outputs must not use that name"
            )
        for m in methods:
            if m not in self._methods:
                self._methods.append(m)
        hr = hr.float()
        sr = {BICUBIC: F.interpolate(lr.float(), size=hr.shape[-2:], mode="bicubic", align_corners=False)}
        # float32 whatever the precision (bf16/16-mixed outputs): metrics are computed in one precision.
        sr.update({m: x.float() for m, x in outputs["sr"].items()})
        for m, x in sr.items():
            if x.shape != hr.shape:
                raise ValueError(
                    f"SRMetrics: output {m!r} has shape {tuple(x.shape)}, HR has {tuple(hr.shape)}"
                )
        nominal = batch.get("nominal_scale", batch["scale"])
        nominal = torch.as_tensor(nominal).reshape(-1).float().cpu()
        names = list(batch.get("name") or [f"batch{batch_idx}_{i}" for i in range(hr.shape[0])])
        spread = self._seed_std(outputs, hr.shape[0], hr.device)
        keep_grid = self.grid_images > 0 and not trainer.sanity_checking
        # One scale per batch by convention; grouping keeps mixed batches right as well.
        for s in sorted(set(round(float(v), 2) for v in nominal)):
            idx = [i for i, v in enumerate(nominal.tolist()) if round(v, 2) == s]
            sel = torch.tensor(idx, device=hr.device)
            hr_s, lr_s = hr.index_select(0, sel), lr.float().index_select(0, sel)
            target = self.convention.prepare(hr_s, s)
            lp_target = self._saved(hr_s)
            hr_share = hf_share(target)
            group_names = [names[i] for i in idx]
            self._swd.add_reference(s, group_names, target)
            for m, x in sr.items():
                x_s = x.index_select(0, sel).clamp(-1, 1)
                pred = self.convention.prepare(x_s, s)
                values = {"psnr": psnr_per_image(pred, target), "ssim": ssim_per_image(pred, target)}
                values.update(detail_metrics(pred, target), hf_share_hr=hr_share)
                saved = self._saved(x_s)
                values.update(lr_psnr=lr_psnr(saved, lr_s), lsd_hi=lsd_hi(pred, target))
                if m in spread:
                    values["seed_std"] = spread[m].index_select(0, sel)
                if self.lpips_model is not None:
                    values["lpips"] = self.lpips_model(saved, lp_target)
                self._swd.add(m, s, group_names, pred)
                self._records.append((m, s, group_names, {k: v.detach() for k, v in values.items()}))
            if keep_grid:
                for j, name in enumerate(group_names):
                    i = idx[j]
                    self._examples.offer(
                        s,
                        name,
                        lambda i=i: {
                            "lr": to_uint8(lr[i]),
                            "hr": to_uint8(hr[i]),
                            **{m: to_uint8(x[i]) for m, x in sr.items()},
                        },
                    )

    def _saved(self, x: Tensor) -> Tensor:
        """What LPIPS and LR-PSNR see: RGB in [-1, 1], uncropped; quantised like PSNR/SSIM when the
        convention says so (the image a saved file holds)."""
        return quantize(to_unit(x.float())) * 2 - 1 if self.convention.quantize else x.float().clamp(-1, 1)

    @staticmethod
    def _seed_std(outputs: dict, batch_size: int, device: torch.device) -> dict[str, Tensor]:
        """The step output's optional {"seed_std": {method: (B,)}} (evaluation/realism.py `seed_std`)."""
        spread = outputs.get("seed_std") or {}
        out = {}
        for m, v in spread.items():
            if m not in outputs["sr"]:
                raise ValueError(f"SRMetrics: seed_std given for {m!r}, which is not in the step's 'sr'")
            v = torch.as_tensor(v).detach().float().reshape(-1)
            if v.numel() != batch_size:
                raise ValueError(f"SRMetrics: seed_std[{m!r}] has {v.numel()} values for {batch_size} images")
            out[m] = v.to(device)
        return out

    # ---- per epoch -----------------------------------------------------------------------------------------

    def _rows(self, stage: str) -> list[dict]:
        rows = []
        for method, scale, names, values in self._records:
            cpu = {k: v.float().cpu().tolist() for k, v in values.items()}
            for i, name in enumerate(names):
                rows.append(
                    {
                        "stage": stage,
                        "method": method,
                        "scale": scale,
                        "name": name,
                        "psnr": cpu["psnr"][i],
                        "ssim": cpu["ssim"][i],
                        "lpips": cpu["lpips"][i] if "lpips" in cpu else None,
                        **{k: cpu[k][i] for k in (*DETAIL_METRICS, "hf_share_hr")},
                        **{k: cpu[k][i] if k in cpu else None for k in PER_IMAGE_REALISM},
                    }
                )
        return rows

    def _log(self, pl_module: L.LightningModule, results: EvalResults) -> None:
        stage, own = results.stage, self._methods[0]
        metrics = ("psnr", "ssim", *(["lpips"] if self.has_lpips else []), *DETAIL_METRICS)
        logs: dict[str, float] = {}
        for r in results.summary:
            tag = "" if r["method"] == own else f"_{r['method']}"
            for k in metrics:
                logs[f"{stage}/{k}{tag}_x{format_scale(r['scale'])}"] = r[k]
            for k in REALISM:  # where measured (seed_std: only methods whose step output gives it)
                if r.get(k) is not None:
                    logs[f"{stage}/{k}{tag}_x{format_scale(r['scale'])}"] = r[k]
            if r["method"] == own:  # HR's share, once per scale: the reference for every hf_share
                logs[f"{stage}/hf_share_hr_x{format_scale(r['scale'])}"] = r["hf_share_hr"]
        for method in results.methods:
            mine = [r for r in results.rows if r["method"] == method]
            if not mine:
                continue
            tag = "" if method == own else f"_{method}"
            for k in (*metrics, "hf_share_hr") if method == own else metrics:
                # Overall: the mean over all (image, scale) pairs, so every evaluated image counts once per scale.
                name = f"{stage}/{k}" if k == "hf_share_hr" else f"{stage}/{k}{tag}"
                logs[name] = sum(r[k] for r in mine) / len(mine)
            for k in PER_IMAGE_REALISM:
                if all(r.get(k) is not None for r in mine):
                    logs[f"{stage}/{k}{tag}"] = sum(r[k] for r in mine) / len(mine)
            for k in SWD_KEYS:  # a set value per scale: weighted by images, as if every row carried it
                sets = [r for r in results.summary if r["method"] == method and r.get(k) is not None]
                if sets:
                    n = sum(r["n_images"] for r in sets)
                    logs[f"{stage}/{k}{tag}"] = sum(r[k] * r["n_images"] for r in sets) / n
        for key, value in logs.items():
            # The values are gathered and identical on every rank (module doc); sync_dist with "max" is then
            # exact, and tells Lightning so (it would otherwise advise to all-reduce them).
            pl_module.log(key, value, prog_bar=key == f"{stage}/psnr", sync_dist=True, reduce_fx="max")

    def resolve_out_dir(self, trainer: L.Trainer, stage: str) -> Path:
        """`out_dir/{stage}`, with out_dir defaulting to `<trainer.log_dir or default_root_dir>/results`."""
        root = (
            Path(self.out_dir)
            if self.out_dir
            else Path(trainer.log_dir or trainer.default_root_dir) / "results"
        )
        return root / stage

    def _gather(self, trainer: L.Trainer, rows: list[dict]) -> list[dict]:
        """All ranks' rows (and example images, methods) on every rank; each (method, scale, name) once,
        sorted by method, scale and name."""
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            parts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(parts, (rows, self._methods, self._examples.examples, self._swd.state()))
            rows = [r for part_rows, _, _, _ in parts for r in part_rows]
            for _, methods, _, _ in parts:
                self._methods.extend(m for m in methods if m not in self._methods)
            self._examples.merge([examples for _, _, examples, _ in parts])
            self._swd.merge([swd for _, _, _, swd in parts])
        order = {m: i for i, m in enumerate(self.method_order())}
        unique = {(r["method"], r["scale"], r["name"]): r for r in reversed(rows)}
        return sorted(
            unique.values(), key=lambda r: (order.get(r["method"], len(order)), r["scale"], r["name"])
        )

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> EvalResults | None:
        """Gather, summarise and log the epoch; outside the sanity check, keep and hand on its results."""
        rows = self._gather(trainer, self._rows(stage))  # a collective under DDP: every rank calls it
        if not rows:
            return None
        scale_max = getattr(trainer.datamodule, "scale_max", None) if trainer.datamodule is not None else None
        scale_max = float(scale_max) if scale_max is not None else None
        methods = self.method_order()
        results = EvalResults(
            stage=stage,
            epoch=trainer.current_epoch,
            step=trainer.global_step,
            methods=methods,
            rows=rows,
            summary=summarize(rows, methods, scale_max, self._swd.compute()),
            convention=self.convention.describe(),
            lpips_note=self._lpips_note(),
            has_lpips=self.has_lpips,
            scale_max=scale_max,
            examples=self._examples.examples,
        )
        self._log(pl_module, results)
        self._reset()
        if trainer.sanity_checking:
            return None
        results.grids = make_grids(results.examples, methods, self.grid_zoom, results.title)
        if trainer.is_global_zero:
            out = self.resolve_out_dir(trainer, stage)
            if self.write_files:
                results.files = write_results(results, out)
            if stage == "test":
                # print, not logging: the table belongs next to Lightning's own results table on stdout.
                print(console_report(results, out if results.files else None))
            for logger in trainer.loggers:
                if isinstance(logger, ResultsLogger):
                    logger.log_sr_results(results)
        self.results = results
        return results

    def _lpips_note(self) -> str:
        if self.lpips_model is not None:
            return f"{self.lpips_net} backbone, RGB [-1,1], no crop"
        if not self.lpips:
            return "n/a (disabled)"
        return f"n/a (backbone weights unavailable: {backbone_path(self.lpips_net)}; see TORCH_HOME)"
