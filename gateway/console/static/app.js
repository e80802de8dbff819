// The operator console: one page, routed on the client, talking to the public API only.
import { del, get, patch, post, setCsrf, whenSignedOut } from "./api.js";
import { bars } from "./charts.js";
import { field, h, showErrors } from "./dom.js";
import { LANGS, fmtDate, fmtMoney, fmtNumber, fmtPercent, lang, setLang, t } from "./i18n.js";

const state = { me: null, users: new Map(), currency: "RUB", live: null, onLive: null, gen: 0 };
const root = document.getElementById("app");

// ---- routing -------------------------------------------------------------------------------

const ROUTES = [
  [/^\/app\/login$/, loginScreen, { public: true }],
  [/^\/app\/?$/, () => go("/app/inbox", true)],
  [/^\/app\/inbox$/, inboxScreen],
  [/^\/app\/contacts$/, contactsScreen],
  [/^\/app\/contacts\/([^/]+)$/, cardScreen],
  [/^\/app\/pipeline$/, pipelineScreen],
  [/^\/app\/tasks$/, tasksScreen],
  [/^\/app\/dashboard$/, dashboardScreen],
  [/^\/app\/channels$/, channelsScreen],
];

export function go(path, replace = false) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  return render();
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest && ev.target.closest("a[href^='/app']");
  if (!a || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
  ev.preventDefault();
  go(a.getAttribute("href"));
});
window.addEventListener("popstate", () => render());
whenSignedOut(() => {
  state.me = null;
  closeLive();
  if (location.pathname !== "/app/login") go(`/app/login`, true);
});

async function render() {
  const path = location.pathname;
  const route = ROUTES.find(([re]) => re.test(path)) || ROUTES[1];
  const [re, screen, opts] = route;
  state.onLive = null;
  state.gen += 1;
  document.documentElement.lang = lang;
  if (!opts?.public && !state.me) {
    try {
      await loadSession();
    } catch {
      return go("/app/login", true);
    }
  }
  const params = path.match(re).slice(1).map(decodeURIComponent);
  const main = opts?.public ? null : layout(path);
  try {
    await screen(main, ...params);
  } catch (err) {
    if (err.status === 401) return undefined;
    (main || root).append(h("p", { class: "form-error", role: "alert" }, errorText(err)));
  }
  return undefined;
}

async function loadSession() {
  const s = await get("/api/v1/sessions/current");
  setCsrf(s.csrf_token);
  state.me = s.user;
  state.currency = s.tenant?.currency || "RUB";
  await loadUsers();
  openLive();
}

async function loadUsers() {
  try {
    const users = await get("/api/v1/users", { limit: 500 });
    state.users = new Map(users.items.map((u) => [u.id, u]));
  } catch {
    state.users = new Map([[state.me.id, state.me]]);
  }
}

function errorText(err) {
  if (err && err.status === 403) return t("forbidden");
  return (err && err.message) || t("error");
}

function toast(text) {
  const box = document.getElementById("toast");
  if (!box) return;
  box.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (box.textContent = ""), 4000);
}

// ---- live events (SSE, signed in by the cookie) ---------------------------------------------

function openLive() {
  if (state.live || typeof EventSource === "undefined") return;
  const types = [
    "inbox.item_opened", "inbox.item_accepted", "inbox.item_linked", "inbox.item_rejected",
    "deal.created", "deal.stage_changed", "deal.won", "deal.lost", "deal.updated",
    "task.created", "task.completed", "task.updated", "task.reassigned",
    "interaction.recorded", "contact.updated",
  ].join(",");
  state.live = new EventSource(`/api/v1/events/stream?types=${encodeURIComponent(types)}`);
  const handler = (ev) => {
    if (state.onLive) state.onLive(ev.type, ev.data ? JSON.parse(ev.data) : {});
  };
  for (const type of types.split(",")) state.live.addEventListener(type, handler);
  // Whatever happened between a screen's first load and the stream being (re)opened.
  state.live.addEventListener("open", () => state.onLive && state.onLive("open", {}));
}

function closeLive() {
  if (state.live) state.live.close();
  state.live = null;
}

// Debounced, and only while the screen that asked is still the one shown.
function debounce(fn, ms = 250) {
  const gen = state.gen;
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => gen === state.gen && fn(...args), ms);
  };
}

// ---- layout ---------------------------------------------------------------------------------

const NAV = ["inbox", "contacts", "pipeline", "tasks", "dashboard", "channels"];

function layout(path) {
  const searchBox = h("input", { type: "search", name: "q", placeholder: t("searchHint"), id: "global-search" });
  const langSelect = h(
    "select",
    { id: "lang", onchange: (ev) => { setLang(ev.target.value); render(); } },
    LANGS.map((l) => h("option", { value: l, selected: l === lang }, l === "ru" ? "Русский" : "English")),
  );
  const header = h(
    "header",
    { class: "top" },
    h("a", { href: "#main", class: "skip" }, t("skip")),
    h("span", { class: "brand" }, t("app")),
    h(
      "nav",
      { "aria-label": t("mainNav") },
      h(
        "ul",
        {},
        NAV.map((key) =>
          h(
            "li",
            {},
            h(
              "a",
              { href: `/app/${key}`, "aria-current": path.startsWith(`/app/${key}`) ? "page" : null },
              t(key),
            ),
          ),
        ),
      ),
    ),
    h(
      "form",
      {
        role: "search",
        class: "search",
        onsubmit: (ev) => {
          ev.preventDefault();
          go(`/app/contacts?q=${encodeURIComponent(searchBox.value.trim())}`);
        },
      },
      h("label", { for: "global-search", class: "sr-only" }, t("search")),
      searchBox,
      h("button", { type: "submit" }, t("search")),
    ),
    h("label", { for: "lang", class: "sr-only" }, t("language")),
    langSelect,
    h("span", { class: "who" }, state.me ? state.me.name || state.me.email : ""),
    h("button", { type: "button", class: "link", onclick: signOut }, t("signOut")),
  );
  const main = h("main", { id: "main", tabindex: "-1" });
  root.replaceChildren(header, main, h("div", { id: "toast", role: "status", "aria-live": "polite" }));
  return main;
}

async function signOut() {
  try {
    await del("/api/v1/sessions/current");
  } finally {
    setCsrf(null);
    state.me = null;
    closeLive();
    go("/app/login", true);
  }
}

