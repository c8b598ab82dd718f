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
from django.utils.translation import get_language_from_path
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
    NavItem("agents:agent_list", _("Agents"), P.VIEW_FLEET),
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


def language_switch(request: HttpRequest) -> dict[str, Any]:
    """``switch_next``: this page's address without its language prefix.

    Django's ``set_language`` view runs outside the language prefix, so it resolves
    ``next`` in the default language and cannot translate ``/de/…``; given the
    neutral path it returns the right one for the chosen language.
    """
    path = request.path_info
    lang = get_language_from_path(path)
    if lang and path.startswith(f"/{lang}/"):
        path = path[len(lang) + 1:]
    query = request.META.get("QUERY_STRING", "")
    return {"switch_next": f"{path}?{query}" if query else path}
