#!/usr/bin/env bash
# What the dashboard's browser test needs, installed idempotently: Debian's Chromium (no
# browser download) and Playwright in the project's virtual environment (.venv).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null; then
  echo "installing chromium (Debian package) for the dashboard's browser test"
  sudo_if_needed=""
  if [ "$(id -u)" != 0 ]; then sudo_if_needed="sudo"; fi
  $sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_if_needed apt-get install -y -qq --no-install-recommends chromium
fi

PLAYWRIGHT_VERSION=1.49.0
if ! .venv/bin/python -c "import playwright, sys; from importlib.metadata import version; sys.exit(version('playwright') != '$PLAYWRIGHT_VERSION')" 2>/dev/null; then
  echo "installing playwright $PLAYWRIGHT_VERSION into .venv (the browser driver only; the browser is Debian's)"
  if ! python3 -m venv .venv 2>/dev/null; then
    echo "installing python3-venv (Debian package) to make .venv"
    $([ "$(id -u)" != 0 ] && echo sudo) apt-get install -y -qq python3-venv
    python3 -m venv .venv
  fi
  .venv/bin/pip install -q "playwright==$PLAYWRIGHT_VERSION"
fi
