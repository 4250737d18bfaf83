// THAU's web page: chat over /ws/chat, the memory inspector over /memory/{store}/items,
// the learning dashboard over /train/stats and the /events stream. Plain JS, no build.
"use strict";

const $ = (id) => document.getElementById(id);
const keyInput = $("api-key");
keyInput.value = localStorage.getItem("thau.key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("thau.key", keyInput.value);
  connectChat();
  connectEvents();
});
const key = () => keyInput.value.trim();
/** `path` with `?api_key=` added when a key is set (for GETs, WebSocket, EventSource). */
function withKey(path) {
  if (!key()) return path;
  return path + (path.includes("?") ? "&" : "?") + "api_key=" + encodeURIComponent(key());
}
async function api(method, path) {
  const headers = key() ? { Authorization: "Bearer " + key() } : {};
  // This page's conversation is readable with its resume token.
  if (token) headers["X-Conversation-Token"] = token;
  const r = await fetch(method === "GET" ? withKey(path) : path, { method, headers });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || r.status + " " + r.statusText);
  return body;
}

// ---- Tabs (arrow keys move between them, as the ARIA tabs pattern says) ----
const tabs = [...document.querySelectorAll('[role="tab"]')];
function select(tab) {
  for (const t of tabs) {
    const on = t === tab;
    t.setAttribute("aria-selected", on);
    t.tabIndex = on ? 0 : -1;
    $(t.getAttribute("aria-controls")).hidden = !on;
  }
  tab.focus();
  if (tab.id === "tab-learning") loadStats();
}
tabs.forEach((t, i) => {
  t.addEventListener("click", () => select(t));
  t.addEventListener("keydown", (e) => {
    const d = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
    if (d) select(tabs[(i + d + tabs.length) % tabs.length]);
  });
});

// ---- Chat ----
let socket = null;
let session = sessionStorage.getItem("thau.session");
// The secret that resumes this page's conversation (the server gives it when it opens one).
let token = sessionStorage.getItem("thau.token");
let current = null; // the assistant message being streamed
let turns = 0;
const messages = $("messages");
const chatStatus = $("chat-status");

function addMessage(role, text) {
  const li = document.createElement("li");
  li.className = role;
  const who = document.createElement("span");
  who.className = "visually-hidden";
  who.textContent = role === "user" ? "You: " : "THAU: ";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  li.append(who, body);
  messages.append(li);
  li.scrollIntoView({ block: "nearest" });
  return li;
}
function note(li, cls, text) {
  const p = document.createElement("div");
  p.className = cls;
  p.textContent = text;
  li.append(p);
  return p;
}
function busy(on) {
  $("chat-send").disabled = on;
  $("chat-stop").disabled = !on;
}
function connectChat() {
  if (socket) socket.close();
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(withKey(proto + "//" + location.host + "/ws/chat"));
  chatStatus.textContent = "Connecting…";
  socket.onopen = () => {
    if (session && token) socket.send(JSON.stringify({ type: "session.update", session, token }));
  };
  socket.onclose = () => { chatStatus.textContent = "Disconnected (check the API key, then reload)."; busy(false); };
  socket.onmessage = (m) => onChatEvent(JSON.parse(m.data));
}
function onChatEvent(ev) {
  switch (ev.type) {
    case "session.created":
      session = ev.session;
      sessionStorage.setItem("thau.session", session);
      if (ev.token) { token = ev.token; sessionStorage.setItem("thau.token", token); }
      chatStatus.textContent = "Connected · conversation " + session;
      break;
    case "response.delta":
      if (!current) current = addMessage("assistant", "");
      current.querySelector(".text").textContent += ev.delta;
      break;
    case "tool.call":
      if (!current) current = addMessage("assistant", "");
      note(current, "tool", "Tool call: " + ev.name + " " + JSON.stringify(ev.arguments));
      break;
    case "tool.result":
      if (current) note(current, "tool", "Tool " + ev.name + (ev.ok ? " done" : " failed: " + JSON.stringify(ev.content)));
      break;
    case "response.done": {
      if (!current) current = addMessage("assistant", ev.text || "");
      for (const url of ev.images || []) {
        const img = document.createElement("img");
        img.src = withKey(url);
        img.alt = "Picture made for: " + (current.dataset.prompt || "this request");
        current.append(img);
      }
      if ((ev.memories || []).length) {
        // Sources: the memories the answer's prompt held, each shown in full on hover.
        const src = note(current, "sources", "Sources: ");
        ev.memories.forEach((m, i) => {
          const s = document.createElement("span");
          s.className = "source";
          s.textContent = (i ? ", " : "") + m.source + " (" + m.score.toFixed(2) + ")";
          s.title = m.text;
          src.append(s);
        });
      }
      if ((ev.taught || []).length) note(current, "sources", "Stored in long-term memory.");
      addFeedback(current, session + ":" + ++turns);
      if (ev.cancelled) note(current, "tool", "(stopped)");
      current = null;
      busy(false);
      break;
    }
    case "feedback.recorded":
      chatStatus.textContent = "Thanks: feedback recorded.";
      break;
    case "error":
      note(current || addMessage("assistant", ""), "tool", "Error: " + ev.message);
      current = null;
      busy(false);
      break;
  }
}
function addFeedback(li, turn) {
  const box = document.createElement("div");
  box.className = "feedback";
  for (const [rating, label] of [["up", "Good answer"], ["down", "Bad answer"]]) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = label;
    b.addEventListener("click", () => {
      socket.send(JSON.stringify({ type: "feedback", turn, rating }));
      box.querySelectorAll("button").forEach((x) => (x.disabled = true));
    });
    box.append(b);
  }
  li.append(box);
}
$("chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("chat-input").value.trim();
  if (!text || !socket || socket.readyState !== WebSocket.OPEN) return;
  addMessage("user", text);
  current = addMessage("assistant", "");
  current.dataset.prompt = text;
  socket.send(JSON.stringify({ type: "message.create", message: text, detect_tools: $("detect-tools").checked }));
  $("chat-input").value = "";
  busy(true);
});
$("chat-input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("chat-form").requestSubmit(); }
});
$("chat-stop").addEventListener("click", () => socket && socket.send(JSON.stringify({ type: "response.cancel" })));

