#!/usr/bin/env bash
# Installs Debian's chromium when it is missing: the dashboard test loads
# /ui in it headless. Never fails the caller: without chromium (no apt, not
# root, no network) that test says it was skipped.
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ballast: no apt-get; the dashboard test will be skipped (install chromium)" >&2
  exit 0
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "ballast: installing chromium for the dashboard test" >&2
if ! { $sudo apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2; }; then
  echo "ballast: could not install chromium; the dashboard test will be skipped" >&2
fi
exit 0