const userName = (id) => (id ? state.users.get(id)?.name || state.users.get(id)?.email || id : t("noOwner"));

function userSelect(name, selected, { any = false, none = true } = {}) {
  return h(
    "select",
    { name },
    any ? h("option", { value: "" }, t("everyone")) : null,
    none && !any ? h("option", { value: "" }, t("noOwner")) : null,
    [...state.users.values()]
      .filter((u) => u.active !== false)
      .map((u) => h("option", { value: u.id, selected: u.id === selected }, u.name || u.email)),
  );
}

function contactLink(id, name) {
  return h("a", { href: `/app/contacts/${encodeURIComponent(id)}`, class: "contact-link" }, name || id);
}

// ---- sign-in --------------------------------------------------------------------------------

async function loginScreen() {
  const email = h("input", { type: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", autocomplete: "current-password", required: true });
  const message = h("p", { class: "form-error", role: "alert" });
  const form = h(
    "form",
    {
      class: "login card",
      onsubmit: async (ev) => {
        ev.preventDefault();
        message.textContent = "";
        try {
          const s = await post("/api/v1/sessions", { email: email.value, password: password.value });
          setCsrf(s.csrf_token);
          state.me = s.user;
          state.currency = s.tenant?.currency || "RUB";
          await loadUsers();
          openLive();
          go("/app/inbox");
        } catch (err) {
          message.textContent = err.status === 429 ? t("tooMany") : t("wrongPair");
          password.select();
        }
      },
    },
    h("h1", {}, t("app")),
    field(t("email"), email, { name: "email" }),
    field(t("password"), password, { name: "password" }),
    message,
    h("button", { type: "submit", class: "primary" }, t("signIn")),
  );
  const langLinks = h(
    "p",
    { class: "langs" },
    LANGS.map((l) => h("a", { href: `/app/login?lang=${l}`, lang: l, onclick: (ev) => { ev.preventDefault(); setLang(l); render(); } }, l === "ru" ? "Русский" : "English")),
  );
  root.replaceChildren(h("main", { id: "main", class: "center" }, form, langLinks));
  email.focus();
}

// ---- inbox ----------------------------------------------------------------------------------

async function inboxScreen(main) {
  main.append(h("h1", {}, t("inbox")), h("p", { class: "muted" }, t("shortcuts")));
  const list = h("div", { class: "inbox", "aria-live": "polite" });
  main.append(list);
  const channels = await get("/api/v1/channels", { limit: 500 }).catch(() => ({ items: [] }));
  const channelName = new Map(channels.items.map((c) => [c.id, c.name]));

  // Items already shown are kept as they are (a half-typed link search survives a live reload).
  const shown = new Map();
  async function load() {
    const page = await get("/api/v1/inbox", { status: "pending", limit: 200 });
    const signature = page.items.map((x) => x.id).join(",");
    if (signature === shown.signature) return;
    shown.signature = signature;
    const ids = new Set(page.items.map((x) => x.id));
    for (const id of [...shown.keys()]) if (!ids.has(id)) shown.delete(id);
    const groups = new Map();
    const items = [...page.items].sort((a, b) => String(b.received_at).localeCompare(String(a.received_at)));
    for (const item of items) {
      const key = item.channel_id || "";
      if (!groups.has(key)) groups.set(key, []);
      groups.get(key).push(item);
    }
    const sections = [...groups.entries()].map(([cid, group]) =>
      h(
        "section",
        { class: "channel-group", "aria-label": channelName.get(cid) || cid },
        h("h2", {}, channelName.get(cid) || cid || t("allChannels"), " ", h("span", { class: "badge" }, group.length)),
        group.map((item) => {
          if (!shown.has(item.id)) shown.set(item.id, inboxItem(item, load));
          return shown.get(item.id);
        }),
      ),
    );
    list.replaceChildren(...(sections.length ? sections : [h("p", { class: "muted" }, t("nothing"))]));
  }

  await load();
  const reload = debounce(load);
  state.onLive = (type) => {
    if (type === "open" || type.startsWith("inbox.")) reload();
  };
}

function inboxItem(item, reload) {
  const s = item.sender || {};
  const i = item.interaction || {};
  const linkInput = h("input", { type: "search", placeholder: t("searchHint") });
  const choices = h("ul", { class: "plain choices", "aria-label": t("results") });
  const el = h(
    "article",
    { class: "inbox-item card", tabindex: "0", dataset: { id: item.id } },
    h(
      "header",
      {},
      h("h3", {}, s.name || s.phones?.[0] || s.emails?.[0] || t("newLead")),
      h("span", { class: "muted" }, t(i.kind) || i.kind, " · ", fmtDate(item.received_at || i.occurred_at)),
    ),
    h("p", {}, [...(s.phones || []), ...(s.emails || [])].join(", ")),
    i.summary ? h("p", { class: "summary" }, i.summary) : null,
    interactionDetails(i),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "button", class: "primary", dataset: { act: "accept" }, onclick: () => act("accept") }, t("accept")),
      h("button", { type: "button", dataset: { act: "reject" }, onclick: () => act("reject") }, t("reject")),
      h(
        "form",
        {
          class: "inline",
          onsubmit: async (ev) => {
            ev.preventDefault();
            const found = await searchContacts(linkInput.value);
            if (!found.length) return toast(t("noResults"));
            if (found.length === 1) return act("link", { contact_id: found[0].id });
            // several people match: the operator picks one
            choices.replaceChildren(
              ...found.slice(0, 10).map((c) =>
                h("li", {}, h("button", { type: "button", onclick: () => act("link", { contact_id: c.id }) },
                  `${t("linkBtn")}: ${c.name || ""} ${[...(c.phones || []), ...(c.emails || [])].join(", ")}`.trim()))),
            );
            choices.querySelector("button")?.focus();
            return undefined;
          },
        },
        field(t("linkTo"), linkInput, { name: "contact" }),
        h("button", { type: "submit", dataset: { act: "link" } }, t("linkBtn")),
      ),
    ),
    choices,
  );
  async function act(verb, body = {}) {
    try {
      const out = await post(`/api/v1/inbox/${item.id}/${verb}`, body);
      el.remove();
      if (out && out.contact_id && verb !== "reject") {
        const box = document.getElementById("toast");
        box.replaceChildren(t("done"), " ", contactLink(out.contact_id, s.name || t("openCard")));
      } else toast(t("done"));
      reload();
    } catch (err) {
      toast(errorText(err));
    }
  }
  el.inboxAct = act;
  el.focusLink = () => linkInput.focus();
  return el;
}

