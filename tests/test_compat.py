"""What neurop_diff.compat relies on in other libraries, pinned against the installed versions (an upgrade that
changes it fails here), and no import-time side effects of our modules (warning filters)."""

from __future__ import annotations

import ast
import inspect
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Literal

import pytest
from jsonargparse import ArgumentParser
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from lightning.pytorch.trainer.connectors import data_connector
from lightning.pytorch.trainer.states import RunningStage
from torch.utils.data import DataLoader, DistributedSampler, Sampler, SequentialSampler

from neurop_diff.compat import UNION_ERROR, class_error, set_init_arg, shard_of, union_error_line

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


class Picky:
    """A class_path target with a typed argument (checked when parsing) and one its constructor checks."""

    def __init__(self, mode: Literal["a", "b"] = "a", size: int = 1) -> None:
        if size < 0:  # raised from another error, as a file's "not a checkpoint" is from torch's
            raise ValueError(f"size must be >= 0, got {size}") from OSError("the cause")


def test_jsonargparse_union_errors_and_the_one_line_the_cli_shows():
    """A subclass_mode argument with a None default (LightningCLI's model, data, trainer.logger, ...) is a Union
    of the class and None: a bad init argument is a Union error listing each type's error, then the whole value.
    neurop_diff.cli shows the innermost error, found through the errors each layer is raised from."""
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(Picky, "thing", required=False)
    with pytest.raises(ArgumentError) as err:
        parser.parse_args([f"--thing={__name__}.Picky", "--thing.mode=c"])
    assert UNION_ERROR in str(err.value) and "NestedArg(" in str(err.value)
    assert union_error_line(err.value) == (
        """Parser key "thing.init_args.mode": Expected a typing.Literal['a', 'b']. Got value: c"""
    )
    with pytest.raises(ArgumentError) as err:
        parser.parse_args([f"--thing={__name__}.Picky", "--thing.sise=2"])
    assert union_error_line(err.value) == (
        f"""Parser key "thing": Problem with given class_path '{__name__}.Picky': Option 'sise' is not accepted"""
    )
    assert union_error_line(ArgumentError(None, "Parser key \"x\":\n  Expected a <class 'int'>")) is None
    # instantiating (LightningCLI's instantiate_classes): the Union error is raised from the constructor's own
    config = parser.parse_args([f"--thing={__name__}.Picky", "--thing.size=-1"])
    with pytest.raises(ValueError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parser.instantiate_classes(config)
    assert str(err.value).startswith(UNION_ERROR) and "Namespace(" in str(err.value)
    inner = class_error(err.value)
    assert isinstance(inner, ValueError) and str(inner) == "size must be >= 0, got -1"
    assert class_error(ValueError("plain")) is None


def test_private_lightning_and_wandb_attributes_the_compat_helpers_read(tmp_path):
    """attached_trainer reads LightningModule._trainer (the public property raises when none is attached);
    started_wandb_run / close_wandb_run read and reset WandbLogger._experiment."""
    import lightning

    from neurop_diff.compat import attached_trainer, close_wandb_run, started_wandb_run

    module = lightning.LightningModule()
    assert attached_trainer(module) is None
    with pytest.raises(RuntimeError, match="not attached"):
        module.trainer  # noqa: B018
    trainer = lightning.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    module.trainer = trainer
    assert attached_trainer(module) is trainer
    logger = WandbLogger(save_dir=str(tmp_path), mode="disabled")
    assert started_wandb_run(logger) is None

    class Run:
        code = None

        def finish(self, exit_code):
            Run.code = exit_code

    logger._experiment = Run()
    assert isinstance(started_wandb_run(logger), Run)
    close_wandb_run(logger, exit_code=1)
    assert Run.code == 1 and started_wandb_run(logger) is None
    assert "self._experiment" in inspect.getsource(WandbLogger.experiment.fget)


def test_private_attributes_are_read_only_in_compat():
    """Outside compat.py no module reads another library's private attribute: `x._name` where x is not self,
    or `self._name` that the package never defines (a parent class's, e.g. Lightning's `_trainer`)."""
    import re

    # NamedTuple's _replace / _asdict / _fields / _make are public API despite the underscore.
    other = re.compile(r"\b(?!self\b|cls\b)[a-z_]\w*\._(?!_|replace\b|asdict\b|fields\b|make\b)[a-z]\w*\b")
    own = re.compile(r"\bself\.(_[a-z]\w*)\b")
    sources = {p: p.read_text() for p in SRC.rglob("*.py")}
    defined = set()  # private names the package defines itself (its own classes' attributes and methods)
    for text in sources.values():
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                defined.add(node.name)
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            for target in targets if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) else []:
                for leaf in ast.walk(target):
                    defined |= {leaf.attr} if isinstance(leaf, ast.Attribute) else set()
                    defined |= {leaf.id} if isinstance(leaf, ast.Name) else set()
    found = []
    for p, text in sources.items():
        if p.name == "compat.py":
            continue
        for n, line in enumerate(text.splitlines(), 1):
            code = line.split("#")[0]
            if line.lstrip().startswith(("import", "from")):
                continue
            if other.search(code) or any(name not in defined for name in own.findall(code)):
                found.append(f"{p.relative_to(SRC)}:{n}: {line.strip()}")
    assert not found, found
