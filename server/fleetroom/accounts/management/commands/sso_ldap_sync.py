"""``fleetroom manage sso_ldap_sync``: run the directory sync now (it also runs hourly)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from fleetroom.accounts.sso import services


class Command(BaseCommand):
    """Re-read directory users; revoke the access of those no longer there."""

    help = ("Re-read every LDAP user: update names, addresses and group memberships, and "
            "revoke the memberships of users the directory no longer has.")

    def handle(self, *args: Any, **options: Any) -> None:
        """Run :func:`fleetroom.accounts.sso.services.sync_ldap_directory` and report."""
        if services.ldap_config() is None:
            raise CommandError("[sso.ldap] is not configured")
        report = services.sync_ldap_directory()
        self.stdout.write(f"checked {report.checked}, updated {report.updated}, "
                          f"gone {len(report.gone)}")