document.addEventListener("keydown", (ev) => {
  if (!location.pathname.startsWith("/app/inbox")) return;
  if (ev.target.closest && ev.target.closest("input,textarea,select")) return;
  if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
  const items = [...document.querySelectorAll(".inbox-item")];
  if (!items.length) return;
  const current = document.activeElement?.closest?.(".inbox-item");
  const idx = items.indexOf(current);
  if (ev.key === "j" || ev.key === "k") {
    const next = ev.key === "j" ? Math.min(items.length - 1, idx + 1) : Math.max(0, idx - 1);
    items[next].focus();
    ev.preventDefault();
  } else if (current && (ev.key === "a" || ev.key === "r")) {
    current.inboxAct(ev.key === "a" ? "accept" : "reject");
    ev.preventDefault();
  } else if (current && ev.key === "l") {
    current.focusLink();
    ev.preventDefault();
  }
});

// ---- contacts and search --------------------------------------------------------------------

export function searchParams(text) {
  const q = text.trim();
  if (!q) return {};
  if (q.includes("@")) return { email: q };
  const digits = q.replace(/\D/g, "");
  if (digits.length >= 5 && /^[\d\s()+\-.]+$/.test(q)) return { phone: q };
  return { q };
}

async function searchContacts(text) {
  const params = searchParams(text);
  if (!Object.keys(params).length) return [];
  const page = await get("/api/v1/contacts", { ...params, limit: 50 });
  return page.items;
}

