"""The operator console end to end in a real browser (Debian's Chromium driven by Playwright):
sign in, a hook-posted lead appears live in the inbox, accept it, open the card and its timeline,
add a note and a task, drag the deal across the board, complete the task, see the dashboard charts
and the channels. Any console error in the page fails the test. Screenshots of every screen are
saved under ``tmp/artifacts/console`` (``CRM_ARTIFACTS_DIR`` to change it)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.hub import ROOT, Api, eventually

pytestmark = pytest.mark.e2e

CHROMIUM = os.environ.get("CRM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "пароль консоли 2026"
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
    && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map((el) => el.outerHTML.slice(0, 80))"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: scripts/test-services.sh installs it"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def artifacts() -> Path:
    path = Path(os.environ.get("CRM_ARTIFACTS_DIR") or ROOT / "tmp" / "artifacts" / "console")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Page:
    """A browser tab on the hub that records console errors and failed requests of the hub."""

    def __init__(self, browser: Any, base_url: str, artifacts: Path, locale: str = "en-US") -> None:
        self.context = browser.new_context(
            base_url=base_url, locale=locale, viewport={"width": 1200, "height": 760}
        )
        self.page = self.context.new_page()
        self.page.set_default_timeout(20_000)
        self.errors: list[str] = []
        self.artifacts = artifacts
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("requestfailed", self._failed)
        self.foreign: list[str] = []
        self.page.on("request", self._request)
        self.base_url = base_url

    def _failed(self, request: Any) -> None:
        # the event stream is cut when the page goes away; that is not an error of the page
        if "/events/stream" not in request.url:
            self.errors.append(f"request failed: {request.url}")

    def _request(self, request: Any) -> None:
        if not request.url.startswith(self.base_url) and not request.url.startswith("data:"):
            self.foreign.append(request.url)

    def shot(self, name: str, *, full: bool = False) -> None:
        """Save a screenshot, and check on the way that every control of the screen has a label."""
        self.page.screenshot(path=str(self.artifacts / f"{name}.png"), full_page=full)
        unlabelled = self.page.evaluate(UNLABELLED)
        assert unlabelled == [], f"{name}: controls without a label: {unlabelled}"

    def close(self) -> None:
        self.context.close()


def _prepare(admin: Api) -> dict[str, Any]:
    """A tenant whose admin has a sign-in email and password, a default pipeline and a form
    channel whose leads wait in the inbox."""
    me = admin.get("/api/v1/users/me").json()
    email = f"admin-{uuid.uuid4().hex[:6]}@example.ru"
    assert admin.patch(f"/api/v1/users/{me['id']}", json={"email": email, "name": "Ольга"}).status_code == 200
    assert admin.put("/api/v1/users/me/password", json={"new_password": PASSWORD}).status_code == 204
    r = admin.post(
        "/api/v1/pipelines",
        json={
            "name": "Продажи",
            "default": True,
            "stages": [{"name": "Новая", "probability": 10}, {"name": "Переговоры", "probability": 50}],
        },
    )
    assert r.status_code == 201, r.text
    channel = admin.post(
        "/api/v1/channels", json={"kind": "form", "name": "Сайт: заявка", "intake": "inbox"}
    ).json()
    return {"email": email, "pipeline": r.json(), "channel": channel, "me": me}


def _post_lead(base_url: str, channel_id: str, name: str) -> None:
    r = httpx.post(
        f"{base_url}/hooks/{channel_id}",
        json={
            "name": name,
            "phone": "+7 (916) 555-01-23",
            "email": f"{uuid.uuid4().hex[:6]}@client.ru",
            "comment": "Перезвоните мне",
            "utm_source": "yandex",
            "utm_campaign": "зима",
        },
        timeout=15,
    )
    assert r.status_code < 300, r.text


def test_a_day_in_the_console(admin: Api, chromium: Any, artifacts: Path) -> None:
    setup = _prepare(admin)
    tab = Page(chromium, admin.base_url, artifacts)
    page = tab.page
    try:
        # sign in
        page.goto("/app/login?lang=en")
        page.get_by_label("Email").fill(setup["email"])
        page.get_by_label("Password").fill(PASSWORD)
        tab.shot("login")
        page.get_by_role("button", name="Sign in").click()
        nav = page.get_by_role("navigation")
        for name in ("Inbox", "Contacts", "Pipeline", "Tasks", "Dashboard", "Channels"):
            nav.get_by_role("link", name=name, exact=True).wait_for()
        page.get_by_text("Nothing here yet.").wait_for()

        # a lead posted to the hook appears without a reload
        lead = f"Иван Лидов {uuid.uuid4().hex[:4]}"
        _post_lead(admin.base_url, setup["channel"]["id"], lead)
        item = page.locator("article.inbox-item", has_text=lead)
        item.wait_for()
        assert "yandex" in item.inner_text()
        tab.shot("inbox")
        item.get_by_role("button", name="Accept").click()
        item.wait_for(state="detached")

        # the contact's card: its name links to it; the form is on the timeline with its UTM
        contact = eventually(
            lambda: admin.get("/api/v1/contacts", params={"q": lead.split()[-1]}).json()["items"]
        )[0]
        for item in (
            {
                "kind": "call",
                "direction": "in",
                "summary": "Входящий звонок",
                "data": {
                    "status": "answered",
                    "duration_s": 42,
                    "recording_url": "https://rec.example/1.mp3",
                },
            },
            {
                "kind": "email",
                "direction": "in",
                "summary": "Нужна цена",
                "data": {"subject": "Цена", "thread_id": "t1"},
            },
            {
                "kind": "email",
                "direction": "out",
                "summary": "Отправили",
                "data": {"subject": "Re: Цена", "thread_id": "t1"},
            },
        ):
            r = admin.post(f"/api/v1/contacts/{contact['id']}/interactions", json=item)
            assert r.status_code == 201, r.text
        nav.get_by_role("link", name="Contacts", exact=True).click()
        search = page.get_by_label("Search").first
        search.fill(lead)
        search.press("Enter")
        page.get_by_role("link", name=lead).click()
        page.get_by_role("heading", name=lead).wait_for()
        timeline = page.locator("ol.timeline")
        timeline.locator("li.form").first.wait_for()
        assert "campaign=зима" in timeline.inner_text()
        audio = timeline.locator("li.call audio")
        assert audio.get_attribute("src") == "https://rec.example/1.mp3"
        assert timeline.locator("li.thread .badge").inner_text() == "2"

        page.get_by_label("Note").fill("Клиент просит КП до пятницы")
        page.get_by_role("button", name="Add a note").click()
        page.locator("ol.timeline li.note", has_text="КП до пятницы").wait_for()

        page.get_by_label("Title", exact=True).fill("Отправить КП")
        page.get_by_role("button", name="Create a task").click()
        page.locator("li.task-row", has_text="Отправить КП").wait_for()
        tab.shot("card", full=True)

        # the deal that accepting made, dragged to the next stage
        stages = setup["pipeline"]["stages"]
        deal = eventually(
            lambda: admin.get("/api/v1/deals", params={"contact_id": contact["id"]}).json()["items"]
        )[0]
        assert deal["stage_id"] == stages[0]["id"]
        nav.get_by_role("link", name="Pipeline", exact=True).click()
        card = page.locator(f"li.deal[data-deal-id='{deal['id']}']")
        target = page.locator(f"section.column[data-stage-id='{stages[1]['id']}']")
        card.drag_to(target.locator("ul.cards"))
        target.locator(f"li.deal[data-deal-id='{deal['id']}']").wait_for()
        assert target.locator(".count").inner_text() == "1"
        assert admin.get(f"/api/v1/deals/{deal['id']}").json()["stage_id"] == stages[1]["id"]
        tab.shot("pipeline")

        # my day: complete the task
        nav.get_by_role("link", name="Tasks", exact=True).click()
        row = page.locator("li.task-row", has_text="Отправить КП")
        row.wait_for()
        page.get_by_role("heading", name="Workload per manager").wait_for()
        tab.shot("tasks")
        row.get_by_role("button", name="Complete").click()
        row.wait_for(state="detached")
        tasks = admin.get("/api/v1/tasks", params={"contact_id": contact["id"], "status": "done"}).json()
        assert [t["title"] for t in tasks["items"]] == ["Отправить КП"]

        # dashboard charts render as SVG
        nav.get_by_role("link", name="Dashboard", exact=True).click()
        page.locator("svg.chart").nth(4).wait_for()
        assert page.locator("svg.chart rect.bar").count() > 0
        tab.shot("dashboard")

        # channels: webhook URL and health
        nav.get_by_role("link", name="Channels", exact=True).click()
        url = page.get_by_label("Webhook URL").first
        assert url.input_value().endswith(f"/hooks/{setup['channel']['id']}")
        tab.shot("channels")

        # Russian, switched by ?lang=
        page.goto("/app/inbox?lang=ru")
        page.get_by_role("navigation").get_by_role("link", name="Неразобранное").wait_for()
        page.get_by_role("navigation").get_by_role("link", name="Воронка").click()
        page.locator(f"li.deal[data-deal-id='{deal['id']}']").wait_for()
        assert re.search(r"\d", page.locator("section.column .sum").nth(1).inner_text())
        tab.shot("pipeline-ru")

        # signing out ends the session
        page.get_by_role("button", name="Выйти").click()
        page.get_by_role("button", name="Войти").wait_for()
    finally:
        tab.close()
    assert tab.errors == []
    assert tab.foreign == []


def test_console_in_russian_keyboard_link_search_field_errors_and_a_lost_deal(
    admin: Api, chromium: Any, artifacts: Path
) -> None:
    setup = _prepare(admin)
    known = admin.post("/api/v1/contacts", json={"name": "Пётр Известный", "phones": ["+79035550000"]}).json()
    first = f"Мария Первая {uuid.uuid4().hex[:4]}"
    second = f"Анна Вторая {uuid.uuid4().hex[:4]}"
    _post_lead(admin.base_url, setup["channel"]["id"], second)
    eventually(lambda: admin.get("/api/v1/inbox", params={"status": "pending"}).json()["items"])
    _post_lead_with_phone(admin.base_url, setup["channel"]["id"], first, "+7 916 555-77-88")
    eventually(lambda: len(admin.get("/api/v1/inbox", params={"status": "pending"}).json()["items"]) == 2)
    tab = Page(chromium, admin.base_url, artifacts, locale="ru-RU")
    page = tab.page
    try:
        # Russian from the browser's language, switchable to English
        page.goto("/app/login")
        page.get_by_label("Эл. почта").fill(setup["email"])
        page.get_by_label("Пароль").fill(PASSWORD)
        page.get_by_role("button", name="Войти").click()
        page.get_by_role("navigation").get_by_role("link", name="Неразобранное").wait_for()
        page.locator("article.inbox-item").nth(1).wait_for()
        tab.shot("inbox-ru")
        page.get_by_label("Язык").select_option("en")
        page.get_by_role("navigation").get_by_role("link", name="Inbox", exact=True).wait_for()

        # keyboard: j selects the newest lead, a accepts it
        items = page.locator("article.inbox-item")
        assert first in items.first.inner_text()
        page.keyboard.press("j")
        page.keyboard.press("a")
        page.locator("article.inbox-item", has_text=first).wait_for(state="detached")

        # link the other lead to a known contact found by a phone written another way
        other = page.locator("article.inbox-item", has_text=second)
        other.get_by_label("Contact to link").fill("8 (903) 555-00-00")
        other.get_by_role("button", name="Link").click()
        other.wait_for(state="detached")
        eventually(
            lambda: [
                i
                for i in admin.get(f"/api/v1/contacts/{known['id']}/timeline").json()["items"]
                if i["kind"] == "form"
            ]
        )

        # search by phone in any spelling, open the card, a bad email is shown at its field
        search = page.get_by_label("Search").first
        search.fill("8 903 555 00 00")
        search.press("Enter")
        page.get_by_role("link", name="Пётр Известный").click()
        page.get_by_role("heading", name="Пётр Известный").wait_for()
        page.locator("ol.timeline li.form").first.wait_for()
        page.get_by_role("button", name="Edit fields").click()
        page.get_by_label("Emails").fill("не почта")
        page.get_by_role("button", name="Save").click()
        error = page.locator(".field[data-field='emails'] .error")
        error.wait_for()
        assert error.inner_text().strip()
        tab.shot("card-field-error")
        page.get_by_label("Amount").fill("150000")
        page.get_by_role("button", name="New deal").click()
        page.locator("section.card li", has_text="150,000").wait_for()
        assert [
            d["amount"]
            for d in admin.get("/api/v1/deals", params={"contact_id": known["id"]}).json()["items"]
        ] == ["150000.00"]

        # a deal dragged to the lost stage asks for the reason
        deal = eventually(
            lambda: admin.get("/api/v1/deals", params={"pipeline_id": setup["pipeline"]["id"]}).json()[
                "items"
            ]
        )[0]
        lost = next(s for s in setup["pipeline"]["stages"] if s["kind"] == "lost")
        page.get_by_role("navigation").get_by_role("link", name="Pipeline", exact=True).click()
        card = page.locator(f"li.deal[data-deal-id='{deal['id']}']")
        card.drag_to(page.locator(f"section.column[data-stage-id='{lost['id']}'] ul.cards"))
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Loss reason").fill("Дорого")
        dialog.get_by_role("button", name="Move").click()
        page.locator(f"section.column[data-stage-id='{lost['id']}'] li.deal").wait_for()
        moved = admin.get(f"/api/v1/deals/{deal['id']}").json()
        assert (moved["status"], moved["lost_reason"]) == ("lost", "Дорого")
    finally:
        tab.close()
    # the bad email's 422 is the one failed request the browser may report
    assert [e for e in tab.errors if "status of 422" not in e] == []
    assert tab.foreign == []


def _post_lead_with_phone(base_url: str, channel_id: str, name: str, phone: str) -> None:
    r = httpx.post(
        f"{base_url}/hooks/{channel_id}",
        json={"name": name, "phone": phone, "utm_source": "google"},
        timeout=15,
    )
    assert r.status_code < 300, r.text
