"""Email auto-capture: parse raw mail into interactions, and poll IMAP mailboxes for it.

- :func:`parse_message` (``parse.py``): raw RFC 5322 bytes → :class:`ParsedMail` (pure).
- :class:`ImapPoller` (``poller.py``): fetches new mail and hands raw bytes to a :class:`MailSink`,
  keeping per-folder cursors in a :class:`CursorStore`, one poller per mailbox via a :class:`Lease`.
"""

from services.connectors.mail.parse import FolderRole, ParsedMail, SkipReason, parse_message
from services.connectors.mail.poller import (
    CursorStore,
    FolderHealth,
    FolderReport,
    ImapConfig,
    ImapPoller,
    Lease,
    MailSink,
    PollerHealth,
    SyncReport,
    config_from_channel,
)

__all__ = [
    "CursorStore",
    "FolderHealth",
    "FolderReport",
    "FolderRole",
    "ImapConfig",
    "ImapPoller",
    "Lease",
    "MailSink",
    "ParsedMail",
    "PollerHealth",
    "SkipReason",
    "SyncReport",
    "config_from_channel",
    "parse_message",
]
