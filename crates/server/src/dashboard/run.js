// Polls the run's progress and detail while it runs; redraws the chart
// (in service against the floor; old / new / draining) and the steps.
// Drawn in this order: in service last, on top.
const SERIES = [["old", "#888", ""], ["new", "#2563eb", ""], ["draining", "#e08a00", ""], ["floor", "#d33", "6 4"], ["in_service", "#1f9d55", ""]];
function draw(p) {
  const svg = document.getElementById("chart");
  const samples = p.samples || [];
  const W = 900, H = 260, P = 30;
  if (!samples.length) {
    if (!p.live) document.getElementById("roll-status").textContent = "no roll samples recorded for this run";
    return;
  }
  const t0 = samples[0].at, t1 = Math.max(samples[samples.length - 1].at, t0 + 1);
  let ymax = 1;
  for (const s of samples) for (const [k] of SERIES) ymax = Math.max(ymax, s[k] || 0);
  const x = t => P + (t - t0) / (t1 - t0) * (W - 2 * P);
  const y = v => H - P - v / ymax * (H - 2 * P);
  let out = `<line x1="${P}" y1="${H - P}" x2="${W - P}" y2="${H - P}" stroke="#999"/><line x1="${P}" y1="${P}" x2="${P}" y2="${H - P}" stroke="#999"/>`;
  out += `<text x="4" y="${y(ymax) + 4}" font-size="11">${ymax}</text><text x="4" y="${H - P + 4}" font-size="11">0</text>`;
  out += `<text x="${W - P - 60}" y="${H - 8}" font-size="11">${((t1 - t0) / 1000).toFixed(1)}s</text>`;
  for (const [k, color, dash] of SERIES) {
    const pts = samples.map(s => `${x(s.at).toFixed(1)},${y(s[k] || 0).toFixed(1)}`).join(" ");
    out += `<polyline class="series-${k}" fill="none" stroke="${color}" stroke-width="${k === "in_service" ? 3 : 2}" stroke-dasharray="${dash}" points="${pts}"/>`;
  }
  svg.innerHTML = out;
  const last = samples[samples.length - 1];
  svg.setAttribute("data-samples", samples.length);
  for (const [k] of SERIES) svg.setAttribute("data-" + k.replace("_", "-"), last[k] || 0);
  // The counts come with the response (a finished roll's samples carry none).
  const replaced = p.total == null ? "" : `replaced ${p.replaced}/${p.total} · `;
  document.getElementById("roll-status").textContent =
    `${replaced}in service ${last.in_service} (floor ${last.floor}) · old ${last.old} · new ${last.new} · draining ${last.draining}`;
}
function steps(list) {
  // Same timeline as the server renders: a bar per step, placed by time.
  const now = Date.now();
  const start = Math.min(...list.map(s => s.started_at));
  const end = Math.max(start + 1, ...list.map(s => s.ended_at || now));
  const rows = list.map(s => {
    const to = s.ended_at || now;
    const left = (s.started_at - start) / (end - start) * 100;
    const width = Math.max(0.5, (to - s.started_at) / (end - start) * 100);
    return `<tr><td>${esc(s.name)}</td><td><span class="state ${esc(s.state)}">${esc(s.state)}</span></td><td>${((to - s.started_at) / 1000).toFixed(1)}s</td>` +
      `<td>${s.attempts}</td><td class="bar"><div class="span ${s.state}" style="margin-left:${left.toFixed(2)}%;width:${width.toFixed(2)}%"></div></td></tr>`;
  }).join("");
  document.getElementById("steps").innerHTML =
    `<table class="timeline"><tr><th>step</th><th>state</th><th>duration</th><th>attempts</th><th class="bar">timeline</th></tr>${rows}</table>`;
}
function esc(t) {
  return String(t ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function events(list) {
  const time = ms => new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  document.getElementById("events").innerHTML = list.map(e =>
    `<tr class="${esc(e.level)}"><td>${time(e.at)}</td><td>${esc(e.level)}</td><td>${esc(e.step)}</td><td>${esc(e.message)}</td></tr>`).join("");
}
async function poll() {
  try {
    const p = await (await fetch(`/api/runs/${RUN}/progress`)).json();
    draw(p);
    const state = document.getElementById("run-state");
    state.innerHTML = `<span class="state ${p.state}">${p.state}</span>`;
    if (p.live) {
      const d = await (await fetch(`/api/runs/${RUN}`)).json();
      steps(d.steps || []);
      events(d.events || []);
      setTimeout(poll, 500);
    }
  } catch (e) {
    setTimeout(poll, 2000);
  }
}
poll();
