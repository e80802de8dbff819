"""Conversations: the messages of one customer on one channel thread, answered from the card.

Hosted by the connectors service (its database, its queue and RPC endpoint): the thread's address
and the channel secrets a send needs live there already, and a service of its own would add two
durable queues to an installation that keeps to twelve. The package keeps the layout of a service
(``service.py`` table, ``api.py``, ``store.py``, ``domain/``, ``handlers/``) so it can move out;
the gateway takes its models through the connectors' contract, ``services/connectors/api.py``.
"""
