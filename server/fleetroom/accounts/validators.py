"""Password rules after NIST SP 800-63B rev. 4, section 3.1.1.2.

What the guideline asks, and how it is met here:

* **At least 15 characters, always.**  Rev. 4 allows 8 when the password is only
  one factor of several, but MFA can be removed later, a password reset does not
  re-check the length, and the same password also unlocks API-token issuance.
  One rule that always holds is simpler to explain and to test, and a passphrase
  of four ordinary words is already longer.  (Django's MinimumLengthValidator,
  configured in settings, enforces it; it counts Unicode code points, as asked.)
* **At least 64 characters allowed**; we allow up to 1024 (:class:`MaximumLengthValidator`)
  so a pasted essay cannot make every hash slow.
* **No composition rules, no periodic rotation**: nothing here asks for digits or
  symbols, and nothing expires passwords.
* **Blocklist** of common and breached passwords (Django's CommonPasswordValidator,
  settings) and of **context-specific words** (:class:`ContextWordValidator`): the
  service name, the username, the parts of the e-mail address, the person's names
  and whatever :mod:`fleetroom.accounts.policy` hooks add (the company name).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from fleetroom.accounts import policy

if TYPE_CHECKING:
    from fleetroom.accounts.models import User

MIN_CONTEXT_WORD_LENGTH = 4
"""Shorter words (``"jo"``, ``"com"``) appear inside too many honest passphrases."""

_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b",
                       "@": "a", "$": "s", "!": "i", "|": "l"})
_LEET_L = str.maketrans({"1": "l"})
_NOT_ALNUM = re.compile(r"[\W_]+", re.UNICODE)


def _fold(text: str) -> str:
    """Case- and width-insensitive form without spaces or punctuation."""
    return _NOT_ALNUM.sub("", unicodedata.normalize("NFKC", text).casefold())


def _variants(password: str) -> set[str]:
    """The password as typed and with common letter-for-digit swaps undone
    (``Fl33tr00m`` reads as ``fleetroom``); ``1`` may stand for ``i`` or ``l``."""
    base = unicodedata.normalize("NFKC", password).casefold()
    return {_fold(base), _fold(base.translate(_LEET)),
            _fold(base.translate(_LEET_L).translate(_LEET))}


class MaximumLengthValidator:
    """Refuse passwords longer than ``max_length`` characters (default 1024)."""

    def __init__(self, max_length: int = 1024) -> None:
        self.max_length = max_length

    def validate(self, password: str, user: User | None = None) -> None:
        """Raise when the password is too long."""
        if len(password) > self.max_length:
            raise ValidationError(
                ngettext("This password is too long. It must contain at most %(max)d character.",
                         "This password is too long. It must contain at most %(max)d characters.",
                         self.max_length),
                code="password_too_long", params={"max": self.max_length})

    def get_help_text(self) -> str:
        """Shown under the password field."""
        return ngettext("Your password can be up to %(max)d character long; passphrases "
                        "are welcome.",
                        "Your password can be up to %(max)d characters long; passphrases "
                        "are welcome.", self.max_length) % {"max": self.max_length}


class ContextWordValidator:
    """Refuse passwords that contain a word an attacker would try first for this account.

    ``extra_words`` come from settings; the per-user words from
    :func:`fleetroom.accounts.policy.context_words`.  A word matches anywhere in the
    password, ignoring case, spaces, punctuation and digit-for-letter swaps.
    """

    def __init__(self, extra_words: Iterable[str] = ()) -> None:
        self.extra_words = list(extra_words)

    def _words(self, user: User | None) -> list[str]:
        """Each context word whole and split into its parts ("Acme Printing GmbH" gives
        "acmeprintinggmbh", "acme", "printing", "gmbh"), folded, long enough to matter."""
        folded: set[str] = set()
        for word in [*self.extra_words, *policy.context_words(user)]:
            folded.add(_fold(word))
            folded.update(_fold(part) for part in _NOT_ALNUM.split(word))
        return sorted(w for w in folded if len(w) >= MIN_CONTEXT_WORD_LENGTH)

    def validate(self, password: str, user: User | None = None) -> None:
        """Raise when the password contains a context word."""
        variants = _variants(password)
        for word in self._words(user):
            if any(word in v for v in variants):
                raise ValidationError(
                    _("Your password must not contain your username, your name, parts of your "
                      "e-mail address, your company's name or the name of this service."),
                    code="password_context_word")

    def get_help_text(self) -> str:
        """Shown under the password field."""
        return _("Your password can't contain your username, your name, parts of your e-mail "
                 "address, your company's name or the name of this service.")
