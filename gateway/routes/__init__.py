"""Every route module of the gateway; app.py includes them in this order."""

from gateway.routes import (
    analytics,
    audit,
    channels,
    contacts,
    conversations,
    core,
    deals,
    events,
    inbox,
    sessions,
    tasks,
    webhooks,
)

ROUTERS = [
    core.router,
    sessions.router,
    channels.router,
    contacts.router,
    inbox.router,
    conversations.router,
    deals.router,
    tasks.router,
    analytics.router,
    events.router,
    webhooks.router,
    audit.router,
]