// ---- Memory inspector ----
/** A uniform view of the items of any store: id, text, a short description. */
function itemView(store, x) {
  const p = x.point || x.episode || x;
  if (store === "short" && x.conversation) return { id: x.conversation, text: x.conversation, about: x.turns + " turns" };
  if (store === "short") return { id: x.id, text: x.text, about: x.source };
  return {
    id: p.id,
    text: p.text || p.content || "",
    about: [p.kind, p.source, x.score !== undefined ? "score " + x.score.toFixed(2) : ""].filter(Boolean).join(" · "),
  };
}
async function loadMemory() {
  const store = $("memory-store").value;
  const q = $("memory-query").value.trim();
  const list = $("memory-items");
  $("memory-status").textContent = "Loading…";
  try {
    const r = await api("GET", "/memory/" + store + "/items" + (q ? "?q=" + encodeURIComponent(q) : ""));
    const rows = r.hits || r.items || [];
    list.replaceChildren();
    for (const x of rows) {
      const v = itemView(store, x);
      const li = document.createElement("li");
      const text = document.createElement("span");
      text.className = "text";
      text.textContent = v.text;
      const about = document.createElement("small");
      about.textContent = v.about || "";
      const show = document.createElement("button");
      show.type = "button";
      show.textContent = "Show";
      show.setAttribute("aria-label", "Show " + v.text.slice(0, 40));
      show.addEventListener("click", async () => {
        try {
          const item = await api("GET", "/memory/" + store + "/items/" + encodeURIComponent(v.id));
          $("memory-detail").textContent = JSON.stringify(item, null, 2);
        } catch (e) { $("memory-detail").textContent = e.message; }
      });
      const forget = document.createElement("button");
      forget.type = "button";
      forget.textContent = "Forget";
      forget.setAttribute("aria-label", "Forget " + v.text.slice(0, 40));
      forget.addEventListener("click", async () => {
        if (!confirm("Forget this for good?")) return;
        try { await api("DELETE", "/memory/" + store + "/items/" + encodeURIComponent(v.id)); loadMemory(); }
        catch (e) { $("memory-status").textContent = e.message; }
      });
      li.append(text, about, show, forget);
      list.append(li);
    }
    $("memory-status").textContent = rows.length + (q ? " matches" : " items");
  } catch (e) {
    $("memory-status").textContent = e.message;
  }
}
$("memory-form").addEventListener("submit", (e) => { e.preventDefault(); loadMemory(); });

// ---- Teach: a text or a document into long-term memory, usable in the next answer ----
$("teach-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const file = $("teach-file").files[0];
  const text = $("teach-text").value.trim();
  if (!file && !text) { $("teach-status").textContent = "Write something, or choose a document."; return; }
  const headers = key() ? { Authorization: "Bearer " + key() } : {};
  let path = "/learn/documents", body;
  if (file) {
    path += "?name=" + encodeURIComponent(file.name);
    headers["Content-Type"] = "text/plain; charset=utf-8";
    body = file;
  } else {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify({ text, name: "page" });
  }
  $("teach-status").textContent = "Teaching…";
  try {
    const r = await fetch(path, { method: "POST", headers, body });
    const v = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error((v.error && v.error.message) || r.status + " " + r.statusText);
    $("teach-status").textContent = "Stored " + v.new + " new passage" + (v.new === 1 ? "" : "s") +
      " (" + v.known + " known) from " + v.source + ": THAU can use it in its next answer.";
    $("teach-text").value = "";
    $("teach-file").value = "";
  } catch (err) {
    $("teach-status").textContent = "Not stored: " + err.message;
  }
});

