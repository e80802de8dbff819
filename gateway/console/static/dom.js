// A tiny DOM builder: text is always set as text (never parsed as HTML).
export function h(tag, attrs = {}, ...children) {
  const ns = tag.startsWith("svg:") ? "http://www.w3.org/2000/svg" : null;
  const el = ns ? document.createElementNS(ns, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value" && !ns) el.value = v;
    else if (k === "checked" && !ns) el.checked = Boolean(v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function svg(tag, attrs = {}, ...children) {
  return h(`svg:${tag}`, attrs, ...children);
}

let uid = 0;
export function fieldId(prefix = "f") {
  uid += 1;
  return `${prefix}-${uid}`;
}

// A labelled control: <div class="field"><label for>…</label><input id>…<p class="error"></p></div>
export function field(label, control, { name } = {}) {
  const id = control.id || fieldId(name || "f");
  control.id = id;
  if (name) control.name = name;
  const err = h("p", { class: "error", id: `${id}-err`, role: "alert" });
  control.setAttribute("aria-describedby", err.id);
  return h("div", { class: "field", dataset: { field: name || "" } }, h("label", { for: id }, label), control, err);
}

// Show a problem's `errors` (field -> message) at the fields named like them (`custom.size`,
// `phones.0` -> `phones`); what has no field goes to the form's own message.
export function showErrors(form, problem) {
  form.querySelectorAll(".field").forEach((f) => f.classList.remove("invalid"));
  form.querySelectorAll(".field .error").forEach((e) => (e.textContent = ""));
  const general = form.querySelector(".form-error");
  if (general) general.textContent = "";
  const errors = (problem && problem.errors) || {};
  let shown = false;
  for (const [key, msg] of Object.entries(errors)) {
    const names = [key, key.split(".").slice(0, 2).join("."), key.split(".")[0]];
    const box = names.map((n) => form.querySelector(`.field[data-field="${CSS.escape(n)}"]`)).find(Boolean);
    if (box) {
      box.classList.add("invalid");
      box.querySelector(".error").textContent = msg;
      box.querySelector("input,select,textarea")?.setAttribute("aria-invalid", "true");
      shown = true;
    }
  }
  if (general && (!shown || !Object.keys(errors).length)) {
    general.textContent = (problem && (problem.detail || problem.title)) || "";
  }
}
