#!/usr/bin/env bash
# Install what a fresh Debian machine lacks, then the locked Python packages.
# Idempotent and quiet when everything is there; safe to run before every make target.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v snmpget >/dev/null 2>&1 || need_apt+=(snmp)
command -v snmpd >/dev/null 2>&1 || [ -x /usr/sbin/snmpd ] || need_apt+=(snmpd)
[ -x /usr/bin/python3.11 ] || need_apt+=(python3.11 python3.11-venv)
/usr/bin/python3.11 -c 'import dbm.gnu' >/dev/null 2>&1 || need_apt+=(python3-gdbm)
# python-ldap (django-auth-ldap) builds from source against OpenLDAP's and SASL's headers.
[ -f /usr/include/ldap.h ] || need_apt+=(libldap2-dev)
[ -f /usr/include/sasl/sasl.h ] || need_apt+=(libsasl2-dev)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
# Tests run a real directory server (SSO by LDAP bind) and a real browser (UI flows).
[ -x /usr/sbin/slapd ] || need_apt+=(slapd ldap-utils)
# The MQTT transport's tests start their own Mosquitto (with the dynamic-security plugin).
[ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto mosquitto-clients)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# gettext: msgfmt/xgettext check that the German catalogue is complete and compiled.
command -v msgfmt >/dev/null 2>&1 || need_apt+=(gettext)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  # Keep snmpd's and slapd's system services from starting: we run our own snmpd processes on loopback.
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}" \
    || { $SUDO rm -f /usr/sbin/policy-rc.d; exit 1; }
  $SUDO rm -f /usr/sbin/policy-rc.d
fi

if ! command -v uv >/dev/null 2>&1; then
  echo "setup: installing uv"
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi

# The venv uses Debian's Python: snmpsim drops privileges to 'nobody' and must be able
# to read the interpreter (a Python under /root is not readable by nobody).
export UV_PYTHON=/usr/bin/python3.11 UV_PYTHON_DOWNLOADS=never
uv sync --locked --quiet