async function contactsScreen(main) {
  const q = new URLSearchParams(location.search).get("q") || "";
  const box = h("input", { type: "search", value: q, placeholder: t("searchHint") });
  main.append(
    h("h1", {}, t("contacts")),
    h(
      "form",
      { role: "search", class: "inline", onsubmit: (ev) => { ev.preventDefault(); go(`/app/contacts?q=${encodeURIComponent(box.value.trim())}`); } },
      field(t("search"), box, { name: "q" }),
      h("button", { type: "submit" }, t("search")),
    ),
  );
  main.append(newContactForm(q));
  const items = q ? await searchContacts(q) : (await get("/api/v1/contacts", { limit: 50 })).items;
  main.append(
    items.length
      ? h(
          "table",
          { class: "list" },
          h("thead", {}, h("tr", {}, h("th", {}, t("name")), h("th", {}, t("phones")), h("th", {}, t("emails")), h("th", {}, t("owner")))),
          h(
            "tbody",
            {},
            items.map((c) =>
              h(
                "tr",
                {},
                h("td", {}, contactLink(c.id, c.name || c.phones?.[0] || c.emails?.[0])),
                h("td", {}, (c.phones || []).join(", ")),
                h("td", {}, (c.emails || []).join(", ")),
                h("td", {}, userName(c.owner_id)),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, t("noResults")),
  );
  box.focus();
}

function newContactForm(q) {
  const params = searchParams(q);
  const name = h("input", { type: "text", value: params.q || "" });
  const phone = h("input", { type: "tel", value: params.phone || "" });
  const email = h("input", { type: "email", value: params.email || "" });
  const form = h(
    "form",
    {
      class: "card inline new-contact",
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const c = await post("/api/v1/contacts", {
            name: name.value.trim() || null,
            phones: phone.value.trim() ? [phone.value.trim()] : [],
            emails: email.value.trim() ? [email.value.trim()] : [],
          });
          go(`/app/contacts/${encodeURIComponent(c.id)}`);
        } catch (err) {
          showErrors(form, err.problem);
        }
      },
    },
    h("h2", { class: "sr-only" }, t("newContact")),
    field(t("name"), name, { name: "name" }),
    field(t("phones"), phone, { name: "phones" }),
    field(t("emails"), email, { name: "emails" }),
    h("button", { type: "submit" }, t("newContact")),
    h("p", { class: "form-error", role: "alert" }),
  );
  return form;
}

// ---- customer card --------------------------------------------------------------------------

async function cardScreen(main, contactId) {
  const [contact, timeline, deals, tasks, customFields, pipelines] = await Promise.all([
    get(`/api/v1/contacts/${contactId}`),
    get(`/api/v1/contacts/${contactId}/timeline`, { limit: 200 }),
    get("/api/v1/deals", { contact_id: contactId, limit: 100 }),
    get("/api/v1/tasks", { contact_id: contactId, status: "open", limit: 100 }),
    get("/api/v1/custom-fields", { entity: "contact", limit: 200 }).catch(() => ({ items: [] })),
    get("/api/v1/pipelines", { limit: 100 }).catch(() => ({ items: [] })),
  ]);
  const stages = new Map(pipelines.items.flatMap((p) => p.stages.map((s) => [s.id, s.name])));
  const reload = () => render();

  const facts = h(
    "dl",
    { class: "facts" },
    h("dt", {}, t("phones")), h("dd", {}, (contact.phones || []).join(", ") || t("none")),
    h("dt", {}, t("emails")), h("dd", {}, (contact.emails || []).join(", ") || t("none")),
    h("dt", {}, t("owner")), h("dd", {}, userName(contact.owner_id)),
    h("dt", {}, t("tags")), h("dd", {}, (contact.tags || []).join(", ") || t("none")),
    h("dt", {}, t("source")), h("dd", {}, sourceText(contact.source)),
    customFields.items.flatMap((f) => [h("dt", {}, f.label || f.key), h("dd", {}, formatCustom(contact.custom?.[f.key]))]),
  );

  main.append(
    h("h1", {}, contact.name || contact.phones?.[0] || contact.emails?.[0] || t("contacts")),
    h(
      "div",
      { class: "columns" },
      h(
        "div",
        { class: "col" },
        h("section", { class: "card" }, h("h2", {}, t("fields")), facts, editForm(contact, customFields.items, reload)),
        h(
          "section",
          { class: "card" },
          h("h2", {}, t("deals")),
          deals.items.length
            ? h("ul", { class: "plain" }, deals.items.map((d) => h("li", {}, h("strong", {}, d.title), " · ", stages.get(d.stage_id) || d.status, " · ", fmtMoney(d.amount, d.currency || state.currency))))
            : h("p", { class: "muted" }, t("nothing")),
          pipelines.items.length ? dealForm(contact, pipelines.items, reload) : null,
        ),
        h(
          "section",
          { class: "card" },
          h("h2", {}, t("openTasks")),
          tasks.items.length ? h("ul", { class: "plain" }, tasks.items.map((task) => taskRow(task, reload))) : h("p", { class: "muted" }, t("nothing")),
        ),
      ),
      h(
        "div",
        { class: "col wide" },
        h("section", { class: "card actions-card" }, noteForm(contactId, reload), callForm(contactId, reload), taskForm(contactId, reload)),
        h("section", { class: "card" }, h("h2", {}, t("timeline")), timelineView(timeline.items)),
      ),
    ),
  );
  const later = debounce(reload, 400);
  state.onLive = (type, env) => {
    if (env?.payload?.contact_id === contactId) later();
  };
}

function sourceText(source) {
  if (!source) return t("none");
  return [source.kind, source.utm_source, source.utm_medium, source.utm_campaign].filter(Boolean).join(" / ") || t("none");
}

function formatCustom(v) {
  if (v === null || v === undefined || v === "") return t("none");
  if (Array.isArray(v)) return v.join(", ");
  if (typeof v === "boolean") return v ? "✓" : "✗";
  return String(v);
}

function customControl(f, value) {
  const v = value ?? "";
  switch (f.type) {
    case "number": return h("input", { type: "number", step: "any", value: v });
    case "date": return h("input", { type: "date", value: v });
    case "bool": return h("input", { type: "checkbox", checked: Boolean(value) });
    case "email": return h("input", { type: "email", value: v });
    case "url": return h("input", { type: "url", value: v });
    case "phone": return h("input", { type: "tel", value: v });
    case "enum":
      return h("select", {}, h("option", { value: "" }, t("none")), (f.options || []).map((o) => h("option", { value: o, selected: o === value }, o)));
    case "multi_enum":
      return h("select", { multiple: true }, (f.options || []).map((o) => h("option", { value: o, selected: (value || []).includes(o) }, o)));
    default: return h("input", { type: "text", value: v });
  }
}

function readCustom(f, el) {
  if (f.type === "bool") return el.checked;
  if (f.type === "multi_enum") return [...el.selectedOptions].map((o) => o.value);
  if (el.value === "") return null;
  if (f.type === "number") return Number(el.value);
  return el.value;
}

function editForm(contact, customFields, reload) {
  const name = h("input", { type: "text", value: contact.name || "" });
  const phones = h("input", { type: "text", value: (contact.phones || []).join(", ") });
  const emails = h("input", { type: "text", value: (contact.emails || []).join(", ") });
  const tags = h("input", { type: "text", value: (contact.tags || []).join(", ") });
  const owner = userSelect("owner_id", contact.owner_id);
  const controls = customFields.map((f) => [f, customControl(f, contact.custom?.[f.key])]);
  const list = (el) => el.value.split(",").map((x) => x.trim()).filter(Boolean);
  const form = h(
    "form",
    {
      class: "edit",
      hidden: true,
      onsubmit: async (ev) => {
        ev.preventDefault();
        const custom = Object.fromEntries(controls.map(([f, el]) => [f.key, readCustom(f, el)]));
        try {
          await patch(`/api/v1/contacts/${contact.id}`, {
            name: name.value.trim() || null, phones: list(phones), emails: list(emails), tags: list(tags),
            owner_id: owner.value || null, custom,
          });
          toast(t("saved"));
          reload();
        } catch (err) {
          showErrors(form, err.problem);
        }
      },
    },
    field(t("name"), name, { name: "name" }),
    field(t("phones"), phones, { name: "phones" }),
    field(t("emails"), emails, { name: "emails" }),
    field(t("tags"), tags, { name: "tags" }),
    field(t("owner"), owner, { name: "owner_id" }),
    controls.map(([f, el]) => field(f.label || f.key, el, { name: `custom.${f.key}` })),
    h("p", { class: "form-error", role: "alert" }),
    h("button", { type: "submit", class: "primary" }, t("save")),
    " ",
    h("button", { type: "button", onclick: () => { form.hidden = true; toggle.hidden = false; } }, t("cancel")),
  );
  const toggle = h("button", { type: "button", onclick: () => { form.hidden = false; toggle.hidden = true; name.focus(); } }, t("edit"));
  return h("div", {}, toggle, form);
}

function dealForm(contact, pipelines, reload) {
  const title = h("input", { type: "text", required: true, value: contact.name || "" });
  const amount = h("input", { type: "number", min: 0, step: "0.01", value: "" });
  const pipeline = h("select", {}, pipelines.map((p) => h("option", { value: p.id, selected: Boolean(p.default) }, p.name)));
  const form = h(
    "form",
    {
      class: "deal-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await post("/api/v1/deals", {
            title: title.value, contact_id: contact.id, pipeline_id: pipeline.value,
            amount: amount.value || "0", currency: state.currency, owner_id: contact.owner_id || state.me.id,
          });
          reload();
        } catch (err) {
          showErrors(form, err.problem);
        }
      },
    },
    h("h3", {}, t("newDeal")),
    field(t("dealTitle"), title, { name: "title" }),
    h("div", { class: "row" }, field(t("amount"), amount, { name: "amount" }), field(t("pipeline"), pipeline, { name: "pipeline_id" })),
    h("p", { class: "form-error", role: "alert" }),
    h("button", { type: "submit" }, t("newDeal")),
  );
  return form;
}

function noteForm(contactId, reload) {
  const text = h("textarea", { rows: 2, required: true });
  const form = h(
    "form",
    {
      class: "note-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await post(`/api/v1/contacts/${contactId}/interactions`, { kind: "note", summary: text.value });
          reload();
        } catch (err) {
          showErrors(form, err.problem);
        }
      },
    },
    field(t("note"), text, { name: "summary" }),
    h("p", { class: "form-error", role: "alert" }),
    h("button", { type: "submit" }, t("addNote")),
  );
  return form;
}

