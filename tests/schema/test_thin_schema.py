"""`schema/` is thin by construction: resolvers convert, call one operation in `models/`, convert back.

Parsed with `ast`, every module of `schema/` must not
- import `tortoise` (any submodule: no `Q`, `F`, functions, transactions in a resolver), nor
- call an ORM query method (`.get(`, `.filter(`, `.all(`, ...) on a model class reached from an import
  of `models` (`from models.identity.accounts import User` then `User.filter(...)`, or `from models import
  alerts` then `alerts.Alert.get_or_none(...)`), chained calls included (`User.filter(...).first()`).

Model classes are found by importing every module of `models.MODEL_MODULES` and taking the Tortoise
`Model` subclasses defined there, so a new model is covered without touching this file.

Reads not moved yet are listed in `ALLOWED` as (schema module, model, method) with why; the test fails
when an allowed entry no longer occurs, so the list only shrinks: remove the entry when you move it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tortoise.models import Model

import models

ROOT = Path(__file__).resolve().parents[2]

ORM_METHODS = frozenset(
    {
        "all",
        "annotate",
        "bulk_create",
        "bulk_update",
        "count",
        "create",
        "delete",
        "distinct",
        "exclude",
        "exists",
        "filter",
        "first",
        "get",
        "get_or_create",
        "get_or_none",
        "group_by",
        "in_bulk",
        "last",
        "limit",
        "offset",
        "only",
        "order_by",
        "prefetch_related",
        "raw",
        "select_for_update",
        "select_related",
        "update",
        "update_or_create",
        "using_db",
        "values",
        "values_list",
    }
)

# (schema module, model, ORM method) -> why it is still there. Only shrinks.
ALLOWED: dict[tuple[str, str, str], str] = {}


@dataclass(frozen=True)
class Violation:
    module: str
    path: str
    line: int
    what: str
    key: tuple[str, str, str] | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.module}: {self.what}"


def model_classes() -> dict[str, set[str]]:
    """Module name -> names of the Tortoise models defined in it."""
    found: dict[str, set[str]] = {}
    for name in models.MODEL_MODULES:
        module = importlib.import_module(name)
        found[name] = {
            attr
            for attr, value in vars(module).items()
            if inspect.isclass(value)
            and issubclass(value, Model)
            and value is not Model
            and value.__module__ == name
            and not getattr(getattr(value, "Meta", None), "abstract", False)
        }
    return found


def _all_models(models_by_module: Mapping[str, set[str]]) -> dict[str, str]:
    """Model class name -> defining module, re-exports included (by importing the module)."""
    return {model: module for module, names in models_by_module.items() for model in names}


def _chain_root(node: ast.expr) -> list[str]:
    """`a.b.c(...).d` -> ['a', 'b', 'c', 'd'] (calls are walked through), [] when not a plain chain."""
    parts: list[str] = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Name):
            parts.append(node.id)
            return parts[::-1]
        else:
            return []


def violations(source: str, module: str, path: str, models_by_module: Mapping[str, set[str]]) -> Iterator[Violation]:
    tree = ast.parse(source, filename=path)
    model_home = _all_models(models_by_module)
    # Local name -> model class name, and local name -> models module (for `alerts.Alert`).
    model_names: dict[str, str] = {}
    module_names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "tortoise" or alias.name.startswith("tortoise."):
                    yield Violation(module, path, node.lineno, f"imports {alias.name}")
                elif alias.name == "models" or alias.name.startswith("models."):
                    if alias.asname:
                        module_names[alias.asname] = alias.name
                    else:
                        module_names["models"] = "models"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module is not None:
            if node.module == "tortoise" or node.module.startswith("tortoise."):
                yield Violation(module, path, node.lineno, f"imports from {node.module}")
            elif node.module == "models" or node.module.startswith("models."):
                for alias in node.names:
                    local = alias.asname or alias.name
                    submodule = f"{node.module}.{alias.name}"
                    if alias.name in model_home:
                        model_names[local] = alias.name
                    else:
                        module_names[local] = submodule
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        method = node.func.attr
        if method not in ORM_METHODS:
            continue
        chain = _chain_root(node.func)
        if not chain:
            continue
        model: str | None = None
        if chain[0] in model_names and len(chain) >= 2:
            model = model_names[chain[0]]
        elif chain[0] in module_names:
            # `alerts.Alert.get(...)` or `models.alerts.alerts.Alert.get(...)`: the first model name in the chain.
            model = next((part for part in chain[1:-1] if part in model_home), None)
        if model is not None:
            key = (module, model, method)
            yield Violation(module, path, node.lineno, f"{model}....{method}(...) queries the ORM", key)


def schema_violations() -> list[Violation]:
    found = model_classes()
    result: list[Violation] = []
    for path in sorted((ROOT / "schema").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        result.extend(violations(path.read_text(), ".".join(parts), str(path.relative_to(ROOT)), found))
    return result


def test_schema_never_queries_the_orm() -> None:
    found = schema_violations()
    bad = [str(v) for v in found if v.key is None or v.key not in ALLOWED]
    assert not bad, "schema/ must call an operation in models/, not the ORM:\n" + "\n".join(bad)


def test_allowed_entries_still_occur() -> None:
    occurring = {v.key for v in schema_violations() if v.key is not None}
    gone = sorted(key for key in ALLOWED if key not in occurring)
    assert not gone, f"moved into models/, remove from ALLOWED: {gone}"


def test_the_check_catches_violations() -> None:
    """Not vacuous: a synthetic module with each kind of violation is caught, a clean one is not."""
    found = model_classes()
    assert "User" in found["models.identity.accounts"] and "Alert" in found["models.alerts.alerts"]
    bad = """
from tortoise.expressions import Q
import tortoise.transactions
from models.identity.accounts import User as U
from models.alerts import alerts
import models.reports.checkins as mc

async def resolve(i):
    await U.get(id=i)
    await U.filter(id=i).first()
    await alerts.Alert.get_or_none(id=i)
    await mc.CheckIn.all().count()
"""
    caught = list(violations(bad, "schema.fake", "schema/fake.py", found))
    assert {v.what for v in caught if v.key is None} == {
        "imports from tortoise.expressions",
        "imports tortoise.transactions",
    }
    assert {(v.key, v.line) for v in caught if v.key is not None} == {
        (("schema.fake", "User", "get"), 9),
        (("schema.fake", "User", "filter"), 10),
        (("schema.fake", "User", "first"), 10),
        (("schema.fake", "Alert", "get_or_none"), 11),
        (("schema.fake", "CheckIn", "all"), 12),
        (("schema.fake", "CheckIn", "count"), 12),
    }
    assert all(str(v).startswith("schema/fake.py:") for v in caught)
    clean = """
from models.alerts import alerts
async def resolve(viewer, i, mapping):
    mapping.get(i)
    await alerts.alert_for(viewer, i)
"""
    assert list(violations(clean, "schema.fake", "schema/fake.py", found)) == []
