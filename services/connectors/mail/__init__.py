"""Email auto-capture: parse raw mail into interactions, and poll IMAP mailboxes for it."""

from services.connectors.mail.parse import ParsedMail, parse_message

__all__ = ["ParsedMail", "parse_message"]
