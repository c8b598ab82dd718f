"""Pages for people: agents, enrollment tokens, commands, security events (mounted at
``agents/``; the agents' own protocol routes are in :mod:`.urls_protocol`).

Route, permission (through the scope; every route in ``test_agents_matrix.py``):

* ``agent_list``        ``/agents/``                          view_fleet (empty without)
* ``agent_detail``      ``/agents/<id>/``                     view_fleet
* ``agent_schedule``    ``/agents/<id>/schedule/``            view_fleet (else 404) and
  manage_agents (else 403); likewise every other ``/agents/<id>/…`` change:
  ``agent_command``, ``command_cancel``, ``problem_retry``, ``agent_rename``,
  ``agent_suspend``, ``agent_unsuspend``, ``agent_revoke``, ``agent_reenroll``
* ``token_list``, ``token_create``, ``security_events``      manage_agents somewhere
  (else 403)
* ``token_revoke``, ``security_event_acknowledge``            manage_agents on the
  object's tenant (else 404)
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from . import views

app_name = "agents"

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.agent_list, name="agent_list"),
    path("tokens/", views.token_list, name="token_list"),
    path("tokens/new/", views.token_create, name="token_create"),
    path("tokens/<int:pk>/revoke/", views.token_revoke, name="token_revoke"),
    path("security/", views.security_events, name="security_events"),
    path("security/<int:pk>/acknowledge/", views.security_event_acknowledge,
         name="security_event_acknowledge"),
    path("<uuid:agent_id>/", views.agent_detail, name="agent_detail"),
    path("<uuid:agent_id>/schedule/", views.agent_schedule, name="agent_schedule"),
    path("<uuid:agent_id>/commands/", views.agent_command, name="agent_command"),
    path("<uuid:agent_id>/commands/<uuid:command_id>/cancel/", views.command_cancel,
         name="command_cancel"),
    path("<uuid:agent_id>/problems/<int:item_id>/retry/", views.problem_retry,
         name="problem_retry"),
    path("<uuid:agent_id>/rename/", views.agent_rename, name="agent_rename"),
    path("<uuid:agent_id>/suspend/", views.agent_suspend, name="agent_suspend"),
    path("<uuid:agent_id>/unsuspend/", views.agent_unsuspend, name="agent_unsuspend"),
    path("<uuid:agent_id>/revoke/", views.agent_revoke, name="agent_revoke"),
    path("<uuid:agent_id>/reenroll/", views.agent_reenroll, name="agent_reenroll"),
]