function callForm(contactId, reload) {
  const direction = h("select", {}, h("option", { value: "out" }, t("dirOut")), h("option", { value: "in" }, t("dirIn")));
  const status = h("select", {}, ["answered", "missed", "busy", "failed"].map((s) => h("option", { value: s }, t(s))));
  const duration = h("input", { type: "number", min: 0, value: 60 });
  const summary = h("input", { type: "text", required: true });
  const form = h(
    "form",
    {
      class: "call-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await post(`/api/v1/contacts/${contactId}/interactions`, {
            kind: "call", direction: direction.value, summary: summary.value,
            data: { status: status.value, duration_s: Number(duration.value || 0) },
          });
          reload();
        } catch (err) {
          showErrors(form, err.problem);
        }
      },
    },
    h("h3", {}, t("logCall")),
    h("div", { class: "row" },
      field(t("direction"), direction, { name: "direction" }),
      field(t("status"), status, { name: "data.status" }),
      field(t("duration"), duration, { name: "data.duration_s" })),
    field(t("callSummary"), summary, { name: "summary" }),
    h("p", { class: "form-error", role: "alert" }),
    h("button", { type: "submit" }, t("logCall")),
  );
  return form;
}

const TASK_KINDS = ["call", "meeting", "email", "proposal", "other"];

function localInput(date) {
  const d = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

function taskForm(contactId, reload) {
  const title = h("input", { type: "text", required: true });
  const kind = h("select", {}, TASK_KINDS.map((k) => h("option", { value: k }, t(k === "email" ? "emailKind" : k))));
  const due = h("input", { type: "datetime-local", value: localInput(new Date(Date.now() + 3600_000)), required: true });
  const assignee = userSelect("assignee_id", state.me?.id);
  const form = h(
    "form",
    {
      class: "task-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          await post("/api/v1/tasks", {
            title: title.value, kind: kind.value, due_at: new Date(due.value).toISOString(),
            assignee_id: assignee.value || null, contact_id: contactId,
          });
          reload();
        } catch (err) {
          showErrors(form, err.problem);
        }
      },
    },
    h("h3", {}, t("createTask")),
    field(t("title"), title, { name: "title" }),
    h("div", { class: "row" }, field(t("kind"), kind, { name: "kind" }), field(t("due"), due, { name: "due_at" }), field(t("assignee"), assignee, { name: "assignee_id" })),
    h("p", { class: "form-error", role: "alert" }),
    h("button", { type: "submit" }, t("createTask")),
  );
  return form;
}

function interactionDetails(i) {
  const d = i.data || {};
  const parts = [];
  if (d.fields && Object.keys(d.fields).length) {
    parts.push(h("dl", { class: "kv" }, Object.entries(d.fields).flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, formatCustom(v))])));
  }
  const utm = d.utm ? Object.entries(d.utm).filter(([, v]) => v) : [];
  if (utm.length) parts.push(h("p", { class: "utm" }, h("strong", {}, t("utm"), ": "), utm.map(([k, v]) => `${k.replace("utm_", "")}=${v}`).join(" · ")));
  return parts;
}

export function groupTimeline(items) {
  // Emails of one thread are shown together, where the newest of them is.
  const out = [];
  const threads = new Map();
  for (const item of items) {
    const thread = item.kind === "email" && (item.data?.thread_id || item.data?.subject);
    if (thread) {
      if (!threads.has(thread)) {
        const group = { kind: "thread", id: thread, items: [] };
        threads.set(thread, group);
        out.push(group);
      }
      threads.get(thread).items.push(item);
    } else out.push(item);
  }
  return out;
}

function timelineView(items) {
  if (!items.length) return h("p", { class: "muted" }, t("nothing"));
  return h(
    "ol",
    { class: "timeline" },
    groupTimeline(items).map((entry) => (entry.kind === "thread" ? threadEntry(entry) : timelineEntry(entry))),
  );
}

function head(i) {
  const dir = i.direction === "in" ? "←" : i.direction === "out" ? "→" : "";
  return h("header", {}, h("span", { class: `kind kind-${i.kind}` }, t(i.kind === "email" ? "emailKind" : i.kind)), " ", dir, " ", h("time", { datetime: i.occurred_at }, fmtDate(i.occurred_at)));
}

function timelineEntry(i) {
  const d = i.data || {};
  const body = [];
  if (i.kind === "call") {
    body.push(h("p", {}, [d.status ? t(d.status) : null, d.duration_s != null ? `${fmtNumber(d.duration_s)} s` : null].filter(Boolean).join(" · ")));
    if (d.recording_url) {
      body.push(h("audio", { controls: true, preload: "none", src: d.recording_url, "aria-label": t("recording") }));
    }
  }
  return h("li", { class: `event ${i.kind}` }, head(i), i.summary ? h("p", { class: "summary" }, i.summary) : null, body, interactionDetails(i));
}

function threadEntry(group) {
  const newest = group.items[0];
  const messages = [...group.items].reverse();
  return h(
    "li",
    { class: "event email thread" },
    h("details", { open: true },
      h("summary", {}, h("span", { class: "kind kind-email" }, t("thread")), " ", newest.data?.subject || newest.summary, " ", h("span", { class: "badge" }, group.items.length)),
      h("ol", { class: "thread-messages" }, messages.map((m) =>
        h("li", {}, head(m), h("p", { class: "muted" }, [m.data?.from, (m.data?.to || []).join?.(", ")].filter(Boolean).join(" → ")), m.summary ? h("p", {}, m.summary) : null)))),
  );
}

function taskRow(task, reload) {
  const date = h("input", { type: "datetime-local", value: localInput(new Date(task.due_at)) });
  return h(
    "li",
    { class: `task-row${task.overdue ? " overdue" : ""}`, dataset: { id: task.id } },
    h("span", { class: "task-title" }, task.title),
    " ",
    h("span", { class: "muted" }, t(task.kind === "email" ? "emailKind" : task.kind), " · ", fmtDate(task.due_at)),
    task.contact_id && !location.pathname.includes(task.contact_id) ? [" · ", contactLink(task.contact_id, t("openCard"))] : null,
    h("div", { class: "actions" },
      h("button", { type: "button", class: "primary", onclick: async () => { await post(`/api/v1/tasks/${task.id}/complete`, {}).catch((e) => toast(errorText(e))); reload(); } }, t("complete")),
      h("label", { class: "sr-only", for: `due-${task.id}` }, t("reschedule")),
      Object.assign(date, { id: `due-${task.id}` }),
      h("button", { type: "button", onclick: async () => { await patch(`/api/v1/tasks/${task.id}`, { due_at: new Date(date.value).toISOString() }).catch((e) => toast(errorText(e))); reload(); } }, t("reschedule")),
    ),
  );
}

