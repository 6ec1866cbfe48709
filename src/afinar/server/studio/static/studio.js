// afinar studio: small helpers shared by the pages (no library, no build step).
"use strict";
const studio = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  // The API with the session cookie; an error becomes an Error with the API's own message.
  async function api(path, opts = {}) {
    const headers = Object.assign({"X-CSRF-Token": csrf()}, opts.headers || {});
    let body = opts.body;
    if (body && !(body instanceof FormData) && typeof body !== "string") {
      body = JSON.stringify(body); headers["Content-Type"] = "application/json";
    }
    const r = await fetch(path, {method: opts.method || (body ? "POST" : "GET"), headers, body,
                                 credentials: "same-origin"});
    if (opts.raw) { if (!r.ok) throw await failure(r); return r; }
    if (!r.ok) throw await failure(r);
    return r.json();
  }
  async function failure(r) {
    let msg = `${r.status} ${r.statusText}`;
    try { const j = await r.json(); msg = (j.error && j.error.message) || j.detail || msg; } catch (e) {}
    const err = new Error(msg); err.status = r.status; return err;
  }
  // Upload with a progress bar (fetch has no upload progress: XMLHttpRequest does).
  function upload(path, form, onProgress) {
    return new Promise((resolve, reject) => {
      const x = new XMLHttpRequest();
      x.open("POST", path); x.setRequestHeader("X-CSRF-Token", csrf());
      x.upload.onprogress = e => e.lengthComputable && onProgress && onProgress(e.loaded / e.total);
      x.onload = () => {
        let j = null; try { j = JSON.parse(x.responseText); } catch (e) {}
        if (x.status < 300) resolve(j);
        else reject(new Error((j && j.error && j.error.message) || `${x.status} ${x.statusText}`));
      };
      x.onerror = () => reject(new Error("the upload failed (network error)"));
      x.send(form);
    });
  }
  // Server-sent events from a POST (chat streaming): calls onData with each parsed data line.
  async function stream(path, body, onData) {
    const r = await api(path, {body, raw: true});
    const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
    for (;;) {
      const {value, done} = await reader.read(); if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i); buf = buf.slice(i + 2);
        for (const line of block.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const d = line.slice(5).trim(); if (d === "[DONE]") return;
          let obj; try { obj = JSON.parse(d); } catch (e) { continue; }
          if (obj.error) throw new Error(obj.error.message || "stream error");
          onData(obj);
        }
      }
    }
  }
  function el(tag, attrs = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k);
    return e;
  }
  function showError(where, err) {
    let p = where.querySelector(":scope > .error.js");
    if (!p) { p = el("p", {class: "error js"}); where.append(p); }
    p.textContent = err ? (err.message || String(err)) : ""; p.hidden = !err;
  }
  const fmt = (v, d = 0) => v == null ? "–" : Number(v).toLocaleString("en", {maximumFractionDigits: d, minimumFractionDigits: d});
  // A line chart as inline SVG: series = [{name, color, points: [[x, y], ...], dots}],
  // marks = [{x, label}]. Axis: x = step, y = value.
  function chart(svg, series, opts = {}) {
    const W = 640, H = 240, L = 48, R = 12, T = 12, B = 28;
    const pts = series.flatMap(s => s.points);
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.innerHTML = "";
    const ns = "http://www.w3.org/2000/svg";
    const add = (tag, a, text) => { const e = document.createElementNS(ns, tag);
      for (const k in a) e.setAttribute(k, a[k]); if (text != null) e.textContent = text; svg.append(e); return e; };
    if (!pts.length) { add("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, opts.empty || "no points yet"); return; }
    const xs = pts.map(p => p[0]), ys = pts.map(p => p[1]);
    let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (x1 === x0) x1 = x0 + 1; if (y1 === y0) { y1 += 0.5; y0 -= 0.5; }
    const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R), sy = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
    for (let k = 0; k <= 4; k++) { const y = y0 + (y1 - y0) * k / 4;
      add("line", {x1: L, x2: W - R, y1: sy(y), y2: sy(y), stroke: "#e5e8ec"});
      add("text", {x: L - 6, y: sy(y) + 4, "text-anchor": "end"}, fmt(y, 3)); }
    add("text", {x: L, y: H - 8}, `${opts.xlabel || "step"} ${fmt(x0)}`);
    add("text", {x: W - R, y: H - 8, "text-anchor": "end"}, fmt(x1));
    for (const m of opts.marks || []) {
      add("line", {x1: sx(m.x), x2: sx(m.x), y1: T, y2: H - B, stroke: "#1f8a4c", "stroke-dasharray": "4 3", class: "mark"});
      add("text", {x: sx(m.x) + 4, y: T + 10, fill: "#1f8a4c"}, m.label);
    }
    series.forEach((s, i) => {
      if (!s.points.length) return;
      add("polyline", {points: s.points.map(p => `${sx(p[0])},${sy(p[1])}`).join(" "), fill: "none",
                       stroke: s.color, "stroke-width": 1.8, class: "series", "data-name": s.name});
      if (s.dots) for (const p of s.points) add("circle", {cx: sx(p[0]), cy: sy(p[1]), r: 3, fill: s.color});
      add("text", {x: L + 8 + i * 150, y: T + 10, fill: s.color}, s.name);
    });
  }
  return {api, upload, stream, el, showError, fmt, chart, csrf};
})();