// ---- Learning dashboard ----
const points = []; // [step, loss]
const counts = { asked: 0, open: 0, closed: 0 };
function fmt(n) { return Number(n).toLocaleString("en"); }
function drawChart() {
  const c = $("loss-chart");
  const g = c.getContext("2d");
  const W = c.width, H = c.height, pad = 36;
  g.clearRect(0, 0, W, H);
  g.strokeStyle = "#d9d9de";
  g.strokeRect(pad, 8, W - pad - 8, H - pad - 8);
  if (points.length < 2) {
    g.fillStyle = "#5d5d66";
    g.fillText("No training rounds yet", pad + 8, H / 2);
    return;
  }
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const X = (x) => pad + ((x - x0) / Math.max(x1 - x0, 1e-9)) * (W - pad - 8);
  const Y = (y) => 8 + (1 - (y - y0) / Math.max(y1 - y0, 1e-9)) * (H - pad - 8);
  g.fillStyle = "#5d5d66";
  g.fillText(y1.toFixed(2), 2, 16);
  g.fillText(y0.toFixed(2), 2, H - pad);
  g.fillText("step " + x0, pad, H - 12);
  g.fillText("step " + x1, W - 70, H - 12);
  g.strokeStyle = "#1f5fa8";
  g.lineWidth = 2;
  g.beginPath();
  points.forEach(([x, y], i) => (i ? g.lineTo(X(x), Y(y)) : g.moveTo(X(x), Y(y))));
  g.stroke();
  const last = points[points.length - 1];
  $("loss-caption").textContent = `Training loss by step: ${points.length} rounds, last ${last[1].toFixed(3)} at step ${last[0]}.`;
}
function figures() {
  $("fig-asked").textContent = fmt(counts.asked);
  $("fig-open").textContent = fmt(Math.max(counts.open, 0));
  $("fig-closed").textContent = fmt(counts.closed);
}
async function loadStats() {
  try {
    const s = await api("GET", "/train/stats");
    if (s.model) {
      $("fig-age").textContent = s.model.age;
      $("fig-params").textContent = fmt(s.model.params);
    }
    points.length = 0;
    counts.asked = counts.open = counts.closed = 0;
    for (const r of s.sessions || []) {
      for (const p of r.curve || []) points.push([p.step, p.loss]);
      counts.asked += r.questions;
      counts.closed += r.gaps_closed;
      counts.open += r.gaps_opened - r.gaps_closed;
    }
    points.sort((a, b) => a[0] - b[0]);
    // The newest session's probe loss and answer accuracy, before → after.
    const last = (s.sessions || [])[(s.sessions || []).length - 1];
    if (last) {
      $("fig-probe").textContent = last.probe_loss_before.toFixed(3) + " → " + last.probe_loss_after.toFixed(3);
      const pct = (a) => a ? Math.round(100 * a.with_memory) + "%" : "?";
      if (last.accuracy_after) {
        $("fig-answers").textContent = pct(last.accuracy_before) + " → " + pct(last.accuracy_after) +
          " of " + last.accuracy_after.questions;
      }
    }
    if (points.length) {
      const last = points[points.length - 1];
      $("fig-step").textContent = fmt(last[0]);
      $("fig-loss").textContent = last[1].toFixed(3);
    }
    figures();
    drawChart();
  } catch (e) {
    $("loss-caption").textContent = "Could not load the learning figures: " + e.message;
  }
}
let events = null;
function connectEvents() {
  if (events) events.close();
  events = new EventSource(withKey("/events"));
  events.addEventListener("learning", (m) => {
    const ev = JSON.parse(m.data).event;
    let line = ev.what;
    switch (ev.what) {
      case "asked": counts.asked++; line = "Asked: " + ev.question; break;
      case "gap_opened": counts.open++; line = "Gap opened (" + ev.topic + ")"; break;
      case "gap_closed": counts.open--; counts.closed++; line = "Gap closed (" + ev.topic + ")"; break;
      case "round":
        points.push([ev.step, ev.loss]);
        $("fig-step").textContent = fmt(ev.step);
        $("fig-loss").textContent = ev.loss.toFixed(3);
        $("fig-age").textContent = ev.age;
        line = `Round ${ev.round}: step ${ev.step}, loss ${ev.loss.toFixed(3)}`;
        drawChart();
        break;
      case "grew": $("fig-age").textContent = ev.to_age; line = "Grew to age " + ev.to_age; break;
      default: return;
    }
    figures();
    const li = document.createElement("li");
    li.textContent = new Date().toLocaleTimeString() + " " + line;
    const list = $("events");
    list.prepend(li);
    while (list.children.length > 200) list.lastChild.remove();
  });
}

connectChat();
connectEvents();

// ---- A server that is still making its first model (thau serve --learn) ----
/** Shows how far the first model is, every few seconds, until chat can answer. */
async function watchPreparation() {
  let h = null;
  try { h = await (await fetch("/health")).json(); } catch (e) { /* retried below */ }
  const l = h && h.learning;
  if (!h || (l && !l.model_ready)) {
    const p = l && l.progress;
    $("chat-status").textContent = "THAU is preparing its first model" +
      (p ? ": " + Math.round(p.elapsed_s) + " s, " + p.asked + " questions asked, " + p.rounds + " training rounds" : "…");
    setTimeout(watchPreparation, 5000);
  } else if (l) {
    $("chat-status").textContent = "Connected · THAU is learning while it chats" + (session ? " · conversation " + session : "");
  }
}
watchPreparation();
drawChart();
