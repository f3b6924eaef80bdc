"""Signed sessions bound to audio, and the proof-of-work challenge (see docs/sessions.md)."""

from guard.sessions.apps import issue_token, sign_stream_url
from guard.sessions.settings import ChallengeSettings, CookieSettings, SessionSettings
from guard.sessions.tokens import Session, SessionKeys

__all__ = [
    "ChallengeSettings",
    "CookieSettings",
    "Session",
    "SessionKeys",
    "SessionSettings",
    "issue_token",
    "sign_stream_url",
]
