"""The base of the services' typed RPC contracts (``services/<name>/api.py``).

A request model names its service and method; its fields are the call's arguments. The gateway
builds one and sends it (``gw.ask(request, principal)``); the service validates the arguments
against the same model before its handler runs (:meth:`shared.service.Service.serve`).
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError


class RpcRequest(BaseModel):
    """One RPC call: ``METHOD`` on ``SERVICE``, the fields as its arguments."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    SERVICE: ClassVar[str]
    METHOD: ClassVar[str]


def problems(exc: ValidationError, prefix: str = "") -> dict[str, str]:
    """A pydantic error as ``{"field.path": message}``."""
    out: dict[str, str] = {}
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "body"
        out[prefix + path] = str(err["msg"])
    return out
