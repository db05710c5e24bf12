// crossbar's admin page: polls this listener's JSON, draws the pools, TLS, revocation and the
// CA's queue, and sends an operator's actions with the admin token. No dependencies.
"use strict";

const TOKEN_KEY = "crossbar-admin-token";
const STATE_EVERY_MS = 2000;
const CA_EVERY_MS = 5000;
const HISTORY = 150; // samples per sparkline: five minutes at one every two seconds

const history = new Map(); // member key -> [requests/s]
let last = null; // the previous state, for rates
let caData = { requests: [], signed: [], revoked: [] };

const $ = (id) => document.getElementById(id);
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function badge(kind, text) { return el("span", { class: `badge ${kind}` }, text); }

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.abs(Math.round(seconds));
  const text = s < 90 ? `${s} s` : s < 5400 ? `${Math.round(s / 60)} min` : s < 172800 ? `${Math.round(s / 3600)} h` : `${Math.round(s / 86400)} days`;
  return seconds < 0 ? `in ${text}` : `${text} ago`;
}

function when(unix) { return new Date(unix * 1000).toLocaleString(); }

function say(text, kind = "ok") {
  const box = $("message");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { box.hidden = true; }, 8000);
}

async function act(path) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Authorization": `Bearer ${token()}`, "Content-Type": "application/json" },
    body: "{}",
  });
  const text = await response.text();
  if (response.status === 401) signOut();
  if (!response.ok) throw new Error(`${response.status}: ${text.trim()}`);
  return text;
}

function sparkline(values) {
  const width = 120, height = 24;
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (HISTORY - 1) : 0;
  const offset = width - step * (values.length - 1);
  const points = values.map((v, i) => `${(offset + i * step).toFixed(1)},${(height - 1 - (v / max) * (height - 2)).toFixed(1)}`).join(" ");
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `requests per second, last minutes, peak ${max.toFixed(1)}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points);
  svg.append(line);
  return svg;
}

function memberState(m, now) {
  if (m.drained) return badge("off", "drained");
  if (!m.healthy) return [badge("bad", "ejected"), m.last_down ? el("span", { class: "muted" }, ` ${m.last_down.why}, ${ago(now - m.last_down.at)}`) : null];
  if (m.standby) return badge("warn", "standby");
  return badge("ok", "healthy");
}

function drawPools(state, seconds) {
  const box = $("pools");
  box.replaceChildren();
  for (const pool of state.pools) {
    const shed = Object.entries(pool.shed).filter(([, n]) => n > 0).map(([k, n]) => `${k.replace("_", " ")} ${n}`);
    const head = el("div", { class: "pool-head" },
      el("strong", {}, pool.name),
      el("span", { class: "muted" }, `balance ${pool.balance}`),
      el("span", {}, `queue ${pool.queued} / ${pool.queue_max}`),
      el("span", {}, `p50 ≤ ${fmtSeconds(pool.p50_s)} · p99 ≤ ${fmtSeconds(pool.p99_s)}`),
      shed.length ? badge("warn", `shed: ${shed.join(", ")}`) : el("span", { class: "muted" }, "nothing shed"));
    const rows = pool.members.map((m) => {
      const key = `${pool.name}/${m.index}`;
      const before = last && last.pools.find((p) => p.name === pool.name)?.members[m.index];
      const rate = before && seconds > 0 ? Math.max(0, (m.requests - before.requests) / seconds) : 0;
      const series = history.get(key) || [];
      if (before && seconds > 0) series.push(rate);
      while (series.length > HISTORY) series.shift();
      history.set(key, series);
      const max = m.max_in_flight;
      const meter = el("span", { class: `meter${max && m.in_flight >= max ? " full" : ""}` },
        el("span", { style: null }));
      meter.firstChild.style.width = `${max ? Math.min(100, (100 * m.in_flight) / max) : Math.min(100, m.in_flight * 10)}%`;
      const action = m.drained ? "enable" : "drain";
      const button = el("button", {
        class: m.drained ? "" : "secondary", type: "button", "data-action": action, "data-pool": pool.name, "data-member": m.index,
        disabled: !token(), title: token() ? null : "sign in with an admin token to act",
        onclick: async () => {
          try { await act(`/pools/${encodeURIComponent(pool.name)}/members/${m.index}/${action}`); say(`${action === "drain" ? "Drained" : "Enabled"} ${m.url}`); refresh(); }
          catch (e) { say(`${action} ${m.url}: ${e.message}`, "bad"); }
        },
      }, action === "drain" ? "Drain" : "Enable");
      return el("tr", { id: `member-${pool.name}-${m.index}`, "data-state": m.drained ? "drained" : m.healthy ? "healthy" : "ejected" },
        el("td", { class: "mono" }, m.url),
        el("td", {}, memberState(m, state.now)),
        el("td", {}, meter, `${m.in_flight}${max ? ` / ${max}` : ""}`),
        el("td", { class: "num" }, rate.toFixed(1)),
        el("td", {}, sparkline(series)),
        el("td", { class: "num" }, m.latency_ms === null ? "–" : `${m.latency_ms} ms`),
        el("td", { class: "num" }, m.answers_5xx),
        el("td", { class: "num" }, m.failures),
        el("td", { class: "num", title: m.last_down ? `last: ${m.last_down.why}` : null }, m.ejections),
        el("td", {}, button));
    });
    const table = el("table", {},
      el("thead", {}, el("tr", {}, ["member", "state", "in flight", "req/s", "last minutes", "latency", "5xx", "failures", "ejections", ""].map((h, i) => el("th", { class: i >= 3 && i !== 4 && i < 9 ? "num" : null }, h)))),
      el("tbody", {}, rows));
    box.append(el("div", { class: "pool" }, head, el("div", { class: "scroll" }, table)));
  }
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "–";
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s} s`;
}

