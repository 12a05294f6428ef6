"""notebooks/quickstart.ipynb runs end to end (tiny diffusion checkpoint) and is stored without outputs."""

from __future__ import annotations

from pathlib import Path

import lightning
import pytest
import torch

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.ipynb"


def test_notebook_is_stored_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.outputs == [] and c.execution_count is None for c in code)


def test_quickstart_runs_and_draws_the_figure(tmp_path, shared_data, monkeypatch):
    from neurop_diff.lit.diffusion import DiffusionModule

    torch.manual_seed(0)
    module = DiffusionModule(
        operator_args={"encoder_blocks": 1, "encoder_width": 8, "width": 16, "blocks": 1, "heads": 2},
        base_channels=16, channel_mults=(1, 2), attn_resolutions=(), image_size=32, norm_groups=8, dropout=0.0,
    )  # fmt: skip
    ckpt = tmp_path / "tiny.ckpt"
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "pytorch-lightning_version": lightning.__version__,
            "datamodule_hyper_parameters": {"scale_min": 1.0, "scale_max": 8.0},
        },
        ckpt,
    )
    monkeypatch.setenv("NEUROP_DIFF_CHECKPOINT", str(ckpt))
    monkeypatch.setenv("NEUROP_DIFF_DATA", str(shared_data))
    monkeypatch.setenv("NEUROP_DIFF_STEPS", "2")
    monkeypatch.setenv("NEUROP_DIFF_LR_SIZE", "20")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError on any failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert len(images) == 1
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "stage: diffusion" in text
    assert "(40, 40), (70, 70), (120, 120), (200, 200)" in text  # x2, x3.5, x6, x10 of the 20-px LR