// ---- pipeline board -------------------------------------------------------------------------

async function pipelineScreen(main) {
  const params = new URLSearchParams(location.search);
  const pipelines = (await get("/api/v1/pipelines", { limit: 100 })).items;
  main.append(h("h1", {}, t("pipeline")));
  if (!pipelines.length) return main.append(h("p", { class: "muted" }, t("nothing")));
  const pipeline = pipelines.find((p) => p.id === params.get("pipeline_id")) || pipelines.find((p) => p.default) || pipelines[0];
  const owner = params.get("owner_id") || "";
  const pipeSelect = h("select", {}, pipelines.map((p) => h("option", { value: p.id, selected: p.id === pipeline.id }, p.name)));
  const ownerSelect = userSelect("owner_id", owner, { any: true });
  const apply = () => go(`/app/pipeline?pipeline_id=${pipeSelect.value}&owner_id=${ownerSelect.value}`);
  pipeSelect.onchange = apply;
  ownerSelect.onchange = apply;
  main.append(h("form", { class: "inline filters", onsubmit: (e) => e.preventDefault() }, field(t("pipeline"), pipeSelect, { name: "pipeline" }), field(t("filterOwner"), ownerSelect, { name: "owner" })));
  const board = h("div", { class: "board" });
  main.append(board);
  const reasons = (await get("/api/v1/loss-reasons").catch(() => ({ items: [] }))).items || [];

  async function load() {
    const deals = (await get("/api/v1/deals", { pipeline_id: pipeline.id, owner_id: owner, limit: 500 })).items;
    const columns = pipeline.stages.map((stage) => {
      const inStage = deals.filter((d) => d.stage_id === stage.id);
      const sum = inStage.reduce((acc, d) => acc + Number(d.amount || 0), 0);
      const currency = inStage[0]?.currency || state.currency;
      const col = h(
        "section",
        { class: `column stage-${stage.kind}`, dataset: { stageId: stage.id }, "aria-label": stage.name },
        h("header", {}, h("h2", {}, stage.name), h("p", { class: "muted" }, h("span", { class: "count" }, inStage.length), ` ${t("count")} · `, h("span", { class: "sum" }, fmtMoney(sum, currency)))),
        h("ul", { class: "cards" }, inStage.map((d) => dealCard(d, pipeline, (to) => move(d, to)))),
      );
      col.addEventListener("dragover", (ev) => { ev.preventDefault(); col.classList.add("drop"); });
      col.addEventListener("dragleave", () => col.classList.remove("drop"));
      col.addEventListener("drop", (ev) => {
        ev.preventDefault();
        col.classList.remove("drop");
        const id = ev.dataTransfer.getData("text/plain");
        const deal = deals.find((d) => d.id === id);
        if (deal && deal.stage_id !== stage.id) move(deal, stage);
      });
      return col;
    });
    board.replaceChildren(...columns);
  }

  async function move(deal, stage) {
    let lost_reason;
    if (stage.kind === "lost") {
      lost_reason = await askReason(reasons);
      if (!lost_reason) return;
    }
    try {
      await post(`/api/v1/deals/${deal.id}/move`, { stage_id: stage.id, lost_reason });
    } catch (err) {
      toast(errorText(err));
    }
    await load();
  }

  await load();
  const later = debounce(load, 400);
  state.onLive = (type) => { if (type.startsWith("deal.")) later(); };
}

function dealCard(deal, pipeline, move) {
  const select = h(
    "select",
    { onchange: (ev) => { const s = pipeline.stages.find((x) => x.id === ev.target.value); if (s) move(s); } },
    pipeline.stages.map((s) => h("option", { value: s.id, selected: s.id === deal.stage_id }, s.name)),
  );
  const li = h(
    "li",
    { class: "deal card", draggable: "true", dataset: { dealId: deal.id } },
    h("strong", {}, deal.title),
    h("p", {}, fmtMoney(deal.amount, deal.currency || state.currency), " · ", userName(deal.owner_id)),
    h("p", {}, contactLink(deal.contact_id, t("openCard"))),
    field(t("moveTo"), select, { name: "stage" }),
  );
  li.addEventListener("dragstart", (ev) => { ev.dataTransfer.setData("text/plain", deal.id); ev.dataTransfer.effectAllowed = "move"; });
  return li;
}

function askReason(reasons) {
  return new Promise((resolve) => {
    const input = reasons.length
      ? h("select", { required: true }, reasons.map((r) => h("option", { value: r.name || r }, r.name || r)))
      : h("input", { type: "text", required: true });
    const dialog = h(
      "dialog",
      { class: "card", "aria-labelledby": "lost-title" },
      h(
        "form",
        { method: "dialog", onsubmit: (ev) => { ev.preventDefault(); const v = input.value.trim(); if (!v) return; dialog.close(); dialog.remove(); resolve(v); } },
        h("h2", { id: "lost-title" }, t("lostAsk")),
        field(t("lostReason"), input, { name: "lost_reason" }),
        h("div", { class: "actions" },
          h("button", { type: "submit", class: "primary" }, t("move")),
          h("button", { type: "button", onclick: () => { dialog.close(); dialog.remove(); resolve(null); } }, t("cancel"))),
      ),
    );
    document.body.append(dialog);
    dialog.showModal();
    input.focus();
  });
}

// ---- tasks ----------------------------------------------------------------------------------

async function tasksScreen(main) {
  main.append(h("h1", {}, t("myDay")));
  const open = (await get("/api/v1/tasks", { assignee_id: state.me.id, status: "open", limit: 500 })).items;
  const now = new Date();
  const endOfDay = new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1);
  const groups = [
    ["overdue", open.filter((x) => new Date(x.due_at) < now)],
    ["today", open.filter((x) => new Date(x.due_at) >= now && new Date(x.due_at) < endOfDay)],
    ["upcoming", open.filter((x) => new Date(x.due_at) >= endOfDay)],
  ];
  const reload = () => render();
  main.append(
    h("div", { class: "columns three" }, groups.map(([key, list]) =>
      h("section", { class: `card tasks-${key}`, "aria-label": t(key) },
        h("h2", {}, t(key), " ", h("span", { class: "badge" }, list.length)),
        list.length ? h("ul", { class: "plain" }, list.sort((a, b) => a.due_at.localeCompare(b.due_at)).map((task) => taskRow(task, reload))) : h("p", { class: "muted" }, t("nothing"))))),
  );
  if (state.me.role === "admin") await workloadSection(main, reload);
  const later = debounce(reload, 400);
  state.onLive = (type) => { if (type.startsWith("task.")) later(); };
}