function facts(id, pairs) {
  $(id).replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

function drawTls(state, seconds) {
  const tls = state.tls;
  const rate = last && seconds > 0 ? (tls.handshakes - last.tls.handshakes) / seconds : 0;
  const failedNow = last ? Object.entries(tls.failures).reduce((n, [k, v]) => n + v - (last.tls.failures[k] || 0), 0) : 0;
  facts("tls", [
    ["handshakes", `${rate.toFixed(1)}/s (${tls.handshakes} in all)`],
    ["failing now", failedNow > 0 ? badge("warn", `${(failedNow / Math.max(seconds, 1)).toFixed(1)}/s`) : badge("ok", "none")],
    ["connections open", tls.open],
    ["of them parked (idle)", tls.parked],
    ["closed on revocation", tls.closed_revoked],
    ["LB certificate expires", tls.cert_not_after ? `${when(tls.cert_not_after)} (${ago(state.now - tls.cert_not_after)})` : "–"],
  ]);
  facts("tls-failures", Object.entries(tls.failures).map(([k, v]) => [k.replace(/_/g, " "), v > 0 ? badge("warn", String(v)) : "0"]));
}

function drawCrl(state) {
  const crl = state.crl;
  const current = crl.current;
  const pull = crl.last_pull;
  const pullState = !pull ? "–" : pull.outcome.startsWith("failed") ? badge("bad", pull.outcome) : badge("ok", pull.outcome);
  const next = current && current.next_update;
  const nextState = !current ? badge("bad", "no CRL loaded") : next && next < state.now ? badge("bad", `expired ${ago(state.now - next)}`) : badge("ok", next ? `next update ${ago(state.now - next)}` : "no next update");
  facts("crl", [
    ["CRL number", current ? `#${current.number}` : "–"],
    ["state", nextState],
    ["issued", current ? `${ago(state.now - current.this_update)} (${when(current.this_update)})` : "–"],
    ["revoked certificates", current ? current.revoked : "–"],
    ["source", crl.source],
    ["last pull", pull ? [pullState, ` ${ago(state.now - pull.at)}`] : "–"],
    ["pulls / failures", `${crl.pulls} / ${crl.pull_failures}`],
  ]);
}

function crlRow(name, crl, now, problems) {
  const current = crl && crl.current;
  const next = current && current.next_update;
  const stateBadge = !current ? badge("bad", "no CRL") : next && next < now ? badge("bad", "expired") : problems && problems.length ? badge("warn", problems.join("; ")) : badge("ok", "current");
  const pull = crl && crl.last_pull;
  return el("tr", { "data-lb": name },
    el("td", { class: "mono" }, name),
    el("td", {}, current ? `#${current.number} (${current.revoked} revoked)` : "–"),
    el("td", {}, current ? ago(now - current.this_update) : "–"),
    el("td", {}, stateBadge),
    el("td", {}, pull ? `${pull.outcome}, ${ago(now - pull.at)}` : "–"));
}

function drawPeers(state) {
  const peers = state.peers || [];
  $("crl-peers-box").hidden = peers.length === 0;
  const rows = [crlRow(`${state.listen} (this LB)`, state.crl, state.now, state.problems)];
  for (const p of peers) {
    rows.push(p.reachable ? crlRow(p.peer, p.crl, p.now, p.problems)
      : el("tr", { "data-lb": p.peer }, el("td", { class: "mono" }, p.peer), el("td", { colspan: 3 }, badge("bad", "unreachable")), el("td", { class: "muted" }, p.error)));
  }
  $("crl-peers").tBodies[0].replaceChildren(...rows);
}

function drawActions(state) {
  const rows = state.actions.map((a) => el("tr", {},
    el("td", {}, when(a.at)), el("td", {}, a.operator), el("td", {}, a.action), el("td", { class: "mono" }, a.target),
    el("td", {}, a.outcome === "done" ? badge("ok", "done") : badge("bad", a.outcome))));
  $("actions").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "none since this LB started"))]));
}

