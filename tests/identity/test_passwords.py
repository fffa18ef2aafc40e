"""New passwords follow NIST SP 800-63B: length, not composition; common ones and personal ones refused."""

from __future__ import annotations

import pytest

from models.identity.passwords import common_passwords, password_problem

TOO_SHORT = "the password must be at least 12 characters long"
TOO_LONG = "the password must be at most 128 characters long"
COMMON = "the password is too common: it appears on lists of passwords attackers try first"
REPETITIVE = "the password repeats too few different characters"
EMAIL = "the password must not contain your e-mail address"
NAME = "the password must not contain your name"


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("", TOO_SHORT),
        ("eleven char", TOO_SHORT),
        ("twelve chars", None),
        ("🦊🦊 fox in the snow", None),  # any characters, spaces and emoji included
        ("x" * 129, TOO_LONG),
        (("a quiet river bend " * 7)[:128], None),  # 128 exactly
        ("password1234", COMMON),
        ("PASSWORD1234", COMMON),  # case does not make it rare
        ("Qwertyuiop123", COMMON),
        ("iloveyou2019!", COMMON),
        ("correct horse battery staple", COMMON),
        ("football!!!!!!", COMMON),  # a common word with decoration at the end
        ("aaaaaaaaaaaaaaa", REPETITIVE),
        ("abababababababab", REPETITIVE),
    ],
)
def test_a_new_password_is_judged_by_length_and_commonness(password: str, reason: str | None) -> None:
    assert password_problem(password) == reason


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("alex.morgan-secure-2026", EMAIL),
        ("ALEX.MORGAN likes tea", EMAIL),
        ("tea with morgan each day", NAME),
        ("Alexandra's green lamp", NAME),
        ("a lamp that is green", None),
    ],
)
def test_a_new_password_must_not_contain_the_owners_e_mail_or_name(password: str, reason: str | None) -> None:
    assert password_problem(password, email="alex.morgan@demo.test", names=["Alexandra", "Morgan"]) == reason


def test_the_shipped_list_holds_thousands_of_lower_case_passwords() -> None:
    listed = common_passwords()
    assert len(listed) > 5000
    assert all(entry == entry.lower() for entry in listed)
    assert {"password", "qwerty123", "letmein1"} <= listed
