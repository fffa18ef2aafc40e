"""Crisis wording (CLINICAL.md §7): the phrase list is the clinic's seed data, and no spelling,
quote, accent or invisible character hides a phrase from the scan of any patient's text. False
positives are acceptable, misses are not."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from api.settings import Settings
from models.kernel.clock import ManualClock
from models.kernel.policy import DEFAULT_POLICY
from models.safety.crisis import (
    SEED_CRISIS_PHRASES_FILE,
    CrisisPhrasesError,
    crisis_matches,
    normalise,
    parse_crisis_phrases,
)
from tests.conftest import Tokens, client_of, running_app
from tests.support.clinical import ALERTS, REPORT_SIDE_EFFECT, SUBMIT_CHECK_IN, complete, start
from tests.support.graphql import gql
from tests.support.messaging import SEND, thread_of

# The list of CLINICAL.md §7, as written there.
SECTION_7_PHRASES = (
    "kill myself",
    "killing myself",
    "suicide",
    "suicidal",
    "end my life",
    "end it all",
    "want to die",
    "wanna die",
    "better off dead",
    "hurt myself",
    "hurting myself",
    "self harm",
    "self-harm",
    "cut myself",
    "overdose",
    "take all my pills",
    "no reason to live",
    "can't go on",
    "cant go on",
    "can't breathe",
    "cant breathe",
    "chest pain",
)
PHRASES = DEFAULT_POLICY.crisis_phrases


def test_the_default_phrases_are_the_seed_file_and_exactly_the_list_of_section_7() -> None:
    assert SEED_CRISIS_PHRASES_FILE.parent.name == "seeds"
    assert PHRASES == SECTION_7_PHRASES


def test_every_crisis_phrase_of_section_7_is_matched_in_a_sentence() -> None:
    missed = [
        phrase
        for phrase in SECTION_7_PHRASES
        if phrase not in crisis_matches(f"Today was hard and honestly {phrase} is all I think about.", PHRASES)
    ]
    assert missed == []


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        # Case, quotes, punctuation and spacing.
        ("I CAN\u2019T   go on!!!", "can't go on"),
        ("can\u2019t  go on", "can't go on"),
        ("I can\u2018t breathe", "can't breathe"),
        ("He said \u201cSuicidal?\u201d and laughed", "suicidal"),
        ("END.   IT.   ALL.", "end it all"),
        ("want-to-die", "want to die"),
        ("better off\tdead\n", "better off dead"),
        ("self\u2013harm again", "self harm"),
        ("KILL, myself", "kill myself"),
        ("KILL...myself!!!", "kill myself"),
        ("self--harm again", "self harm"),
        ("I want to kill - myself", "kill myself"),
        ("#end_it_all", "end it all"),
        ("I can`t go on", "can't go on"),
        ("I can\u00b4t go on", "can't go on"),
        ("I can\u2032t go on", "can't go on"),
        ("I can\u02bct go on", "can't go on"),
        ("I can\uff07t go on", "can't go on"),
        ("I can t go on", "can't go on"),
        ("I cant go on", "can't go on"),
        ("kill\u2019myself", "kill myself"),
        # Words run together or spread apart.
        ("#KillMyself", "kill myself"),
        ("k i l l  m y s e l f", "kill myself"),
        ("over dose", "overdose"),
        # Format characters (category Cf) inside the words.
        ("c\u00adan't go on", "can't go on"),
        ("kill\u00admyself", "kill myself"),
        ("ki\u00adll my\u00adself", "kill myself"),
        ("sui\u200bcide", "suicide"),
        ("over\u200ddose", "overdose"),
        ("end my\u2060 life", "end my life"),
        ("\ufeffwant to die", "want to die"),
        ("hurt\u200c myself", "hurt myself"),
        ("self\u00ad-\u00adharm", "self-harm"),
        # Compatibility forms, accents and styled text.
        ("\uff4b\uff49\uff4c\uff4c \uff4d\uff59\uff53\uff45\uff4c\uff46", "kill myself"),  # fullwidth letters
        ("\U0001d42c\U0001d42e\U0001d422\U0001d41c\U0001d422\U0001d41d\U0001d41e", "suicide"),  # bold maths letters
        ("su\u0336i\u0336c\u0336i\u0336d\u0336e\u0336", "suicide"),  # combining strike-through
        ("SUICID\u00c9", "suicide"),
        ("better\u00a0off\u3000dead", "better off dead"),  # no-break and ideographic spaces
    ],
)
def test_crisis_wording_is_matched_whatever_its_case_quotes_punctuation_spacing_or_invisible_characters(
    text: str, phrase: str
) -> None:
    assert phrase in crisis_matches(text, PHRASES)


@pytest.mark.parametrize(
    "text",
    [None, "", "   ", "Slept well, a little nausea after the session.", "My sister is diving off the cliff"],
)
def test_ordinary_or_empty_text_matches_no_crisis_phrase(text: str | None) -> None:
    assert crisis_matches(text, PHRASES) == []


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("C\u00adAN\uff07T  Go   On!!", "can't go on"),
        ("ki\u00adll my\u200bse\u200dlf\u2060", "kill myself"),
        ("\ufeffCAN\u02bcT BREATHE", "can't breathe"),
        ("su\u0336i\u0336cide SUICID\u00c9", "suicide suicide"),
        ("\u201cSelf\u2011Harm\u201d", "self harm"),
        ("Stra\u00dfe", "strasse"),  # case folding, not lower-casing
        ("\ufb01nal \u2460", "final 1"),  # ligature and circled digit (NFKC)
    ],
)
def test_the_normaliser_folds_case_and_compatibility_forms_and_collapses_the_rest(raw: str, normalised: str) -> None:
    assert normalise(raw) == normalised


def test_a_clinics_phrases_are_normalised_like_the_text() -> None:
    phrases = ("DON\u2019T  want to wake up", "Disappear-for-good")
    assert crisis_matches("i don't want to wake up", phrases) == ["DON\u2019T  want to wake up"]
    assert crisis_matches("I will disappear for good.", phrases) == ["Disappear-for-good"]


FORMAT_CHARACTERS = st.text(st.characters(categories=["Cf"]), max_size=4)


@st.composite
def disguised(draw: st.DrawFn) -> tuple[str, str, str]:
    """A listed phrase, the phrase with any format characters at any positions, and that inside
    arbitrary text."""
    phrase = draw(st.sampled_from(PHRASES))
    gaps = draw(st.lists(FORMAT_CHARACTERS, min_size=len(phrase) + 1, max_size=len(phrase) + 1))
    hidden = "".join(gap + character for gap, character in zip(gaps, phrase, strict=False)) + gaps[-1]
    before, after = draw(st.text()), draw(st.text())
    return phrase, hidden, f"{before} {hidden} {after}"


@hypothesis_settings(max_examples=300, deadline=None)
@given(disguised())
def test_no_format_characters_anywhere_in_a_phrase_hide_it_in_any_text(case: tuple[str, str, str]) -> None:
    phrase, hidden, text = case
    assert normalise(hidden) == normalise(phrase)
    assert phrase in crisis_matches(text, PHRASES)


@hypothesis_settings(max_examples=200, deadline=None)
@given(before=st.text(), after=st.text(), phrase=st.sampled_from(PHRASES))
def test_a_phrase_run_into_arbitrary_text_is_still_found(before: str, after: str, phrase: str) -> None:
    assert phrase in crisis_matches(before + phrase + after, PHRASES)


# --- The phrase file --------------------------------------------------------------------------------


def test_a_phrase_file_has_one_phrase_a_line_with_comments_and_blank_lines_left_out() -> None:
    text = "# our clinic's additions\n\nkill myself\n   # indented comment\n  disappear for good  \n"
    assert parse_crisis_phrases(text) == ("kill myself", "disappear for good")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "it lists no phrase"),
        ("# only a comment\n\n", "it lists no phrase"),
        ("kill myself\n!!!\n", "line 2 ('!!!') has no letter or digit"),
        ("kill myself\n'\u200b'\n", "has no letter or digit"),  # would match every text
    ],
)
def test_a_phrase_file_without_a_usable_phrase_is_refused(text: str, problem: str) -> None:
    with pytest.raises(CrisisPhrasesError, match=re.escape(problem)):
        parse_crisis_phrases(text)


# --- Every patient's text, through the API ----------------------------------------------------------

DISGUISED = ["kill\u00admyself tonight", "I c\u00adan\uff07t go on"]


async def crisis_alerts(client: httpx.AsyncClient, tokens: Tokens) -> list[dict[str, Any]]:
    """The CRISIS_LANGUAGE alerts in Dr Rivera's queue (Alex's care team)."""
    queue = await gql(client, ALERTS, {"status": ["OPEN"]}, token=tokens.user("dr.rivera@demo.test"))
    nodes = [edge["node"] for edge in queue["data"]["alerts"]["edges"]]
    return [node for node in nodes if node["kind"] == "CRISIS_LANGUAGE"]


async def send_message(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, text: str
) -> dict[str, Any]:
    variables = {"input": {"threadId": await thread_of(app, "alex@demo.test"), "body": text}}
    body = await gql(client, SEND, variables, token=tokens.user("alex@demo.test"))
    assert body["data"]["sendMessage"]["result"]["__typename"] == "Message", body
    payload: dict[str, Any] = body["data"]["sendMessage"]
    return payload


async def submit_check_in(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, text: str
) -> dict[str, Any]:
    values = {"idempotencyKey": str(uuid.uuid4()), "recordedAt": clock.now().isoformat(), "pain": 4, "note": text}
    body = await gql(client, SUBMIT_CHECK_IN, {"input": values}, token=tokens.user("alex@demo.test"))
    assert body["data"]["submitCheckIn"]["result"]["__typename"] == "CheckIn", body
    payload: dict[str, Any] = body["data"]["submitCheckIn"]
    return payload


async def report_side_effect(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, text: str
) -> dict[str, Any]:
    values = {"code": "NAUSEA", "grade": "MILD", "onsetAt": clock.now().isoformat(), "note": text}
    body = await gql(client, REPORT_SIDE_EFFECT, {"input": values}, token=tokens.user("alex@demo.test"))
    assert body["data"]["reportSideEffect"]["result"]["__typename"] == "SideEffectReport", body
    payload: dict[str, Any] = body["data"]["reportSideEffect"]
    return payload


async def complete_session(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, text: str
) -> dict[str, Any]:
    alex = tokens.fresh("alex@demo.test")
    started = await start(client, alex, clock.now())
    assert started["result"]["__typename"] == "DosingSession", started
    clock.advance(timedelta(hours=3))
    done = await complete(client, alex, started["result"]["id"], notes=text)
    assert done["result"]["__typename"] == "DosingSession", done
    return done


WRITES = {
    "sendMessage": send_message,
    "submitCheckIn": submit_check_in,
    "reportSideEffect": report_side_effect,
    "completeDosingSession": complete_session,
}


@pytest.mark.parametrize("text", DISGUISED)
@pytest.mark.parametrize("write", sorted(WRITES))
async def test_a_soft_hyphen_or_a_fullwidth_apostrophe_hides_crisis_wording_in_no_patient_text(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock, write: str, text: str
) -> None:
    payload = await WRITES[write](app, client, tokens, clock, text)
    assert "988" in payload["crisisResources"]
    [alert] = await crisis_alerts(client, tokens)
    assert alert["severity"] == "URGENT"
    assert ('"kill myself"' in alert["summary"]) or ('"can\'t go on"' in alert["summary"])


CLINIC_PHRASE = "disappear for good"


@pytest.fixture
async def clinic_app(settings: Settings, clock: ManualClock, tmp_path: Path) -> AsyncIterator[Starlette]:
    """The app of a clinic whose phrase file is the seed list plus one phrase of its own, read from
    CRISIS_PHRASES_FILE like any deployment's."""
    phrases = tmp_path / "crisis_phrases.txt"
    phrases.write_text(SEED_CRISIS_PHRASES_FILE.read_text(encoding="utf-8") + f"# ours\n{CLINIC_PHRASE}\n")
    configured = Settings.from_env({"CRISIS_PHRASES_FILE": str(phrases)}, env_file=None)
    async with running_app(replace(settings, crisis_phrases=configured.crisis_phrases), clock) as application:
        yield application


