"""What the user typed wins over a checkpoint's hyper-parameters (the README's evaluation command); an architecture
setting that contradicts the checkpoint is an error naming both values; one-line errors from the console; the
private LightningCLI / jsonargparse behaviour cli/lightning.py relies on (neurop_diff.compat), pinned."""

from __future__ import annotations

import errno
import inspect
import sys
import warnings
from pathlib import Path

import pytest
import torch

from neurop_diff import compat
from neurop_diff.checkpointing import AtomicCheckpointIO
from neurop_diff.cli import main
from neurop_diff.cli.lightning import lightning_cli
from test_cli import TINY_DATA, TINY_UNET
from test_resume import callbacks_config

REPO = Path(__file__).resolve().parents[1]
DIFFUSION_CFG = str(REPO / "configs/diffusion_small.yaml")
#: The CPU-sized operator: the base config and the small overlay.
OPERATOR_CFG = [
    "--config",
    str(REPO / "configs/operator.yaml"),
    "--config",
    str(REPO / "configs/model/small.yaml"),
]


def _logger(root: Path, name: str) -> list[str]:
    return [
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.logger.init_args.version=v0",
    ]


@pytest.fixture(scope="module")
def diffusion_run(tmp_path_factory, shared_data) -> Path:
    """A one-step diffusion run (bicubic condition, tiny UNet, eta 0.5) through the CLI: its folder."""
    root = tmp_path_factory.mktemp("runs")
    main(["fit", "--config", DIFFUSION_CFG, f"--data.init_args.root={shared_data / 'rsscn7'}", *TINY_DATA,
          *TINY_UNET, "--model.init_args.condition=bicubic", "--model.init_args.eta=0.5",
          "--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
          *_logger(root, "diffusion")])  # fmt: skip
    return root / "diffusion" / "v0"


def test_readme_evaluation_command_runs_the_typed_steps_and_seed(diffusion_run, tmp_path, shared_data):
    ckpt = diffusion_run / "checkpoints" / "last.ckpt"
    stored = torch.load(ckpt, weights_only=True)["hyper_parameters"]
    assert (stored["sampling_steps"], stored["seed"]) == (3, 0)
    # README "Evaluate a trained run", on this run (plus where to write and a small test set).
    cli = lightning_cli(["test", "--config", str(diffusion_run / "config.yaml"), "--ckpt_path", str(ckpt),
                "--data.init_args.test_scales", "[9, 10]", "--model.init_args.sampling_steps", "100",
                "--model.init_args.seed", "1", f"--data.init_args.root={shared_data / 'rsscn7'}",
                "--data.init_args.max_eval_images=1", *_logger(tmp_path, "test")])  # fmt: skip
    hp = cli.model.hparams
    assert (hp.sampling_steps, hp.seed) == (100, 1)
    assert hp.eta == 0.5 and hp.base_channels == 8  # the rest: the run's (config.yaml = checkpoint)
    assert cli.trainer.state.finished


def test_untyped_options_come_from_the_checkpoint(diffusion_run, tmp_path, shared_data):
    ckpt = diffusion_run / "checkpoints" / "last.ckpt"
    arch = [f for f in TINY_UNET if "sampling_steps" not in f]
    cli = lightning_cli(["test", "--config", DIFFUSION_CFG, *arch, "--model.init_args.condition=bicubic",
                f"--ckpt_path={ckpt}", f"--data.init_args.root={shared_data / 'rsscn7'}", *TINY_DATA,
                "--data.init_args.test_scales=[4]", "--trainer.limit_test_batches=1",
                *_logger(tmp_path, "t")])  # fmt: skip
    hp = cli.model.hparams
    assert hp.sampling_steps == 20  # typed in the config file: the user's
    assert hp.eta == 0.5  # typed nowhere: the checkpoint's (the default is 0)


def test_an_architecture_contradicting_the_checkpoint_names_both_values(diffusion_run):
    ckpt = diffusion_run / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError) as err:
        main(["test", "--config", str(diffusion_run / "config.yaml"), f"--ckpt_path={ckpt}",
              "--model.init_args.base_channels=16"])  # fmt: skip
    assert "base_channels: checkpoint 8, given 16" in str(err.value) and str(ckpt) in str(err.value)


def test_disk_full_while_saving_is_one_line_and_keeps_the_older_checkpoint(
    tmp_path, shared_data, monkeypatch, capsys
):
    calls = []

    def dump(self, checkpoint, f):
        calls.append(1)
        if len(calls) > 1:
            f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        torch.save(checkpoint, f)

    monkeypatch.setattr(AtomicCheckpointIO, "_dump", dump)
    cbs = callbacks_config(tmp_path / "callbacks.yaml")  # last.ckpt after every step
    argv = ["neurop-diff", "fit", *OPERATOR_CFG, "--config", str(cbs), *TINY_DATA,
            f"--data.init_args.root={shared_data / 'rsscn7'}", "--model.init_args.width=16",
            "--model.init_args.heads=2", "--data.init_args.lr_patch=12", "--trainer.max_steps=3",
            "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false", *_logger(tmp_path, "run")]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        main()  # as the console script runs it
    message = str(exc.value.code)
    assert message.startswith("neurop-diff fit: error: ") and "\n" not in message
    assert message.endswith("no space left on device")
    last = tmp_path / "run/v0/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 1  # the older checkpoint, whole
    assert [p.name for p in last.parent.iterdir()] == ["last.ckpt"]


def test_yaml_syntax_error_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("trainer:\n  max_steps: [1\n  foo: : bar\n")
    with pytest.raises(SystemExit) as exc:
        main(["fit", *OPERATOR_CFG, "--config", str(bad)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith(f"neurop-diff: error: --config {bad}: YAML syntax error at line 3") and "\n" not in err
    )


def test_console_run_does_not_warn_about_args_and_command_line(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["neurop-diff", "fit", *OPERATOR_CFG, "--print_config"])
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as exc:
        warnings.simplefilter("always")
        main()
    assert exc.value.code == 0
    assert not [w for w in caught if "args parameter is intended" in str(w.message)]


def test_pinned_private_behaviour(capsys):
    """What neurop_diff.compat relies on in LightningCLI and jsonargparse: an upgrade that changes it fails here."""
    from lightning.pytorch.cli import LightningCLI

    from neurop_diff.cli.lightning import NeuropDiffCLI

    source = inspect.getsource(LightningCLI.__init__)
    calls = ("self.parse_arguments(", "self._parse_ckpt_path()", "self.before_instantiate_classes()")
    order = [source.index(c) for c in calls]
    assert order == sorted(order)
    assert "torch.load" in inspect.getsource(LightningCLI._parse_ckpt_path)  # the read that is turned off
    assert NeuropDiffCLI._parse_ckpt_path(None) is None
    # jsonargparse's wording of unknown keys, which the "did you mean" hints parse.
    for flag, pattern in [
        ("--model.init_args.widht=3", compat.UNKNOWN_INIT_ARG),
        ("--trainer.max_stepz=3", compat.UNKNOWN_OPTION),
    ]:
        with pytest.raises(SystemExit):
            main(["fit", *OPERATOR_CFG, flag])
        assert pattern.search(capsys.readouterr().err), flag
    # compat.parser_options (argparse's _actions) is pinned by the trainer-key hint of test_loading_errors.
