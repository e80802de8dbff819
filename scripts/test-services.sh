#!/usr/bin/env bash
# Make sure the servers the tests talk to are there: RabbitMQ (started if down) and Dovecot
# (installed from Debian if missing; the tests start their own instance). SecantusDB is started
# by the tests themselves. Chromium (Debian's) is installed the same way for the console's browser
# tests, which Playwright drives at /usr/bin/chromium (CRM_CHROMIUM); browser downloads are not used.
set -euo pipefail

if [ -z "${CRM_RABBIT_URL:-}" ]; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    echo "RabbitMQ is down: starting it" >&2
    command -v rabbitmq-server >/dev/null || { apt-get update -qq && apt-get install -y -qq rabbitmq-server; }
    rabbitmq-server -detached
    for _ in $(seq 1 60); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
  fi
fi

# Dovecot lives in /usr/sbin, which a non-root PATH may lack: look there too before installing.
if ! command -v dovecot >/dev/null 2>&1 && [ ! -x /usr/sbin/dovecot ]; then
  echo "Dovecot missing: installing dovecot-imapd" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install dovecot-imapd" >&2; exit 1; }
    SUDO="sudo -n"
  fi
  # The package may start its own system service; harmless: tests run private instances on
  # free loopback ports with a temp config (tests/support/dovecot.py).
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null
  if [ ! -x /usr/sbin/dovecot ] && ! command -v dovecot >/dev/null 2>&1; then
    echo "dovecot-imapd installed but no dovecot binary found" >&2
    exit 1
  fi
fi

if [ ! -x "${CRM_CHROMIUM:-/usr/bin/chromium}" ]; then
  echo "Chromium missing: installing chromium" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install chromium" >&2; exit 1; }
    SUDO="sudo -n"
  fi
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  if [ ! -x "${CRM_CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "chromium installed but ${CRM_CHROMIUM:-/usr/bin/chromium} not found" >&2
    exit 1
  fi
fi

# promtool (Debian's prometheus package) checks the alert rules under deploy/monitoring.
if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool missing: installing prometheus" >&2
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "need root (or sudo) to install prometheus" >&2; exit 1; }
    SUDO="sudo -n"
  fi
  $SUDO apt-get update -qq
  # only the binaries: the package's own service is not needed (and not started in containers)
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  command -v promtool >/dev/null 2>&1 || { echo "prometheus installed but no promtool found" >&2; exit 1; }
fi
