"""Survey instruments as data (CLINICAL.md §5), and their scoring on the server.

Definitions are versioned JSON documents (`seeds/instruments/*.json`) stored in `Instrument`;
a response keeps the version it was scored with. Only instruments free to use without a licence
are shipped. Scoring, severity bands and alert rules are read from the definition by the pure
functions below; an incomplete or out-of-range answer is refused with the item named.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any
from uuid import UUID

from tortoise import fields
from tortoise.models import Model
from tortoise.queryset import ValuesListQuery

from models.alerts.alert_rules import AlertKind, AlertSpec, Severity
from models.kernel.errors import InvalidInput, NotFound
from models.kernel.prepared import prepared, prepared_read

# CLINICAL.md §5 / PRODUCT.md: what a patient may take at any time, without an assignment.
ON_DEMAND = frozenset({"PHQ-9", "GAD-7", "PAIN-NRS", "PEG-3"})


class Instrument(Model):
    id = fields.UUIDField(primary_key=True)
    code = fields.CharField(max_length=32)
    version = fields.CharField(max_length=16)
    definition: dict[str, Any] = fields.JSONField()
    loaded_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "instrument"
        unique_together = (("code", "version"),)


@dataclass(frozen=True)
class Option:
    value: int
    label: str
    loinc: str | None


@dataclass(frozen=True)
class Item:
    link_id: str
    text: str
    loinc: str | None
    options: tuple[Option, ...]
    scored: bool
    required: bool

    def allows(self, value: int) -> bool:
        return any(option.value == value for option in self.options)


@dataclass(frozen=True)
class Band:
    minimum: Decimal
    maximum: Decimal
    name: str


@dataclass(frozen=True)
class AlertRule:
    id: str
    condition: dict[str, Any]
    severity: Severity
    summary: str
    advice: str | None


@dataclass(frozen=True)
class InstrumentDefinition:
    code: str
    version: str
    title: str
    preamble: str
    source: str
    system: str
    loinc_panel: str | None
    loinc_total: str | None
    items: tuple[Item, ...]
    method: str
    decimals: int
    bands: tuple[Band, ...]
    alerts: tuple[AlertRule, ...]

    @classmethod
    def parse(cls, data: dict[str, Any]) -> InstrumentDefinition:
        return cls(
            code=data["code"],
            version=data["version"],
            title=data["title"],
            preamble=data.get("preamble", ""),
            source=data.get("source", ""),
            system=data["system"],
            loinc_panel=data.get("loinc", {}).get("panel"),
            loinc_total=data.get("loinc", {}).get("total"),
            items=tuple(
                Item(
                    link_id=item["linkId"],
                    text=item["text"],
                    loinc=item.get("loinc"),
                    options=tuple(Option(o["value"], o["label"], o.get("loinc")) for o in item["options"]),
                    scored=item["scored"],
                    required=item["required"],
                )
                for item in data["items"]
            ),
            method=data["scoring"]["method"],
            decimals=data["scoring"].get("decimals", 0),
            bands=tuple(Band(Decimal(b["min"]), Decimal(b["max"]), b["name"]) for b in data["bands"]),
            alerts=tuple(
                AlertRule(rule["id"], rule["when"], Severity(rule["severity"]), rule["summary"], rule.get("advice"))
                for rule in data["alerts"]
            ),
        )

    def item(self, link_id: str) -> Item | None:
        return next((item for item in self.items if item.link_id == link_id), None)


@dataclass(frozen=True)
class Score:
    total: Decimal | None
    severity: str | None
    alerts: tuple[AlertRule, ...]


def validate_answers(definition: InstrumentDefinition, answers: dict[str, int]) -> None:
    """Every required item answered, every answer one of its options (CLINICAL.md §5)."""
    unknown = sorted(set(answers) - {item.link_id for item in definition.items}, key=_numeric)
    if unknown:
        raise InvalidInput(f"answers.{unknown[0]}", f"{definition.code} has no item {unknown[0]}")
    for item in definition.items:
        if item.link_id not in answers:
            if item.required:
                raise InvalidInput(f"answers.{item.link_id}", f"{definition.code} item {item.link_id} is not answered")
            continue
        if not item.allows(answers[item.link_id]):
            allowed = ", ".join(str(option.value) for option in item.options)
            raise InvalidInput(
                f"answers.{item.link_id}",
                f"{definition.code} item {item.link_id}: {answers[item.link_id]} is not one of {allowed}",
            )


def _numeric(link_id: str) -> tuple[int, str]:
    return (int(link_id), link_id) if link_id.isascii() and link_id.isdecimal() else (10**6, link_id)


def total_score(definition: InstrumentDefinition, answers: dict[str, int]) -> Decimal | None:
    """CLINICAL.md §5: the sum (PHQ-9, GAD-7, NRS) or the mean to `decimals` places (PEG-3, to one
    decimal) of the scored items, as the definition's `scoring` says; None for an instrument
    without a score (the post-session check, the weekly safety survey)."""
    values = [Decimal(answers[item.link_id]) for item in definition.items if item.scored and item.link_id in answers]
    if definition.method == "none" or not values:
        return None
    if definition.method == "sum":
        return sum(values, Decimal(0))
    if definition.method == "mean":
        quantum = Decimal(1).scaleb(-definition.decimals)
        return (sum(values, Decimal(0)) / len(values)).quantize(quantum, rounding=ROUND_HALF_UP)
    raise ValueError(f"unknown scoring method {definition.method!r}")


def severity_band(definition: InstrumentDefinition, total: Decimal | None) -> str | None:
    """CLINICAL.md §5: the band containing `total` (e.g. PHQ-9 15-19 → MODERATELY_SEVERE), if the
    instrument has bands; the bands are the definition's (seed data)."""
    if total is None:
        return None
    return next((band.name for band in definition.bands if band.minimum <= total <= band.maximum), None)


