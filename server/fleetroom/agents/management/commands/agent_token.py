"""``fleetroom manage agent_token``: an enrollment token from the command line.

For installations without the web pages at hand and for the demo, which enrolls
its agent automatically.  Goes through
:func:`fleetroom.agents.services.do_create_enrollment_token` as the system actor,
so the token is audited like one made in the UI; the clear token is printed once.
"""

from __future__ import annotations

import json
from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from fleetroom.agents.services import do_create_enrollment_token
from fleetroom.core.scoping import SYSTEM
from fleetroom.tenancy.models import Tenant


def _tenant(ref: str) -> Tenant:
    """A tenant by id, or by its names from the top joined with ``/``."""
    if ref.isdigit():
        found = Tenant.objects.filter(pk=int(ref)).first()
    else:
        found = None
        parent: Tenant | None = None
        for part in [p.strip() for p in ref.split("/") if p.strip()]:
            found = Tenant.objects.filter(parent=parent, name=part).first()
            if found is None:
                break
            parent = found
    if found is None:
        raise CommandError(f"no tenant {ref!r} (give its id or 'Operator/Dealer/Customer/Site')")
    return found


class Command(BaseCommand):
    """Create an enrollment token and print it once."""

    help = "Create an agent enrollment token for a site or customer and print it once."

    def add_arguments(self, parser: ArgumentParser) -> None:
        """--tenant, --uses, --hours, --network, --label, --json."""
        parser.add_argument("--tenant", required=True,
                            help="tenant id, or names from the top: 'Platform/Dealer/Acme/Berlin'")
        parser.add_argument("--uses", type=int, default=1)
        parser.add_argument("--hours", type=int, default=None,
                            help="lifetime (default [agents] token_default_hours)")
        parser.add_argument("--network", default="", help="allowed source network (CIDR)")
        parser.add_argument("--label", default="")
        parser.add_argument("--json", action="store_true", help="print JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        """Create the token through the service (audited) and print it."""
        tenant = _tenant(options["tenant"])
        expires = (timezone.now() + timedelta(hours=options["hours"])
                   if options["hours"] else None)
        try:
            token, clear = do_create_enrollment_token(
                tenant, acting_user=SYSTEM, label=options["label"], expires_at=expires,
                max_uses=options["uses"], source_network=options["network"])
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        if options["json"]:
            self.stdout.write(json.dumps({"token": clear, "tenant_id": tenant.pk,
                                          "expires_at": token.expires_at.isoformat(),
                                          "max_uses": token.max_uses}))
        else:
            self.stdout.write(clear)
            self.stderr.write(f"for {tenant} (#{tenant.pk}), {token.max_uses} use(s), "
                              f"expires {token.expires_at:%Y-%m-%d %H:%M %Z}")
