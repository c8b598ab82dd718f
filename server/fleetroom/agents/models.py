"""Agents, their enrollment tokens, what they sent, and what the server asks of them.

Write only through :mod:`fleetroom.agents.services` (people's actions, enrollment)
and :mod:`fleetroom.agents.receive` / :mod:`fleetroom.agents.processing` (agent
traffic); read through :mod:`fleetroom.agents.selectors` and the tenant scope.

Design, and why:

* **One tenant foreign key**, like ``Device.tenant``: the site the agent reports
  for, or the customer when it was enrolled without a site.  Ingest needs exactly
  that node and so does the scope (a membership restricted to one site sees that
  site's agents), so a second "site" column could only disagree with it;
  :attr:`Agent.site` and :attr:`Agent.customer` read it back.
* **The tenant of everything an agent sends comes from this row**, never from a
  payload: a reading, a gap, a command result are all filed under
  ``agent.tenant``.
* **Item keys ``(agent, store, stream, seq)`` are unique** (:class:`ReceivedItem`).
  Inserting them with "ignore conflicts" in the transaction that stores the raw
  batch is what makes a repeated upload harmless, whatever the transport.
* **Raw batches are kept** as the signed envelope exactly as received (its body is
  gzip already), so a batch can be re-verified and re-normalised, and nothing an
  agent was told "acknowledged" exists only in a background queue.
* **Only a hash of an enrollment token is stored**; the clear token is shown once.
"""

from __future__ import annotations

import uuid
from typing import ClassVar, Self

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from fleetroom_protocol.keys import decode_public_key, decode_verify_key
from fleetroom_protocol.messages import AgentState, Schedule
from nacl.public import PublicKey
from nacl.signing import VerifyKey

from fleetroom.core.scoping import ScopedManager
from fleetroom.tenancy.models import Tenant, TenantKind


def new_public_id() -> str:
    """A fresh agent or command id: a random UUID as text (what goes on the wire)."""
    return str(uuid.uuid4())


class AgentStatus(models.TextChoices):
    """Whether the server accepts an agent's traffic."""

    ACTIVE = "active", _("Active")
    SUSPENDED = "suspended", _("Suspended")
    """Refused until an administrator re-enrolls (or un-suspends) it."""
    REVOKED = "revoked", _("Revoked")
    """Refused for good; enroll a new agent instead."""


class StatusReason(models.TextChoices):
    """Why an agent is not active (shown beside the status)."""

    NONE = "", _("—")
    POLICY = "policy", _("Too many requests that broke policy")
    ADMIN = "admin", _("By an administrator")


class Violation(models.TextChoices):
    """Validly signed requests that break policy (five suspend the agent)."""

    SUSPENDED = "suspended", _("Sent while suspended")
    REVOKED = "revoked", _("Sent with a revoked key")
    REPLAYED = "replayed", _("Message counter used before")
    TOO_OLD = "too_old", _("Message counter far behind the newest")
    WRONG_RECIPIENT = "wrong_recipient", _("Addressed to someone other than this server")
    WRONG_CHANNEL = "wrong_channel", _("Sent on another agent's channel")


