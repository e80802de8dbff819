"""Errors that cross service boundaries and become ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

from typing import Any

PROBLEM_BASE = "https://crm-hub.dev/problems/"


class AppError(Exception):
    """An expected failure with an HTTP meaning. ``code`` is stable; clients may switch on it."""

    status = 400
    code = "bad_request"
    title = "Bad request"

    def __init__(
        self,
        detail: str,
        *,
        errors: dict[str, str] | None = None,
        code: str | None = None,
        title: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}
        if code:
            self.code = code
        if title:
            self.title = title
        if status:
            self.status = status
        self.headers = headers or {}
        self.extra = extra or {}

    def to_problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return body

    def to_wire(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
            "errors": self.errors,
            "extra": self.extra,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> AppError:
        return AppError(
            data.get("detail", ""),
            errors=data.get("errors") or None,
            code=data.get("code"),
            title=data.get("title"),
            status=int(data.get("status", 500)),
            extra=data.get("extra") or None,
        )


class Unauthorized(AppError):
    status, code, title = 401, "unauthorized", "Authentication required"


class Forbidden(AppError):
    status, code, title = 403, "forbidden", "Not allowed"


class NotFound(AppError):
    status, code, title = 404, "not_found", "Not found"

    def __init__(self, what: str = "record", **kw: Any) -> None:
        super().__init__(f"No such {what}.", **kw)


class Gone(AppError):
    status, code, title = 410, "gone", "Gone"


class Conflict(AppError):
    status, code, title = 409, "conflict", "Conflict"


class ValidationFailed(AppError):
    status, code, title = 422, "validation_failed", "Validation failed"

    def __init__(self, errors: dict[str, str], detail: str | None = None, **kw: Any) -> None:
        super().__init__(detail or "; ".join(f"{k}: {v}" for k, v in errors.items()), errors=errors, **kw)


class ServiceUnavailable(AppError):
    status, code, title = 503, "unavailable", "Service unavailable"


class Timeout(AppError):
    status, code, title = 504, "timeout", "Service did not answer"


def problem_from_pydantic(exc: Any, prefix: str = "") -> ValidationFailed:
    """A pydantic ``ValidationError`` as a 422 naming each field by its dotted path."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        key = ".".join(loc) or "body"
        errors[prefix + key] = err.get("msg", "invalid")
    return ValidationFailed(errors)
