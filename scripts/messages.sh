#!/usr/bin/env bash
# Refresh every German catalogue of the server from the source, then compile them.
#
# Django's makemessages, run at the package root, writes each app's strings into that
# app's own locale/ directory (when it has one) and everything else — project
# templates, core — into server/fleetroom/locale.  A string that moves between
# catalogues keeps its translation: each catalogue is merged with all the others as
# compendia.  Commit the .po and .mo files.
set -euo pipefail
cd "$(dirname "$0")/../server/fleetroom"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/data"
mapfile -t catalogues < <(find . -path '*/locale/de/LC_MESSAGES/django.po' | sort)
for po in "${catalogues[@]}"; do cp "$po" "$tmp/$(echo "$po" | tr '/.' '__').po"; done
FLEETROOM_DATA_DIR="$tmp/data" FLEETROOM_SECRET_KEY="messages-only-$(printf 'k%.0s' $(seq 60))" \
  uv run --locked --quiet python -m django makemessages -l de --no-obsolete --no-location \
  --settings fleetroom.settings >/dev/null
mapfile -t catalogues < <(find . -path '*/locale/de/LC_MESSAGES/django.po' | sort)
compendia=(); for c in "$tmp"/*.po; do [ -e "$c" ] && compendia+=(-C "$c"); done
for po in "${catalogues[@]}"; do
  msgmerge -q --no-location --no-fuzzy-matching "${compendia[@]}" -o "$po.new" "$po" "$po"
  mv "$po.new" "$po"
  msgfmt --check-format -o "${po%.po}.mo" "$po"
  echo "$po: $(msgfmt --statistics -o /dev/null "$po" 2>&1)"
done
