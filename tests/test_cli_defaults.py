"""Every command-line default equals the default of the dataclass field it sets: each setting is documented and
defaulted once, in its config."""

from __future__ import annotations

import dataclasses
from typing import Any

import click
import pytest

from data_builder.build import BuildConfig
from data_builder.ladder import LadderBuildConfig, LadderConfig
from data_builder.search import SearchConfig
from export.manifest import RuntimeConfig
from export.onnx import ExportConfig
from predictor.bert import BertRegressorConfig
from predictor.bert_curves import BertCurvesConfig
from predictor.data import ExampleConfig
from reasoner.backends import SamplingConfig
from reasoner.backends.hf import HFConfig
from reasoner.backends.openai import OpenAIConfig
from reasoner.backends.ort import ORTConfig
from tale.cli import main
from tale.eval.ablate import AblationConfig
from tale.eval.evaluate import EvalConfig
from tale.eval.frontier import StudyConfig
from tale.pipeline import PipelineConfig
from tale.serve.config import GatewayConfig

# Options that every reasoner command shares (tale.cli.common.backend_options) -> (config, field).
ENGINE = {"precision": (ORTConfig, "precision"), "dtype": (HFConfig, "dtype"), "device": (HFConfig, "device"),
          "batch_size": (HFConfig, "batch_size"), "temperature": (SamplingConfig, "temperature"),
          "sampling_seed": (SamplingConfig, "seed"), "request_timeout": (OpenAIConfig, "timeout_s"),
          "base_url": (OpenAIConfig, "base_url"), "api_key_env": (OpenAIConfig, "api_key_env")}

# command -> the configs its options set (an option sets the field of its own name), and options that mean another setting.
COMMANDS: dict[str, tuple[tuple[type, ...], dict[str, tuple[type, str]]]] = {
    "generate": ((), ENGINE),
    "build": ((BuildConfig, SearchConfig), {**ENGINE, "ladder_text": (LadderConfig, "rungs")}),
    "evaluate": ((EvalConfig,), ENGINE),
    "ablate": ((EvalConfig, AblationConfig), ENGINE),
    "run": ((PipelineConfig, BertRegressorConfig), ENGINE),
    "train-predictor": ((BertRegressorConfig, ExampleConfig), {"held_out": (ExampleConfig, "held_out_fraction"),
                                                               "calibration": (ExampleConfig, "calibration_fraction")}),
    "eval-predictor": ((ExampleConfig,), ENGINE),
    "export": ((ExportConfig,), {}),
    "estimate": ((RuntimeConfig,), {}),
    "serve": ((GatewayConfig,), {}),
    "frontier": ((StudyConfig,), {}),
    "train-curves": ((BertCurvesConfig,), {}),
    "elasticity": ((), ENGINE),
}
NOT_COMPARED = {("eval-predictor", "seed"), ("build", "shard"), ("ablate", "methods"), ("ablate", "model")}  # other meanings or shapes, checked below


def field_default(cls: type, name: str) -> Any:
    """The field's default; ``dataclasses.MISSING`` for a required field (the command chooses its own default)."""
    f = {f.name: f for f in dataclasses.fields(cls)}[name]
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING


def cli_default(option: click.Option) -> Any:
    if option.is_flag:
        return bool(option.default) if option.default not in (None, click.core.UNSET) else False
    value = option.default
    if isinstance(value, str) and not isinstance(option.type, click.types.StringParamType):
        value = option.type.convert(value, option, None)
    return value


def compared(command: str) -> list[tuple[str, Any, Any]]:
    configs, aliases = COMMANDS[command]
    out = []
    for option in main.commands[command].params:
        if (not isinstance(option, click.Option) or (command, option.name) in NOT_COMPARED
                or option.default is None or option.default is click.core.UNSET):
            continue
        target = aliases.get(option.name) or next(((c, option.name) for c in configs if option.name in
                                                   {f.name for f in dataclasses.fields(c)}), None)
        if target is None:
            continue
        want = field_default(*target)
        if want is dataclasses.MISSING:
            continue
        if option.name == "ladder_text":
            want = ",".join("vanilla" if r is None else "direct" if r == 0 else str(r) for r in want)
        out.append((option.name, cli_default(option), want))
    return out


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_default_is_its_config_default(command: str) -> None:
    pairs = compared(command)
    assert pairs, f"{command}: no option compared"
    wrong = [f"--{name.replace('_', '-')}: {got!r} on the command line, {want!r} in the config" for name, got, want in pairs if got != want]
    assert not wrong, f"tale {command}: " + "; ".join(wrong)


def test_the_grid_axes_default_to_the_ablation_configs() -> None:
    ablate = {o.name: o for o in main.commands["ablate"].params if isinstance(o, click.Option)}
    assert tuple(ablate["model"].default) == field_default(AblationConfig, "models")
    assert tuple(ablate["methods"].default.split(",")) == field_default(AblationConfig, "methods")


def test_the_ladder_and_pool_defaults_come_from_their_configs() -> None:
    build = {o.name: o for o in main.commands["build"].params if isinstance(o, click.Option)}
    assert f"ladder: {LadderBuildConfig.pool}" in build["pool"].help and f"ladder: {LadderConfig.samples}" in build["samples"].help