async function workloadSection(main, reload) {
  const load = await get("/api/v1/workload");
  const rows = load.items.map((r) => ({ label: userName(r.user_id), values: [r.open, r.overdue, r.due_today] }));
  const from = userSelect("from_user_id", null, { none: false });
  const to = userSelect("to_user_id", null, { none: false });
  const form = h(
    "form",
    {
      class: "inline",
      onsubmit: async (ev) => {
        ev.preventDefault();
        try {
          const out = await post("/api/v1/tasks/reassign", { from_user_id: from.value, to_user_id: to.value });
          toast(`${t("done")}: ${out?.reassigned ?? ""}`);
          reload();
        } catch (err) {
          showErrors(form, err.problem);
        }
      },
    },
    field(t("from"), from, { name: "from_user_id" }),
    field(t("to"), to, { name: "to_user_id" }),
    h("button", { type: "submit" }, t("reassign")),
    h("p", { class: "form-error", role: "alert" }),
  );
  main.append(
    h("section", { class: "card" },
      h("h2", {}, t("workload")),
      bars({ label: t("workload"), series: [{ name: t("open"), cls: "s1" }, { name: t("overdue"), cls: "s3" }, { name: t("dueToday"), cls: "s2" }], rows, format: (v) => fmtNumber(v) }),
      h("h3", {}, t("reassign")),
      form),
  );
}

// ---- dashboard ------------------------------------------------------------------------------

function isoDay(d) {
  return `${d.getFullYear()}-${String(d.getMonth() + 1).padStart(2, "0")}-${String(d.getDate()).padStart(2, "0")}`;
}

export function presetRange(preset, now = new Date()) {
  if (preset === "month") return [isoDay(new Date(now.getFullYear(), now.getMonth(), 1)), isoDay(now)];
  if (preset === "30") return [isoDay(new Date(now.getTime() - 29 * 86400_000)), isoDay(now)];
  if (preset === "year") return [isoDay(new Date(now.getFullYear(), 0, 1)), isoDay(now)];
  return ["", ""];
}

async function dashboardScreen(main) {
  const params = new URLSearchParams(location.search);
  const preset = params.get("period") || "all";
  const [defFrom, defTo] = presetRange(preset);
  const fromV = params.get("from") ?? defFrom;
  const toV = params.get("to") ?? defTo;
  const presetSel = h("select", {}, [["month", "thisMonth"], ["30", "last30"], ["year", "thisYear"], ["all", "allTime"]].map(([v, k]) => h("option", { value: v, selected: v === preset }, t(k))));
  const from = h("input", { type: "date", value: fromV });
  const to = h("input", { type: "date", value: toV });
  presetSel.onchange = () => { const [a, b] = presetRange(presetSel.value); from.value = a; to.value = b; };
  main.append(
    h("h1", {}, t("dashboard")),
    h("form", { class: "inline filters", onsubmit: (ev) => { ev.preventDefault(); go(`/app/dashboard?period=${presetSel.value}&from=${from.value}&to=${to.value}`); } },
      field(t("period"), presetSel, { name: "period" }), field(t("from"), from, { name: "from" }), field(t("to"), to, { name: "to" }),
      h("button", { type: "submit" }, t("apply"))),
  );
  const range = {};
  if (fromV) range.from = new Date(`${fromV}T00:00:00`).toISOString();
  if (toV) range.to = new Date(new Date(`${toV}T00:00:00`).getTime() + 86400_000).toISOString();
  const report = (name) => get(`/api/v1/reports/${name}`, range).catch((err) => ({ error: err }));
  const [funnel, sources, plan, forecast, response] = await Promise.all(["funnel", "sources", "plan-vs-actual", "forecast", "response-time"].map(report));
  const money = (v) => fmtMoney(v, state.currency);
  const grid = h("div", { class: "charts" });
  const panel = (title, content, extra) => h("section", { class: "card chart-card" }, h("h2", {}, title), content.error ? h("p", { class: "muted" }, t("none")) : extra(content));
  grid.append(
    panel(t("funnel"), funnel, (r) => [
      bars({ label: t("funnel"), series: [{ name: t("entered"), cls: "s1" }, { name: t("movedOn"), cls: "s2" }], rows: (r.stages || []).map((s) => ({ label: s.name, values: [s.entered, s.moved_on] })), format: (v) => fmtNumber(v) }),
      h("p", {}, `${t("won")}: ${fmtNumber(r.won)} · ${t("lost")}: ${fmtNumber(r.lost)} · ${t("winRate")}: ${fmtPercent(r.win_rate)}`),
    ]),
    panel(t("sources"), sources, (r) => [
      bars({ label: t("sources"), series: [{ name: t("leads"), cls: "s1" }, { name: t("won"), cls: "s2" }], rows: (r.items || []).map((s) => ({ label: s.source, values: [s.leads, s.won] })), format: (v) => fmtNumber(v) }),
      h("table", { class: "list" }, h("thead", {}, h("tr", {}, [t("source"), t("revenue"), t("cost"), t("roi")].map((x) => h("th", {}, x)))),
        h("tbody", {}, (r.items || []).map((s) => h("tr", {}, h("td", {}, s.source), h("td", {}, money(s.revenue)), h("td", {}, s.cost ? money(s.cost) : t("none")), h("td", {}, fmtPercent(s.roi)))))),
    ]),
    panel(t("planVsActual"), plan, (r) => bars({ label: t("planVsActual"), series: [{ name: t("plan"), cls: "s1" }, { name: t("actual"), cls: "s2" }], rows: (r.items || []).map((p) => ({ label: `${p.period}${p.owner_id ? ` · ${userName(p.owner_id)}` : ""}`, values: [p.plan_amount, p.actual_amount] })), format: money })),
    panel(t("forecast"), forecast, (r) => [
      bars({ label: t("forecast"), series: [{ name: t("amount"), cls: "s1" }, { name: t("weighted"), cls: "s2" }], rows: (r.items || []).map((p) => ({ label: p.period || t("none"), values: [p.amount, p.weighted] })), format: money }),
      h("p", {}, `${t("weighted")}: ${money(r.weighted_total)}`),
    ]),
    panel(t("responseTime"), response, (r) => bars({ label: t("responseTime"), series: [{ name: t("avgMinutes"), cls: "s1" }], rows: (r.items || []).map((x) => ({ label: userName(x.owner_id), values: [x.avg_minutes ?? 0] })), format: (v) => fmtNumber(v, 1) })),
  );
  main.append(grid);
}

