"""Template context every page needs: the navigation the user may see.

The menu is derived from the same scope the views use, so a user is never shown
a link that would only answer 404; views still check on their own (the menu is a
convenience, not a control).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from fleetroom.core.scoping import scope
from fleetroom.tenancy.permissions import Permission

P = Permission


@dataclass(frozen=True, slots=True)
class NavItem:
    """One entry of the main menu."""

    url_name: str
    label: str | Promise
    permission: Permission | None


# Order is the order on screen.  A URL name that is not routed (yet) is left out.
MAIN_MENU: tuple[NavItem, ...] = (
    NavItem("fleet:dashboard", _("Dashboard"), P.VIEW_FLEET),
    NavItem("fleet:device_list", _("Devices"), P.VIEW_FLEET),
    NavItem("tenancy:site_list", _("Sites"), P.VIEW_FLEET),
    NavItem("tenancy:user_list", _("Users"), P.MANAGE_USERS),
    NavItem("tenancy:access_code_list", _("Access codes"), P.MANAGE_ACCESS_CODES),
)


def navigation(request: HttpRequest) -> dict[str, Any]:
    """``main_menu``: (url, label, active) for each page the user holds a permission for."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"main_menu": []}
    here = request.path
    items = []
    for item in MAIN_MENU:
        if item.permission is not None and scope(user, item.permission).is_empty:
            continue
        try:
            url = reverse(item.url_name)
        except NoReverseMatch:
            continue
        items.append({"url": url, "label": item.label,
                      "active": here == url or (url != "/" and here.startswith(url))})
    return {"main_menu": items}
