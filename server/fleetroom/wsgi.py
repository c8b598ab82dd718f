"""WSGI entry point (gunicorn ``fleetroom.wsgi:application``)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleetroom.settings")
application = get_wsgi_application()
