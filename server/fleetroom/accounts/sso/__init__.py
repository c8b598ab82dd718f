"""Single sign-on: directory passwords (LDAP bind) and OpenID Connect providers.

* :mod:`.conf` turns ``[sso]`` of the configuration into Django settings
  (django-auth-ldap's ``AUTH_LDAP_*``, allauth's ``SOCIALACCOUNT_PROVIDERS``).
* :mod:`.ldap_backend` is the authentication backend behind the ordinary login
  form, so a directory password passes the same lockout and MFA stage as a local one.
* :mod:`.oidc` is allauth's social-account adapter: who may come in through a
  provider, and with which membership.
* :mod:`.services` holds every write: creating or linking the user behind an
  external identity ``(provider, subject)``, keeping its attributes and its
  directory-derived memberships in step, refusing what policy forbids, and the
  hourly directory sync (``accounts.tasks.sync_ldap_directory``, also
  ``fleetroom manage sso_ldap_sync``) for people removed from the directory.
* :mod:`.forms` keeps allauth from giving an SSO account a local password.

Users who arrive through SSO have no usable local password: the directory or the
provider stays the only way in, so removing someone there locks them out here.
"""