class EnrollmentToken(models.Model):
    """A secret an administrator hands to an installer to enroll agents.

    Stored: a non-secret ``prefix`` (to tell tokens apart in lists) and the
    SHA-256 of the whole token.  The token carries 256 random bits, so a fast
    hash is enough (no guess can ever be checked faster than the server answers
    it) and lookups are one indexed query.  ``for_agent`` makes it a
    re-enrollment token: using it gives that existing agent new keys instead of
    creating a new agent.
    """

    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.PROTECT,
                               related_name="agent_tokens",
                               help_text=_("The site, or the customer when it has no sites."))
    prefix = models.CharField(_("token prefix"), max_length=16, editable=False)
    token_hash = models.CharField(_("token hash"), max_length=64, unique=True, editable=False)
    label = models.CharField(_("label"), max_length=200, blank=True)
    expires_at = models.DateTimeField(_("expires at"))
    max_uses = models.PositiveIntegerField(_("maximum uses"), default=1)
    uses = models.PositiveIntegerField(_("times used"), default=0)
    source_network = models.CharField(
        _("source network"), max_length=64, blank=True,
        help_text=_("Only agents connecting from this network (CIDR) may use the token."))
    for_agent = models.ForeignKey("Agent", verbose_name=_("re-enrolls agent"), null=True,
                                  blank=True, on_delete=models.PROTECT,
                                  related_name="reenroll_tokens")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    last_used_at = models.DateTimeField(_("last used at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("revoked by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("enrollment token")
        verbose_name_plural = _("enrollment tokens")
        constraints = [
            models.CheckConstraint(condition=Q(max_uses__gte=1),
                                   name="agents_token_max_uses_min_1"),
            models.CheckConstraint(condition=Q(uses__lte=models.F("max_uses")),
                                   name="agents_token_uses_lte_max"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant_id})"


class Agent(models.Model):
    """One enrolled agent: its public keys, its state as last reported, its schedule."""

    public_id = models.CharField(_("agent id"), max_length=36, unique=True, editable=False,
                                 default=new_public_id)
    """The id on the wire (envelope ``sender``/``to``, MQTT topics)."""
    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.PROTECT,
                               related_name="agents",
                               help_text=_("The site, or the customer when it has no sites."))
    name = models.CharField(_("name"), max_length=200, blank=True)
    hostname = models.CharField(_("host name"), max_length=255, blank=True)
    version = models.CharField(_("version"), max_length=64, blank=True)
    platform = models.CharField(_("platform"), max_length=128, blank=True)
    signing_key = models.CharField(_("signing key"), max_length=64)
    """Ed25519 public key, base64 (``fleetroom_protocol.keys.encode_key``)."""
    encryption_key = models.CharField(_("encryption key"), max_length=64)
    """X25519 public key, base64."""
    key_id = models.CharField(_("key id"), max_length=16, unique=True)
    """``key_id`` of ``signing_key``: never shared by two agents, never reused."""
    status = models.CharField(_("status"), max_length=16, choices=AgentStatus.choices,
                              default=AgentStatus.ACTIVE)
    status_reason = models.CharField(_("reason"), max_length=16, choices=StatusReason.choices,
                                     default=StatusReason.NONE, blank=True)
    status_changed_at = models.DateTimeField(_("status changed at"), null=True, blank=True)
    replay_state = models.TextField(_("replay window"), blank=True, default="")
    """``fleetroom_protocol.replay.ReplayState.to_text()`` of the accepted counters."""
    recent_envelopes = models.TextField(_("recent envelopes"), blank=True, default="")
    """``ctr:digest`` of the last accepted envelopes, so a transport's duplicate
    delivery (MQTT QoS 1, a mail delivered twice) is answered, not counted as replay."""
    policy_violations = models.PositiveIntegerField(_("policy violations"), default=0)
    last_violation = models.CharField(_("last violation"), max_length=32, blank=True,
                                      choices=Violation.choices)
    last_violation_at = models.DateTimeField(_("last violation at"), null=True, blank=True)
    last_seen = models.DateTimeField(_("last seen"), null=True, blank=True)
    last_transport = models.CharField(_("last transport"), max_length=16, blank=True)
    last_source = models.CharField(_("last source"), max_length=200, blank=True)
    last_state = models.JSONField(_("last reported state"), default=dict, blank=True)
    """``fleetroom_protocol.messages.AgentState`` as JSON."""
    clock_skew_s = models.FloatField(_("clock skew (s)"), null=True, blank=True)
    """Agent clock minus server clock at the last request (positive: agent ahead)."""
    schedule = models.JSONField(_("schedule"), default=dict, blank=True)
    """``fleetroom_protocol.messages.Schedule`` as JSON; its ``version`` equals
    :attr:`schedule_version`."""
    schedule_version = models.PositiveIntegerField(_("schedule version"), default=1)
    silent_after = models.DateTimeField(_("overdue after"), null=True, blank=True)
    """When the agent counts as not reporting unless it is heard from again
    (last contact + 3 status-poll intervals, at least 15 minutes)."""
    overdue_since = models.DateTimeField(_("not reporting since"), null=True, blank=True)
    """Set by the periodic check once :attr:`silent_after` has passed; cleared by
    the next request."""
    enrolled_at = models.DateTimeField(_("enrolled at"), null=True, blank=True)
    enrolled_via = models.ForeignKey(EnrollmentToken, verbose_name=_("enrolled with"),
                                     null=True, blank=True, on_delete=models.SET_NULL,
                                     related_name="agents")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("created by"),
                                   null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    """Who created the token it enrolled with."""
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("agent")
        verbose_name_plural = _("agents")
        indexes = [models.Index(fields=["silent_after"], name="agents_agent_silent_after")]

    def __str__(self) -> str:
        return self.name or self.hostname or self.public_id

    @property
    def verify_key(self) -> VerifyKey:
        """The agent's Ed25519 public key."""
        return decode_verify_key(self.signing_key)

    @property
    def public_key(self) -> PublicKey:
        """The agent's X25519 public key (for encrypted replies)."""
        return decode_public_key(self.encryption_key)

    @property
    def site(self) -> Tenant | None:
        """The site it reports for, if it was enrolled for one."""
        return self.tenant if self.tenant.kind == TenantKind.SITE else None

    @property
    def customer(self) -> Tenant:
        """The customer it belongs to."""
        return self.tenant.parent if self.tenant.kind == TenantKind.SITE and \
            self.tenant.parent is not None else self.tenant

    def schedule_model(self) -> Schedule:
        """The schedule as the protocol model (a default one when none is stored)."""
        if not self.schedule:
            return Schedule(version=self.schedule_version)
        return Schedule.model_validate(self.schedule)

    def state_model(self) -> AgentState:
        """The last reported state as the protocol model (empty before the first contact)."""
        return AgentState.model_validate(self.last_state or {})


class ReceivedBatch(models.Model):
    """One uploaded batch, exactly as received, until normalisation has run on it."""

    agent = models.ForeignKey(Agent, verbose_name=_("agent"), on_delete=models.PROTECT,
                              related_name="batches")
    received_at = models.DateTimeField(_("received at"))
    ctr = models.BigIntegerField(_("message counter"))
    envelope_sha256 = models.CharField(_("envelope SHA-256"), max_length=64)
    envelope = models.BinaryField(_("envelope as received"))
    """The signed envelope bytes; ``envelope_zlib`` when the server compressed them
    (an agent sent the body uncompressed)."""
    envelope_zlib = models.BooleanField(_("compressed by the server"), default=False)
    size_bytes = models.PositiveIntegerField(_("size (bytes)"))
    item_count = models.PositiveIntegerField(_("items"))
    new_items = models.PositiveIntegerField(_("new items"))
    """Items not seen before (the rest were repeats of committed items)."""
    transport = models.CharField(_("transport"), max_length=16)
    source = models.CharField(_("source"), max_length=200, blank=True)
    processed_at = models.DateTimeField(_("processed at"), null=True, blank=True)
    attempts = models.PositiveIntegerField(_("processing attempts"), default=0)
    error = models.TextField(_("error"), blank=True)

    tenant_field: ClassVar[str] = "agent__tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("received batch")
        verbose_name_plural = _("received batches")
        indexes = [
            models.Index(fields=["received_at"], condition=Q(processed_at__isnull=True),
                         name="agents_batch_pending"),
            models.Index(fields=["agent", "ctr"], name="agents_batch_agent_ctr"),
            models.Index(fields=["processed_at"], name="agents_batch_processed"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}#{self.ctr}"


class ItemState(models.TextChoices):
    """Normalisation of one received item."""

    PENDING = "pending", _("Waiting")
    DONE = "done", _("Stored")
    PROBLEM = "problem", _("Could not be stored")


class ReceivedItem(models.Model):
    """The key of one outbox item the server has committed (and what became of it).

    The unique key is what makes repeats harmless: a repeat changes nothing and is
    acknowledged again.  ``batch`` is the batch that first brought the item (its
    payload is read from there).
    """

    agent = models.ForeignKey(Agent, verbose_name=_("agent"), on_delete=models.PROTECT,
                              related_name="items")
    store = models.CharField(_("outbox store"), max_length=64)
    stream = models.CharField(_("stream"), max_length=32)
    seq = models.BigIntegerField(_("sequence number"))
    batch = models.ForeignKey(ReceivedBatch, verbose_name=_("batch"), null=True, blank=True,
                              on_delete=models.SET_NULL, related_name="items")
    priority = models.PositiveSmallIntegerField(_("priority"), default=0)
    received_at = models.DateTimeField(_("received at"))
    state = models.CharField(_("state"), max_length=16, choices=ItemState.choices,
                             default=ItemState.PENDING)
    error = models.CharField(_("problem"), max_length=500, blank=True)

    tenant_field: ClassVar[str] = "agent__tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("received item")
        verbose_name_plural = _("received items")
        constraints = [
            models.UniqueConstraint(fields=["agent", "store", "stream", "seq"],
                                    name="agents_item_unique_key"),
        ]

    def __str__(self) -> str:
        return f"{self.agent_id}:{self.store}:{self.stream}:{self.seq}"


class AgentGap(models.Model):
    """Data an agent could not keep (disk budget, coalescing, a corrupt outbox), as it
    reported it: never a silent loss."""

    agent = models.ForeignKey(Agent, verbose_name=_("agent"), on_delete=models.PROTECT,
                              related_name="gaps")
    item = models.OneToOneField(ReceivedItem, verbose_name=_("gap record"),
                                on_delete=models.PROTECT, related_name="gap")
    stream = models.CharField(_("stream"), max_length=32, blank=True)
    """The stream items are missing from (empty: the whole outbox, e.g. corrupt)."""
    reason = models.CharField(_("reason"), max_length=32)
    count = models.PositiveIntegerField(_("items missing"), default=0)
    first_seq = models.BigIntegerField(_("first"), null=True, blank=True)
    last_seq = models.BigIntegerField(_("last"), null=True, blank=True)
    ranges = models.JSONField(_("ranges"), default=list, blank=True)
    supersedes = models.JSONField(_("supersedes"), default=list, blank=True)
    detail = models.JSONField(_("detail"), default=dict, blank=True)
    reported_at = models.DateTimeField(_("reported at"))
    """The agent's clock when it wrote the record (informational)."""
    received_at = models.DateTimeField(_("received at"))

    tenant_field: ClassVar[str] = "agent__tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("gap")
        verbose_name_plural = _("gaps")

    def __str__(self) -> str:
        return f"{self.agent_id}: {self.count} × {self.stream or '*'} ({self.reason})"


class CommandKind(models.TextChoices):
    """What the server can ask an agent to do (``fleetroom_protocol.messages.CommandKind``)."""

    SCAN_NOW = "scan-now", _("Scan now")
    READ_DEVICE = "read-device", _("Read a device now")
    UPDATE_PROFILES = "update-profiles", _("Update device profiles")
    SET_SCHEDULE = "set-schedule", _("Change the schedule")
    DIAGNOSTICS = "diagnostics", _("Collect diagnostics")


class CommandStatus(models.TextChoices):
    """Where a command is."""

    PENDING = "pending", _("Waiting for the agent")
    DELIVERED = "delivered", _("Delivered")
    DONE = "done", _("Done")
    FAILED = "failed", _("Failed")
    REFUSED = "refused", _("Refused by the agent")
    EXPIRED = "expired", _("Expired")
    CANCELLED = "cancelled", _("Cancelled")


COMMAND_OPEN = (CommandStatus.PENDING, CommandStatus.DELIVERED)
"""Statuses of a command that may still be delivered or answered."""


class AgentCommand(models.Model):
    """An instruction for one agent: pulled with its next reply (or pushed on MQTT),
    signed by the server, expiring, idempotent by ``command_id``."""

    command_id = models.CharField(_("command id"), max_length=36, unique=True, editable=False,
                                  default=new_public_id)
    agent = models.ForeignKey(Agent, verbose_name=_("agent"), on_delete=models.PROTECT,
                              related_name="commands")
    kind = models.CharField(_("kind"), max_length=32, choices=CommandKind.choices)
    args = models.JSONField(_("arguments"), default=dict, blank=True)
    issued_by = models.ForeignKey(settings.AUTH_USER_MODEL, verbose_name=_("issued by"),
                                  null=True, blank=True, on_delete=models.SET_NULL,
                                  related_name="+")
    issued_at = models.DateTimeField(_("issued at"))
    expires_at = models.DateTimeField(_("expires at"))
    status = models.CharField(_("status"), max_length=16, choices=CommandStatus.choices,
                              default=CommandStatus.PENDING)
    delivered_at = models.DateTimeField(_("first delivered at"), null=True, blank=True)
    last_delivered_at = models.DateTimeField(_("last delivered at"), null=True, blank=True)
    deliveries = models.PositiveIntegerField(_("deliveries"), default=0)
    result_at = models.DateTimeField(_("result at"), null=True, blank=True)
    result_detail = models.TextField(_("result"), blank=True)
    result_data = models.JSONField(_("result data"), default=dict, blank=True)

    tenant_field: ClassVar[str] = "agent__tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("agent command")
        verbose_name_plural = _("agent commands")
        indexes = [models.Index(fields=["agent", "status"], name="agents_command_open")]

    def __str__(self) -> str:
        return f"{self.kind} → {self.agent_id} ({self.status})"


class SecurityEventKind(models.TextChoices):
    """Things about agents that a person should look at."""

    TOKEN_REUSE = "token_reuse", _("A spent, expired or revoked enrollment token was used")
    TOKEN_NETWORK = "token_network", _("An enrollment token was used from outside its network")
    POLICY_VIOLATION = "policy_violation", _("An agent sent a request that broke policy")
    AGENT_SUSPENDED = "agent_suspended", _("An agent was suspended")
    AGENT_SILENT = "agent_silent", _("An agent stopped reporting")
    DEVICE_CLAIMED = "device_claimed", _("An agent reported a device of another dealer")


class SecurityEvent(models.Model):
    """An alert about agents or tokens, listed until someone acknowledges it.

    Written beside an audit row (the audit log proves it happened; this row is the
    to-do item).  :data:`fleetroom.agents.signals.security_event` fires after
    commit, for notification channels.
    """

    tenant = models.ForeignKey(Tenant, verbose_name=_("tenant"), on_delete=models.PROTECT,
                               related_name="agent_security_events")
    kind = models.CharField(_("kind"), max_length=32, choices=SecurityEventKind.choices)
    agent = models.ForeignKey(Agent, verbose_name=_("agent"), null=True, blank=True,
                              on_delete=models.PROTECT, related_name="security_events")
    token = models.ForeignKey(EnrollmentToken, verbose_name=_("enrollment token"), null=True,
                              blank=True, on_delete=models.PROTECT,
                              related_name="security_events")
    detail = models.JSONField(_("detail"), default=dict, blank=True)
    """Machine-readable particulars (reason code, counter, address)."""
    source = models.CharField(_("source"), max_length=200, blank=True)
    created_at = models.DateTimeField(_("created at"))
    acknowledged_at = models.DateTimeField(_("acknowledged at"), null=True, blank=True)
    acknowledged_by = models.ForeignKey(settings.AUTH_USER_MODEL,
                                        verbose_name=_("acknowledged by"), null=True,
                                        blank=True, on_delete=models.SET_NULL, related_name="+")

    tenant_field: ClassVar[str] = "tenant"
    objects: ClassVar[ScopedManager[Self]] = ScopedManager()

    class Meta:
        verbose_name = _("agent security event")
        verbose_name_plural = _("agent security events")
        indexes = [models.Index(fields=["tenant", "created_at"],
                                condition=Q(acknowledged_at__isnull=True),
                                name="agents_secevent_open")]

    def __str__(self) -> str:
        return f"{self.kind} @ {self.created_at:%Y-%m-%d %H:%M}"


class RateCounter(models.Model):
    """Requests counted in one fixed rate window, per agent or per tenant.

    Not a cache entry (the other limits use Django's cache) because every accepted
    request counts here, and on SQLite a cache write is a write transaction of its
    own, queued for the single write lock behind normalisation.  These rows are
    counted inside the transaction that stores the request (see
    :mod:`fleetroom.agents.ratelimit`).  One row per subject; a new window
    overwrites the old one, so the table holds one row per agent and tenant.
    Internal: never shown, so not scoped to a tenant.
    """

    scope = models.CharField(max_length=16)
    """``agent`` or ``tenant``."""
    subject = models.CharField(max_length=128)
    """The agent's public id or the tenant's primary key."""
    window_no = models.BigIntegerField()
    """The fixed window's number: start time ÷ period."""
    hits = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["scope", "subject"],
                                               name="agents_ratecounter_subject")]

    def __str__(self) -> str:
        return f"{self.scope}:{self.subject} {self.hits} in window {self.window_no}"
