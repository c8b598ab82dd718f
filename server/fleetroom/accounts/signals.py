"""Signals other apps connect to; this app sends them, it never listens to them.

* ``user_locked_out`` — a login name was just locked after too many failures
  (password or second factor).  Connect notifications here (mail the user,
  alert the operator).  Sent once per lockout, not on every refused attempt.
  Arguments: ``username`` (canonical login name), ``user`` (or ``None`` for a
  name that is no account), ``ip_address``, ``locked_until``, ``number`` (the
  how-many-th lockout in a row), ``request``.
* ``user_deactivated`` — an account was deactivated (idle, or by an admin).
  **Revoke the user's API tokens here.**  Sent inside the deactivation's
  transaction, so an exception rolls the deactivation back rather than leaving
  a deactivated user with live tokens.  Arguments: ``user``, ``reason``,
  ``acting_user``.
* ``user_sessions_ended`` — every session of a user was ended (password change
  or reset, deactivation).  Token-based clients that mirror sessions can drop
  theirs.  Arguments: ``user``, ``reason``, ``kept_session_key``.
"""

from __future__ import annotations

from django.dispatch import Signal

user_locked_out = Signal()
user_deactivated = Signal()
user_sessions_ended = Signal()
