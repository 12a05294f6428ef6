"""What neurop_diff.compat relies on in other libraries, pinned against the installed versions (an upgrade that
changes it fails here), and no import-time side effects of our modules (warning filters)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.trainer.connectors import data_connector
from lightning.pytorch.trainer.states import RunningStage
from torch.utils.data import DataLoader, DistributedSampler, Sampler, SequentialSampler

from neurop_diff.compat import set_init_arg, shard_of

SRC = Path(__file__).resolve().parents[1] / "src" / "neurop_diff"


def test_wandb_logger_keeps_its_init_arguments_in_wandb_init(tmp_path):
    logger = WandbLogger(save_dir=str(tmp_path), mode="disabled", name="given")
    assert isinstance(logger._wandb_init, dict) and logger._wandb_init["name"] == "given"
    # the dict is what the run is created from, when `experiment` is first read
    assert "wandb.init(**self._wandb_init)" in inspect.getsource(WandbLogger.experiment.fget)
    set_init_arg(logger, "group", "aid")
    assert logger._wandb_init["group"] == "aid"
    logger._experiment = object()
    with pytest.raises(RuntimeError, match="already started"):
        set_init_arg(logger, "name", "late")
    with pytest.raises(RuntimeError, match="_wandb_init"):
        set_init_arg(object(), "name", "x")


class Reversed(Sampler[int]):
    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(range(self.n - 1, -1, -1))

    def __len__(self) -> int:
        return self.n


def test_the_samplers_lightning_injects_and_what_shard_of_reads():
    data = list(range(7))
    kwargs = {"num_replicas": 2, "rank": 1}
    # Lightning's choice of sampler under DDP: over the dataset for a sequential sampler, a wrapper around any
    # other, an unrepeated wrapper for predict.
    plain = data_connector._get_distributed_sampler(
        DataLoader(data, sampler=SequentialSampler(data)), False, 0, RunningStage.VALIDATING, **kwargs
    )
    assert type(plain) is DistributedSampler
    wrapped = data_connector._get_distributed_sampler(
        DataLoader(data, sampler=Reversed(7)), False, 0, RunningStage.TESTING, **kwargs
    )
    assert isinstance(wrapped, DistributedSamplerWrapper)
    predict = data_connector._get_distributed_sampler(
        DataLoader(data, sampler=SequentialSampler(data)), False, 0, RunningStage.PREDICTING, **kwargs
    )
    assert isinstance(predict, UnrepeatedDistributedSampler)
    # shard_of: the whole index list and the share for repeating samplers; the rank's own indices otherwise
    assert shard_of(plain) == (list(range(7)), 2, 1)
    assert shard_of(wrapped) == (list(range(6, -1, -1)), 2, 1)
    assert shard_of(predict) == ([1, 3, 5], 1, 0)
    assert shard_of(SequentialSampler(data)) == (list(range(7)), 1, 0)


def test_no_warning_filters_at_import_time():
    """Module-level warnings.filterwarnings/simplefilter would change every user's process on import; filters
    are scoped (warnings.catch_warnings) where they are needed."""
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only (not inside functions or classes)
            for call in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
                func = getattr(call, "func", None)
                if isinstance(func, ast.Attribute) and func.attr in ("filterwarnings", "simplefilter"):
                    offenders.append(f"{path.relative_to(SRC)}:{call.lineno}")
    assert not offenders
