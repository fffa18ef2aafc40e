"""docs/rules.md, the index of CLINICAL.md's rules (issue #17): every rule is one function of
`models/`, listed under its section with the test file that covers it.

The page is parsed as a reader sees it: a `## §N` heading per section, then a table whose rows
name a function (`models.area.module.function`) and test files. Each function must exist and its
docstring must name the section it is listed under; each test file must exist; every section of
CLINICAL.md that holds rules must have a row.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INDEX = ROOT / "docs" / "rules.md"

# CLINICAL.md's sections that hold rules. §12 (the regulation that shapes the design) is answered
# by access rules and the audit log (docs/security.md), not by a clinical rule.
RULE_SECTIONS = frozenset(range(12))
NOT_RULE_SECTIONS = frozenset({12})

# Functions listed in the index whose docstring does not name their section yet, each with why.
# The test fails when one of them names it (remove the entry: the list only shrinks) and when any
# other function does not.
DOCSTRING_PENDING: dict[str, str] = {}

_HEADING = re.compile(r"^## §(\d+)\b")
_FUNCTION = re.compile(r"^`(models(?:\.\w+)+)`$")
_TEST_FILE = re.compile(r"`(tests/[\w/]+\.py)`")


@dataclass(frozen=True)
class Row:
    line: int
    section: int
    rule: str
    function: str
    tests: tuple[str, ...]


def index_rows(text: str) -> tuple[list[int], list[Row], list[str]]:
    """The `## §N` headings of the page, its rows, and what cannot be read (each with its line)."""
    headings: list[int] = []
    rows: list[Row] = []
    problems: list[str] = []
    section: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("## "):
            match = _HEADING.match(line)
            section = int(match[1]) if match else None
            if match:
                headings.append(section)  # type: ignore[arg-type]
            continue
        if section is None or not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells[0] == "rule" or set(line) <= set("|-: "):
            continue  # the header and its rule
        if len(cells) != 4:
            problems.append(f"docs/rules.md:{number}: a row has 4 cells (rule, function, thresholds, tests)")
            continue
        function = _FUNCTION.match(cells[1])
        tests = tuple(_TEST_FILE.findall(cells[3]))
        if function is None:
            problems.append(f"docs/rules.md:{number}: the function cell is one `models.area.module.function`")
            continue
        if not tests:
            problems.append(f"docs/rules.md:{number}: no test file named")
        rows.append(Row(number, section, cells[0], function[1], tests))
    return headings, rows, problems


def resolve(dotted: str) -> object:
    """The object a dotted path names: the longest importable module, then its attributes.
    Raises LookupError saying what is missing."""
    parts = dotted.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            found: object = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is not None and module_name.startswith(error.name):
                continue
            raise
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                raise LookupError(f"{module_name} has no {'.'.join(parts[cut:])}")
            found = getattr(found, attribute)
        return found
    raise LookupError(f"no module of {dotted} can be imported")


def docstring(found: object) -> str:
    if isinstance(found, property):
        found = found.fget
    return inspect.getdoc(found) or ""


def names_section(text: str, section: int) -> bool:
    return re.search(rf"§{section}(?!\d)", text) is not None


ROWS_TEXT = INDEX.read_text(encoding="utf-8")
HEADINGS, ROWS, UNREADABLE = index_rows(ROWS_TEXT)


def test_every_row_of_the_index_can_be_read() -> None:
    assert ROWS, "docs/rules.md lists no rule"
    assert UNREADABLE == []


def test_every_function_named_exists_and_is_a_function() -> None:
    problems = []
    for row in ROWS:
        try:
            found = resolve(row.function)
        except LookupError as error:
            problems.append(f"docs/rules.md:{row.line}: {row.function}: {error}")
            continue
        if not (inspect.isfunction(found) or isinstance(found, property)):
            problems.append(f"docs/rules.md:{row.line}: {row.function} is not a function")
    assert problems == []


def test_every_function_s_docstring_names_the_section_it_is_listed_under() -> None:
    missing = []
    for row in ROWS:
        if row.function in DOCSTRING_PENDING:
            continue
        try:
            text = docstring(resolve(row.function))
        except LookupError:
            continue  # reported by the test above
        if not names_section(text, row.section):
            missing.append(f"docs/rules.md:{row.line}: the docstring of {row.function} does not name §{row.section}")
    assert missing == []


def test_the_functions_whose_docstring_is_pending_are_listed_and_still_pending() -> None:
    """The list only shrinks: a function that now names its section is taken off it."""
    listed = {row.function: row for row in ROWS}
    stale = []
    for function, why in DOCSTRING_PENDING.items():
        row = listed.get(function)
        if row is None:
            stale.append(f"{function} ({why}) is not in docs/rules.md")
        elif names_section(docstring(resolve(function)), row.section):
            stale.append(f"{function} names §{row.section} now: take it off DOCSTRING_PENDING")
    assert stale == []


def test_every_test_file_named_exists() -> None:
    missing = [
        f"docs/rules.md:{row.line}: {test} does not exist" for row in ROWS for test in row.tests
        if not (ROOT / test).is_file()
    ]  # fmt: skip
    assert missing == []


def test_every_section_of_clinical_md_with_rules_has_a_row() -> None:
    assert sorted(set(HEADINGS)) == sorted(RULE_SECTIONS), "one `## §N` heading per section of CLINICAL.md"
    assert len(HEADINGS) == len(set(HEADINGS)), "each section once"
    empty = sorted(RULE_SECTIONS - {row.section for row in ROWS})
    assert empty == [], f"sections of CLINICAL.md without a row in docs/rules.md: {empty}"


def _clinical_md() -> Path | None:
    """CLINICAL.md lives beside the repository, in the shared docs (docs/clinical.md links it)."""
    for folder in ROOT.parents:
        candidate = folder / "shared" / "docs" / "CLINICAL.md"
        if candidate.is_file():
            return candidate
    return None


def test_the_sections_are_those_of_clinical_md() -> None:
    found = _clinical_md()
    if found is None:
        pytest.skip("CLINICAL.md is not beside this checkout (shared/docs/CLINICAL.md)")
    sections = {int(match[1]) for match in re.finditer(r"^## (\d+)\. ", found.read_text(encoding="utf-8"), re.M)}
    assert sections - NOT_RULE_SECTIONS == RULE_SECTIONS


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("| a rule | `models.safety.rules.no_such_rule` | — | `tests/safety/test_clinical_rules.py` |", "missing"),
        ("| a rule | `models.safety.rules.reading_findings` | — | `tests/safety/test_clinical_rules.py` |", "section"),
        ("| a rule | `models.safety.rules.crisis_findings` | — | `tests/test_no_such_file.py` |", "test file"),
        ("| a rule | models.safety.rules.crisis_findings | — | `tests/safety/test_crisis.py` |", "unreadable"),
    ],
)
def test_a_broken_row_is_caught(row: str, problem: str) -> None:
    """The checks above fail on a row that is wrong (the index cannot rot quietly)."""
    headings, rows, unreadable = index_rows(
        f"## §9 Alerts\n\n| rule | function | thresholds | tests |\n|---|---|---|---|\n{row}\n"
    )
    assert headings == [9]
    if problem == "unreadable":
        assert unreadable and not rows
        return
    (parsed,) = rows
    if problem == "missing":
        with pytest.raises(LookupError):
            resolve(parsed.function)
    elif problem == "section":
        assert not names_section(docstring(resolve(parsed.function)), parsed.section)
    else:
        assert not all((ROOT / test).is_file() for test in parsed.tests)