@pytest.fixture
async def clinic_client(clinic_app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(clinic_app) as http:
        yield http


async def test_a_clinic_extends_the_list_and_its_own_phrase_raises_a_crisis_alert(
    clinic_app: Starlette, clinic_client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    sent = await send_message(
        clinic_app, clinic_client, tokens, clock, "Sometimes I just want to DISAPPEAR for\u00adgood."
    )
    assert "988" in sent["crisisResources"]
    [alert] = await crisis_alerts(clinic_client, tokens)
    assert alert["severity"] == "URGENT"
    assert f'"{CLINIC_PHRASE}"' in alert["summary"]


async def test_a_clinics_list_keeps_quiet_about_a_message_without_any_of_its_phrases(
    clinic_app: Starlette, clinic_client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    sent = await send_message(clinic_app, clinic_client, tokens, clock, "I disappeared into a good book all evening.")
    assert sent["crisisResources"] is None
    assert await crisis_alerts(clinic_client, tokens) == []


async def test_without_the_clinics_file_its_phrase_is_not_on_the_list(
    app: Starlette, client: httpx.AsyncClient, tokens: Tokens, clock: ManualClock
) -> None:
    sent = await send_message(app, client, tokens, clock, "Sometimes I just want to disappear for good.")
    assert sent["crisisResources"] is None
    assert await crisis_alerts(client, tokens) == []