_OPERATORS: dict[str, Callable[[Decimal | int, Decimal | int], bool]] = {
    "eq": lambda a, b: a == b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
}


def rule_fires(rule: AlertRule, answers: dict[str, int], total: Decimal | None, baseline: Decimal | None) -> bool:
    """One alert rule of a definition: on an item, on any of several items, or on the total;
    a rule on the total may also ask for the patient's baseline (CLINICAL.md §5, pain NRS): with
    `above_baseline` it fires only when the total is that many points over a known baseline, with
    `without_baseline` only while the patient has none (a baseline is never guessed)."""
    condition = rule.condition
    compare = _OPERATORS[condition["op"]]
    if "item" in condition:
        value = answers.get(condition["item"])
        return value is not None and bool(compare(value, condition["value"]))
    if "any_item" in condition:
        return any(
            answers.get(link_id) is not None and compare(answers[link_id], condition["value"])
            for link_id in condition["any_item"]
        )
    if condition.get("total"):
        if total is None or not compare(total, Decimal(condition["value"])):
            return False
        if condition.get("without_baseline"):
            return baseline is None
        rise = condition.get("above_baseline")
        return rise is None or (baseline is not None and total - baseline >= Decimal(rise))
    raise ValueError(f"alert rule {rule.id} has no condition this code understands")


def score(definition: InstrumentDefinition, answers: dict[str, int], *, baseline: Decimal | None = None) -> Score:
    """CLINICAL.md §5: validate and score a response on the server: total, severity band, and the
    alert rules it trips."""
    validate_answers(definition, answers)
    total = total_score(definition, answers)
    fired = tuple(rule for rule in definition.alerts if rule_fires(rule, answers, total, baseline))
    return Score(total=total, severity=severity_band(definition, total), alerts=fired)


def screen_answers(
    definition: InstrumentDefinition, answers: Sequence[tuple[str, int]], *, baseline: Decimal | None = None
) -> tuple[AlertRule, ...]:
    """The alert rules that answers trip whether or not they are complete, valid or on time
    (CLINICAL.md §0, §5): an item rule fires if any value sent for its item trips it (an item sent
    twice is screened with both values); a total rule on the total of what was sent."""
    last = dict(answers)
    total = total_score(definition, last)
    fired = []
    for rule in definition.alerts:
        if "total" in rule.condition:
            trips = rule_fires(rule, last, total, baseline)
        else:
            trips = any(rule_fires(rule, {link_id: value}, None, baseline) for link_id, value in answers)
        if trips:
            fired.append(rule)
    return tuple(fired)


def alert_spec(definition: InstrumentDefinition, rule: AlertRule) -> AlertSpec:
    """CLINICAL.md §5: the alert a tripped rule raises, at the severity its definition gives; the
    rule's id tells alerts of one response apart (§9 duplicate suppression)."""
    return AlertSpec(AlertKind.SURVEY_ANSWER, rule.severity, f"{definition.code}: {rule.summary}", rule=rule.id)


async def load_definition(data: dict[str, Any]) -> bool:
    """Store a definition if this code and version are new. Returns whether it was added.

    A stored version is never changed: a corrected instrument is a new version.
    """
    definition = InstrumentDefinition.parse(data)
    if await Instrument.exists(code=definition.code, version=definition.version):
        return False
    await Instrument.create(code=definition.code, version=definition.version, definition=data)
    return True


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isascii() and part.isdecimal() else 0 for part in version.split("."))


# A stored version never changes (`register_instrument`): each row is parsed once per process.
_parsed: dict[UUID, InstrumentDefinition] = {}


@prepared_read(Instrument)
def _stored_versions() -> ValuesListQuery[Any]:
    return Instrument.all().values_list("id", "code", "version")


async def current_definitions() -> dict[str, InstrumentDefinition]:
    """The latest version of every instrument, by code (the versions are read every time; a
    definition is parsed the first time its row is seen)."""
    latest: dict[str, tuple[UUID, str]] = {}
    for row_id, code, version in await prepared(_stored_versions):
        known = latest.get(code)
        if known is None or _version_key(version) > _version_key(known[1]):
            latest[code] = (row_id, version)
    missing = [row_id for row_id, _ in latest.values() if row_id not in _parsed]
    if missing:
        for row_id, data in await Instrument.filter(id__in=missing).values_list("id", "definition"):
            _parsed[row_id] = InstrumentDefinition.parse(data)
    return {code: _parsed[row_id] for code, (row_id, _) in latest.items()}


async def definition_of(code: str) -> InstrumentDefinition:
    found = (await current_definitions()).get(code)
    if found is None:
        raise NotFound(f"instrument {code}")
    return found
