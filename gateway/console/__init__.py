"""The operator console: a static single-page app (plain ES modules and CSS, no build step)
served at ``/app`` on the gateway's origin. It talks to the public API only, signed in by the
session cookie of ``POST /api/v1/sessions``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# Only this origin: no CDN, no other host (recordings are played from their provider's URL).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; media-src 'self' https:; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["console"])
HTML: dict[int | str, dict[str, Any]] = {
    200: {"description": "The console page (HTML)", "content": {"text/html": {"schema": {"type": "string"}}}}
}


def _page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/app", response_class=HTMLResponse, responses=HTML)
async def console() -> FileResponse:
    """The operator console (sign in at `/app/login`)."""
    return _page()


@router.get("/app/login", response_class=HTMLResponse, responses=HTML)
async def login_page() -> FileResponse:
    """The console's sign-in page: fields `Email` and `Password`, button `Sign in`."""
    return _page()


@router.get("/app/{screen:path}", response_class=HTMLResponse, include_in_schema=False)
async def console_screen(screen: str) -> FileResponse:
    """Deep links into the console (`/app/contacts/<id>`): the same page, which routes itself."""
    return _page()


class _Static(StaticFiles):
    async def get_response(self, path: str, scope):  # type: ignore[no-untyped-def]
        response = await super().get_response(path, scope)
        response.headers.update(HEADERS)
        return response


def mount_console(app: FastAPI) -> None:
    """``/app/static`` (assets) first, then the page routes."""
    app.mount("/app/static", _Static(directory=STATIC), name="console-static")
    app.include_router(router)
