"""Fleet pages: dashboard, device list and export, device detail (mounted at ``fleet/``).

Route, permission (on the device's tenant, through the scope):

* ``dashboard``       ``/fleet/``                          view_fleet
* ``device_list``     ``/fleet/devices/``                  view_fleet
* ``device_export``   ``/fleet/devices/export.csv``        view_fleet and export_data
* ``device_detail``   ``/fleet/devices/<pk>/``             view_fleet
* ``device_edit``     ``/fleet/devices/<pk>/edit/``        view_fleet (else 404) and
  edit_devices (else 403); POST with CSRF
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from . import views

app_name = "fleet"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.dashboard, name="dashboard"),
    path("devices/", views.device_list, name="device_list"),
    path("devices/export.csv", views.device_export, name="device_export"),
    path("devices/<int:pk>/", views.device_detail, name="device_detail"),
    path("devices/<int:pk>/edit/", views.device_edit, name="device_edit"),
]