async function refresh() {
  let state;
  try {
    const response = await fetch("/api/state", { cache: "no-store" });
    state = await response.json();
  } catch (e) {
    $("overall").className = "badge bad";
    $("overall").textContent = "admin listener unreachable";
    return;
  }
  const seconds = last ? state.now - last.now || STATE_EVERY_MS / 1000 : 0;
  $("where").textContent = `${state.listen} · v${state.version}`;
  const overall = $("overall");
  if (state.problems.length) { overall.className = "badge bad"; overall.textContent = `problem: ${state.problems.join("; ")}`; }
  else { overall.className = "badge ok"; overall.textContent = "serving"; }
  $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  drawPools(state, seconds);
  drawTls(state, seconds);
  drawCrl(state);
  drawPeers(state);
  drawActions(state);
  last = state;
}

async function refreshCa() {
  if (!token()) return;
  try {
    const get = async (list) => {
      const response = await fetch(`/api/ca/${list}`, { headers: { "Authorization": `Bearer ${token()}` }, cache: "no-store" });
      if (response.status === 401) { signOut(); throw new Error("the token was refused"); }
      if (!response.ok) throw new Error(`${list}: ${response.status} ${(await response.text()).trim()}`);
      return response.json();
    };
    const [requests, signed, revoked] = await Promise.all([get("requests"), get("signed"), get("revoked")]);
    caData = { requests, signed, revoked };
    drawCa();
    const trail = await fetch("/api/ca/audit", { headers: { "Authorization": `Bearer ${token()}` }, cache: "no-store" });
    drawCaAudit(trail.ok ? await trail.json() : null, trail.ok ? "" : (await trail.text()).trim());
  } catch (e) {
    say(`CA: ${e.message}`, "bad");
  }
}

function caButton(label, kind, action, name) {
  return el("button", {
    class: kind, type: "button", "data-action": action, "data-certname": name,
    onclick: async () => {
      if (action !== "sign" && !confirm(`${label} ${name}?`)) return;
      try { await act(`/api/ca/${action}/${encodeURIComponent(name)}`); say(`${label}: ${name}`); refreshCa(); refresh(); }
      catch (e) { say(`${label} ${name}: ${e.message}`, "bad"); }
    },
  }, label);
}

