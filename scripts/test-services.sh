#!/usr/bin/env bash
# Make sure the servers the tests talk to are there: RabbitMQ (started if down) and Dovecot
# (installed from Debian if missing; the tests start their own instance). SecantusDB is started
# by the tests themselves.
set -euo pipefail

if [ -z "${CRM_RABBIT_URL:-}" ]; then
  if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    echo "RabbitMQ is down: starting it" >&2
    command -v rabbitmq-server >/dev/null || { apt-get update -qq && apt-get install -y -qq rabbitmq-server; }
    rabbitmq-server -detached
    for _ in $(seq 1 60); do (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break; sleep 1; done
  fi
fi

if ! command -v dovecot >/dev/null 2>&1; then
  echo "Dovecot missing: installing dovecot-imapd" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd) >/dev/null
fi
