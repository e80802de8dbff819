// Charts as inline SVG: horizontal (grouped) bars, each with its value written beside it.
import { h, svg } from "./dom.js";

export function bars({ label, series, rows, format = String }) {
  const rowH = 18 * Math.max(1, series.length) + 14;
  const labelW = 130;
  const width = 520;
  const barMax = width - labelW - 90;
  const max = Math.max(1, ...rows.flatMap((r) => r.values.map((v) => Number(v) || 0)));
  const height = Math.max(1, rows.length) * rowH + 24;
  const chart = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": label,
  });
  chart.append(svg("title", {}, label));
  if (!rows.length) {
    chart.append(svg("text", { x: 8, y: 20, class: "muted" }, "—"));
  }
  rows.forEach((row, i) => {
    const y0 = i * rowH + 6;
    chart.append(svg("text", { x: 0, y: y0 + rowH / 2, class: "chart-label" }, clip(row.label)));
    row.values.forEach((v, j) => {
      const w = Math.max(1, ((Number(v) || 0) / max) * barMax);
      const y = y0 + j * 18;
      const bar = svg("rect", { x: labelW, y, width: w, height: 14, rx: 2, class: `bar ${series[j].cls}` });
      bar.append(svg("title", {}, `${row.label} — ${series[j].name}: ${format(v)}`));
      chart.append(bar, svg("text", { x: labelW + w + 6, y: y + 11, class: "chart-value" }, format(v)));
    });
  });
  const legend = h(
    "ul",
    { class: "legend" },
    series.map((s) => h("li", {}, h("span", { class: `swatch ${s.cls}`, "aria-hidden": "true" }), s.name)),
  );
  return h("figure", { class: "chart-box" }, chart, series.length > 1 ? legend : null);
}

function clip(text) {
  const s = String(text ?? "—");
  return s.length > 22 ? `${s.slice(0, 21)}…` : s;
}