function expiry(cert) {
  return cert.not_after ? Date.parse(cert.not_after.replace("UTC", "Z")) / 1000 : null;
}

function drawCa() {
  $("pending-count").textContent = `(${caData.requests.length})`;
  const pending = caData.requests.map((r) => el("tr", { "data-certname": r.name },
    el("td", { class: "mono" }, r.name),
    el("td", { class: "mono" }, r.fingerprint),
    el("td", { class: "mono" }, (r.subject_alt_names || r.dns_alt_names || []).join(", ") || "–"),
    el("td", { class: "mono" }, Object.entries(r.authorization_extensions || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "–"),
    el("td", {}, caButton("Sign", "", "sign", r.name), " ", caButton("Reject", "danger", "reject", r.name))));
  $("pending").tBodies[0].replaceChildren(...(pending.length ? pending : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no pending requests"))]));
  drawCerts();
}

function drawCerts() {
  const now = Date.now() / 1000;
  const needle = $("search").value.trim().toLowerCase();
  const days = Number($("expiring").value) || 0;
  const within = (d) => caData.signed.filter((c) => { const e = expiry(c); return e !== null && e - now < d * 86400; }).length;
  $("expiry-summary").textContent = `expiring: ${within(30)} in 30 days, ${within(60)} in 60, ${within(90)} in 90`;
  const all = caData.signed.concat(caData.revoked);
  const shown = all.filter((c) => (!needle || c.name.includes(needle)) && (!days || (c.state === "signed" && expiry(c) - now < days * 86400)));
  shown.sort((a, b) => a.name.localeCompare(b.name));
  const limit = 200;
  const rows = shown.slice(0, limit).map((c) => {
    const e = expiry(c);
    return el("tr", { "data-certname": c.name },
      el("td", { class: "mono" }, c.name),
      el("td", {}, c.state === "revoked" ? badge("bad", "revoked") : badge("ok", "signed")),
      el("td", { class: "mono" }, c.serial_number ?? "–"),
      el("td", {}, e ? `${new Date(e * 1000).toLocaleDateString()} (${ago(now - e)})` : "–"),
      el("td", {}, c.state === "signed" ? caButton("Revoke", "danger", "revoke", c.name) : ""));
  });
  if (shown.length > limit) rows.push(el("tr", {}, el("td", { colspan: 5, class: "muted" }, `${shown.length - limit} more: narrow the search`)));
  $("certs").tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no certificate matches"))]));
}

function drawCaAudit(events, why) {
  $("ca-audit-box").hidden = false;
  $("ca-audit-none").hidden = events !== null;
  $("ca-audit-none").textContent = why;
  $("ca-audit").hidden = events === null;
  const rows = (events || []).map((e) => el("tr", {},
    el("td", {}, when(Math.round(e.at))), el("td", {}, e.node), el("td", {}, e.actor), el("td", {}, e.action),
    el("td", { class: "mono" }, e.certname ?? "–"), el("td", { class: "mono" }, e.serial ?? "–"), el("td", {}, e.detail ?? "")));
  $("ca-audit").tBodies[0].replaceChildren(...rows);
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignedIn();
}

function showSignedIn() {
  const on = !!token();
  $("signin").hidden = on;
  $("signed-in").hidden = !on;
  $("ca").hidden = !on;
  $("ca-locked").hidden = on;
  if (!on) $("ca-audit-box").hidden = true;
  if (last) { drawPools(last, 0); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    showSignedIn();
    refreshCa();
  });
  $("sign-out").addEventListener("click", signOut);
  $("search").addEventListener("input", drawCerts);
  $("expiring").addEventListener("change", drawCerts);
  $("search-form").addEventListener("submit", (event) => event.preventDefault());
  showSignedIn();
  refresh();
  refreshCa();
  setInterval(refresh, STATE_EVERY_MS);
  setInterval(refreshCa, CA_EVERY_MS);
});
