"""Outbound senders: one module per channel kind that can answer a customer; each exposes ``SENDER``.

The contract lives in :mod:`services.connectors.senders.base`.
"""
