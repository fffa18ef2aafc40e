"""Opaque bearer tokens: refresh tokens, the tokens of e-mailed links, mfa tokens.

Random (256 bits), handed to the client once and stored only as their SHA-256, so a copy of the
tables signs nobody in. (A slow hash would add nothing: the tokens are not guessable.)
"""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> tuple[str, str]:
    """A new token and the hash to store for it."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
