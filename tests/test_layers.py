"""The import layers of docs/design.md cover every module.

`make lint` runs import-linter over the contracts in pyproject.toml, but a layers contract says
nothing about a module it does not list: a new module would escape the check. This test keeps
the list whole.
"""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path

import aiopool

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _layered_modules() -> set[str]:
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return {name.strip() for layer in layers["layers"] for name in layer.split(":")}


def test_every_module_of_the_package_is_in_a_layer() -> None:
    modules = {f"aiopool.{info.name}" for info in pkgutil.iter_modules(aiopool.__path__)}
    assert modules - _layered_modules() == set()


def test_the_layers_name_only_modules_that_exist() -> None:
    modules = {f"aiopool.{info.name}" for info in pkgutil.iter_modules(aiopool.__path__)}
    assert _layered_modules() - modules == set()
