"""Surveys as FHIR: an answer set as a QuestionnaireResponse, its total score as an Observation
`<response id>-total` (CLINICAL.md §11), an instrument's definition as a Questionnaire
`<code>-<version>` (PRODUCT.md capability 10).

A response and its score are read under the patient's chart rule (`owned_record`); a
Questionnaire holds no patient data and is read by anyone signed in.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from models.ehr.fhir.common import (
    LOINC,
    UCUM,
    Readable,
    Records,
    Resource,
    category,
    concept,
    instant,
    meta,
    owned_record,
    questionnaire_canonical,
    record_id,
    reference,
)
from models.identity.access import Viewer
from models.identity.accounts import Patient
from models.kernel.errors import NotFound
from models.surveys.instruments import Instrument, InstrumentDefinition
from models.surveys.survey_records import SurveyResponse

SCORE_SUFFIX = "-total"


def questionnaire_response(response: SurveyResponse, definition: InstrumentDefinition) -> dict[str, Any]:
    """CLINICAL.md §11 (and §5): a survey answer set, each answer as its LOINC answer code where the
    instrument has one."""
    items = []
    for item in definition.items:
        if item.link_id not in response.answers:
            continue
        value = response.answers[item.link_id]
        option = next((o for o in item.options if o.value == value), None)
        if option is not None and option.loinc:
            answer: dict[str, Any] = {"valueCoding": {"system": LOINC, "code": option.loinc, "display": option.label}}
        else:
            answer = {"valueInteger": value}
        entry: dict[str, Any] = {"linkId": item.link_id, "text": item.text, "answer": [answer]}
        if item.loinc:
            entry["definition"] = f"{LOINC}/{item.loinc}"
        items.append(entry)
    return {
        "resourceType": "QuestionnaireResponse",
        "id": str(response.id),
        "meta": meta(response.updated_at),
        "questionnaire": questionnaire_canonical(definition.code, definition.version),
        "status": "completed",
        "subject": reference("Patient", response.patient_id),  # type: ignore[attr-defined]
        "authored": instant(response.answered_at),
        "item": items,
    }


def score_observation(response: SurveyResponse, definition: InstrumentDefinition) -> dict[str, Any] | None:
    """CLINICAL.md §11: an Observation per total score (LOINC total code where the instrument has
    one), `derivedFrom` its QuestionnaireResponse; None for an unscored instrument."""
    if response.total_score is None:
        return None
    title = f"{definition.title} total score"
    code = concept(LOINC, definition.loinc_total, title) if definition.loinc_total else {"text": title}
    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"{response.id}{SCORE_SUFFIX}",
        "meta": meta(response.updated_at),
        "status": "final",
        "category": category("survey", "Survey"),
        "code": code,
        "subject": reference("Patient", response.patient_id),  # type: ignore[attr-defined]
        "effectiveDateTime": instant(response.answered_at),
        "issued": instant(response.submitted_at),
        "valueQuantity": {"value": float(response.total_score), "unit": "{score}", "system": UCUM, "code": "{score}"},
        "derivedFrom": [reference("QuestionnaireResponse", response.id)],
    }
    if response.severity:
        observation["interpretation"] = [{"text": response.severity}]
    return observation


def _questionnaire_id(definition: InstrumentDefinition) -> str:
    return f"{definition.code}-{definition.version}"


def questionnaire(definition: InstrumentDefinition) -> dict[str, Any]:
    """An instrument's definition as a Questionnaire (the canonical its responses name), items
    with their LOINC codes and answer options."""
    items = []
    for item in definition.items:
        coded = bool(item.options) and all(option.loinc for option in item.options)
        entry: dict[str, Any] = {
            "linkId": item.link_id,
            "text": item.text,
            "type": "choice" if coded else "integer",
            "required": item.required,
        }
        if item.loinc:
            entry["code"] = [{"system": LOINC, "code": item.loinc}]
        if coded:
            entry["answerOption"] = [
                {"valueCoding": {"system": LOINC, "code": option.loinc, "display": option.label}}
                for option in item.options
            ]
        elif item.options:
            entry["answerOption"] = [{"valueInteger": option.value} for option in item.options]
        items.append(entry)
    resource: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "id": _questionnaire_id(definition),
        "url": questionnaire_canonical(definition.code),
        "version": definition.version,
        "name": "".join(character for character in definition.code if character.isalnum()),
        "title": definition.title,
        "status": "active",
        "subjectType": ["Patient"],
        "item": items,
    }
    if definition.loinc_panel:
        resource["code"] = [{"system": LOINC, "code": definition.loinc_panel}]
    if definition.preamble:
        resource["description"] = definition.preamble
    if definition.source:
        resource["copyright"] = definition.source
    return resource


async def _definition(response: SurveyResponse) -> InstrumentDefinition:
    row = await Instrument.get(code=response.instrument, version=response.instrument_version)
    return InstrumentDefinition.parse(row.definition)


async def _response(viewer: Viewer, resource_id: str) -> tuple[SurveyResponse, InstrumentDefinition]:
    response = await owned_record(viewer, SurveyResponse, record_id(resource_id), "QuestionnaireResponse")
    return response, await _definition(response)


async def _scored_response(viewer: Viewer, resource_id: str) -> tuple[SurveyResponse, InstrumentDefinition]:
    response_id = record_id(resource_id.removesuffix(SCORE_SUFFIX))
    response = await owned_record(viewer, SurveyResponse, response_id, "Observation")
    return response, await _definition(response)


def _is_score_id(resource_id: str) -> bool:
    return resource_id.endswith(SCORE_SUFFIX)


async def _instrument(viewer: Viewer, questionnaire_id: str) -> InstrumentDefinition:
    """Any instrument version by its Questionnaire id, whoever asks (no patient data)."""
    code, _, version = questionnaire_id.rpartition("-")
    row = await Instrument.get_or_none(code=code, version=version)
    if row is None:
        raise NotFound("resource")
    return InstrumentDefinition.parse(row.definition)


QUESTIONNAIRE_RESPONSE = Readable("QuestionnaireResponse", _response, lambda found: questionnaire_response(*found))
SCORE_OBSERVATION = Readable(
    "Observation", _scored_response, lambda found: score_observation(*found), claims=_is_score_id
)
QUESTIONNAIRE = Readable("Questionnaire", _instrument, questionnaire)


def _resources(response: SurveyResponse, definition: InstrumentDefinition) -> list[Resource]:
    """A response and, when the instrument is scored, its score."""
    scored = score_observation(response, definition)
    return [questionnaire_response(response, definition), *([scored] if scored else [])]


async def _responses(ids: list[UUID]) -> dict[UUID, list[Resource]]:
    responses = await SurveyResponse.filter(id__in=ids)
    wanted = {(response.instrument, response.instrument_version) for response in responses}
    definitions = {
        (row.code, row.version): InstrumentDefinition.parse(row.definition)
        for row in await Instrument.filter(code__in=sorted({code for code, _ in wanted}))
    }
    return {
        response.id: _resources(response, definitions[(response.instrument, response.instrument_version)])
        for response in responses
    }


async def _responses_of(patient: Patient) -> list[Resource]:
    definitions = {
        (row.code, row.version): InstrumentDefinition.parse(row.definition) for row in await Instrument.all()
    }
    responses = await SurveyResponse.filter(patient_id=patient.id).order_by("submitted_at", "id")
    return [
        resource
        for response in responses
        for resource in _resources(response, definitions[(response.instrument, response.instrument_version)])
    ]


RESPONSES = Records("SurveyResponse", ("QuestionnaireResponse", "Observation"), _responses, _responses_of)