// ---- channels -------------------------------------------------------------------------------

// What each kind needs, in the provider's own words (API.md).
const KIND_FIELDS = {
  form: { secrets: ["token", "hmac_secret"], config: ["honeypot_field"] },
  tilda: { secrets: [], config: [] },
  typeform: { secrets: ["secret"], config: [] },
  webflow: { secrets: ["secret"], config: [] },
  yandex_forms: { secrets: ["token"], config: [] },
  twilio: { secrets: ["auth_token"], config: [] },
  zadarma: { secrets: ["api_secret"], config: [] },
  mango: { secrets: ["api_key", "api_salt"], config: [] },
  asterisk: { secrets: ["hmac_secret"], config: [] },
  meta_leads: { secrets: ["app_secret", "verify_token", "page_access_token"], config: ["graph_base_url"] },
  google_ads: { secrets: ["key"], config: [] },
  vk: { secrets: ["secret", "confirmation", "access_token"], config: ["group_id", "api_base_url"] },
  telegram: { secrets: ["bot_token", "secret_token"], config: [] },
  whatsapp: { secrets: ["app_secret", "verify_token", "access_token"], config: ["phone_number_id", "api_base_url"] },
  avito: { secrets: ["client_id", "client_secret", "token"], config: ["user_id", "api_base_url"] },
  imap: { secrets: ["password"], config: ["host", "port", "ssl", "username"] },
};

async function channelsScreen(main) {
  main.append(h("h1", {}, t("channels")));
  const channels = (await get("/api/v1/channels", { limit: 500 })).items;
  const details = await Promise.all(channels.map((c) => get(`/api/v1/channels/${c.id}`).catch(() => c)));
  if (state.me.role === "admin") main.append(channelForm());
  main.append(h("div", { class: "channels" }, details.length ? details.map(channelCard) : h("p", { class: "muted" }, t("nothing"))));
}

function channelCard(c) {
  const health = c.health || {};
  const url = h("input", { type: "text", readonly: true, value: c.webhook_url });
  const rejected = h("div", { class: "rejected" });
  const card = h(
    "section",
    { class: "card channel", "aria-label": c.name },
    h("h2", {}, c.name, " ", h("span", { class: "badge" }, c.kind)),
    h("p", { class: "muted" }, t("intake"), ": ", c.intake === "auto" ? t("intakeAuto") : t("intakeInbox")),
    h("div", { class: "inline" }, field(t("webhookUrl"), url, { name: "webhook_url" }),
      h("button", { type: "button", onclick: async () => { url.select(); try { await navigator.clipboard.writeText(c.webhook_url); } catch { document.execCommand?.("copy"); } toast(t("copied")); } }, t("copy"))),
    h("dl", { class: "facts" },
      h("dt", {}, t("lastSuccess")), h("dd", {}, fmtDate(health.last_success_at)),
      h("dt", {}, t("lastError")), h("dd", {}, health.last_error_at ? `${fmtDate(health.last_error_at)} — ${health.last_error || ""}` : t("never")),
      h("dt", {}, t("receivedCount")), h("dd", {}, fmtNumber(health.received)),
      h("dt", {}, t("rejectedCount")), h("dd", {}, fmtNumber(health.rejected))),
    rejected,
  );
  if (health.rejected && state.me.role === "admin") {
    get(`/api/v1/channels/${c.id}/rejected-hooks`, { limit: 10 }).then((page) => {
      rejected.append(h("h3", {}, t("rejectedHooks")), h("ul", { class: "plain" }, page.items.map((r) => h("li", {}, fmtDate(r.at), " · ", `${r.status} ${r.reason}`, r.body_excerpt ? h("pre", {}, r.body_excerpt) : null))));
    }).catch(() => {});
  }
  return card;
}

function channelForm() {
  const kind = h("select", {}, Object.keys(KIND_FIELDS).map((k) => h("option", { value: k }, k)));
  const name = h("input", { type: "text", required: true });
  const intake = h("select", {}, h("option", { value: "inbox" }, t("intakeInbox")), h("option", { value: "auto" }, t("intakeAuto")));
  const extra = h("div", { class: "row wrap" });
  const inputs = new Map();
  const draw = () => {
    inputs.clear();
    const spec = KIND_FIELDS[kind.value];
    extra.replaceChildren(
      ...spec.config.map((k) => { const el = h("input", { type: k === "port" ? "number" : "text" }); inputs.set(`config.${k}`, el); return field(k, el, { name: `config.${k}` }); }),
      ...spec.secrets.map((k) => { const el = h("input", { type: "password", autocomplete: "off" }); inputs.set(`secrets.${k}`, el); return field(k, el, { name: `secrets.${k}` }); }),
    );
  };
  kind.onchange = draw;
  draw();
  const form = h(
    "form",
    {
      class: "card channel-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        const body = { kind: kind.value, name: name.value, intake: intake.value, config: {}, secrets: {} };
        for (const [key, el] of inputs) {
          if (!el.value) continue;
          const [group, k] = key.split(".");
          body[group][k] = k === "port" ? Number(el.value) : el.value;
        }
        try {
          await post("/api/v1/channels", body);
          render();
        } catch (err) {
          showErrors(form, err.problem);
        }
      },
    },
    h("h2", {}, t("newChannel")),
    h("div", { class: "row wrap" }, field(t("kinds"), kind, { name: "kind" }), field(t("name"), name, { name: "name" }), field(t("intake"), intake, { name: "intake" })),
    extra,
    h("p", { class: "form-error", role: "alert" }),
    h("button", { type: "submit", class: "primary" }, t("create")),
  );
  return form;
}

// ---- start ----------------------------------------------------------------------------------

render();
