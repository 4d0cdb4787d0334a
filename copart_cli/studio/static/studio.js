// copart studio: the page. Plain JavaScript, no build step; every request goes to the studio itself.
"use strict";

const S = {
  target: "", source: "", model: "", parts: new Set(), hard: false, source_mask: false, face: "largest",
  frame: 0, info: null, legend: [], faces: [], seg: {}, previewSeq: 0, runTimer: null, events: null,
};
const $ = (id) => document.getElementById(id);

function say(text) { $("message").textContent = text || ""; }

async function api(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-Copart-Studio": "1"},
  };
  const response = await fetch(path, options);
  let data;
  try { data = await response.json(); } catch (e) { data = {error: response.statusText}; }
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function fileUrl(ref, download) {
  return "/files/" + ref.split("/").map(encodeURIComponent).join("/") + (download ? "?download=1" : "");
}

function settings() {
  return {target: S.target, source: S.source, model: S.model, parts: [...S.parts].sort((a, b) => a - b),
          hard: S.hard, source_mask: S.source_mask, face: S.face, frame: S.frame};
}

function option(select, value, label) {
  const o = document.createElement("option");
  o.value = value; o.textContent = label;
  select.appendChild(o);
  return o;
}

async function loadState(keep) {
  const st = await api("/api/state");
  $("version").textContent = "copart " + st.version + " · workspace " + st.workspace;
  $("preview-count").textContent = st.preview_frames;
  for (const id of ["target", "source"]) {
    const select = $(id), was = keep ? select.value : "";
    select.textContent = "";
    option(select, "", "choose…");
    for (const ref of st.media) option(select, ref, ref);
    if (was) select.value = was;
  }
  const models = $("model"), was = models.value;
  models.textContent = "";
  S.models = {};
  for (const m of st.models) { option(models, m.id, m.label); S.models[m.id] = m; }
  if (was && S.models[was]) models.value = was;
  S.model = models.value;
  $("model-note").textContent = S.models[S.model] ? S.models[S.model].note : "";
  const runs = $("run"), run = runs.value;
  runs.textContent = "";
  option(runs, "", "choose a run folder…");
  for (const ref of st.runs) option(runs, ref, ref.replace(/\/log\.jsonl$/, ""));
  if (run) runs.value = run;
  return st;
}

// ---------------------------------------------------------------- uploads

async function upload(input, kind) {
  const file = input.files[0];
  if (!file) return null;
  const name = file.name.replace(/[^A-Za-z0-9 ._-]/g, "_").replace(/^[._ ]+/, "").slice(0, 120) || "upload";
  say("Uploading " + name + "…");
  const response = await fetch("/api/upload?kind=" + kind + "&name=" + encodeURIComponent(name), {
    method: "POST", body: file, headers: {"X-Copart-Studio": "1", "Content-Type": "application/octet-stream"},
  });
  const data = await response.json().catch(() => ({error: response.statusText}));
  input.value = "";
  if (!response.ok) { say(data.error); return null; }
  say("");
  await loadState(true);
  return data;
}

// ---------------------------------------------------------------- segmentation and the legend

async function segment(which) {
  const ref = which === "target" ? S.target : S.source;
  const img = $(which + "-img");
  if (!ref || !S.model) { img.removeAttribute("src"); return; }
  const frame = which === "target" ? S.frame : 0;
  try {
    const seg = await api("/api/segment", {file: ref, model: S.model, frame: frame, hard: S.hard});
    if ((which === "target" ? S.target : S.source) !== ref) return;  // changed meanwhile
    S.seg[which] = seg;
    img.src = fileUrl(seg.image);
    img.dataset.frame = String(seg.frame);
    if (which === "target") { S.faces = seg.faces; drawFaces(); }
    $("notes").textContent = seg.notices.length ? "Note: " + seg.notices.join("; ") + "." : "";
    if (S.legend.length !== seg.legend.length) buildLegend(seg.legend);  // a model change empties S.legend
  } catch (e) { say(e.message); }
}

function buildLegend(rows) {
  const names = {};
  for (const input of document.querySelectorAll("#legend input[type=text]")) names[input.dataset.channel] = input.value;
  S.legend = rows;
  const body = document.querySelector("#legend tbody");
  body.textContent = "";
  for (const row of rows) {
    const tr = document.createElement("tr");
    tr.dataset.channel = row.channel;
    const box = document.createElement("input");
    box.type = "checkbox"; box.checked = S.parts.has(row.channel); box.dataset.channel = row.channel;
    const swatch = document.createElement("span");
    swatch.className = "swatch"; swatch.style.background = row.colour;
    const name = document.createElement("input");
    name.type = "text"; name.dataset.channel = row.channel; name.placeholder = row.kind;
    name.value = names[row.channel] !== undefined ? names[row.channel] : row.names.join(",");
    name.addEventListener("click", (e) => e.stopPropagation());
    box.addEventListener("click", (e) => e.stopPropagation());
    box.addEventListener("change", () => toggle(row.channel, box.checked));
    tr.addEventListener("click", () => toggle(row.channel));
    for (const content of [box, swatch, String(row.channel), name]) {
      const td = document.createElement("td");
      if (typeof content === "string") td.textContent = content; else td.appendChild(content);
      tr.appendChild(td);
    }
    if (S.parts.has(row.channel)) tr.classList.add("on");
    body.appendChild(tr);
  }
}

function toggle(channel, on) {
  const wanted = on === undefined ? !S.parts.has(channel) : on;
  if (wanted) S.parts.add(channel); else S.parts.delete(channel);
  for (const tr of document.querySelectorAll("#legend tbody tr")) {
    const c = Number(tr.dataset.channel);
    tr.classList.toggle("on", S.parts.has(c));
    tr.querySelector("input[type=checkbox]").checked = S.parts.has(c);
  }
  changed();
}

function drawFaces() {
  const pic = $("target-pic"), img = $("target-img");
  for (const old of pic.querySelectorAll(".face-box")) old.remove();
  const face = $("face"), was = S.face;
  face.textContent = "";
  option(face, "largest", "the largest");
  option(face, "all", "all of them");
  for (const f of S.faces) option(face, String(f.number), "face " + f.number + " from the left");
  face.value = [...face.options].some((o) => o.value === was) ? was : "largest";
  S.face = face.value;
  $("faces-hint").textContent = S.faces.length > 1 ? " (" + S.faces.length + " faces: click one to swap it)" : "";
  if (S.faces.length < 2 || !img.naturalWidth) return;
  const scale = img.clientWidth / img.naturalWidth;
  for (const f of S.faces) {
    const div = document.createElement("div");
    div.className = "face-box" + (S.face === String(f.number) || S.face === "all" ? " chosen" : "");
    div.textContent = f.number;
    div.style.left = f.box[0] * scale + "px"; div.style.top = f.box[1] * scale + "px";
    div.style.width = (f.box[2] - f.box[0]) * scale + "px"; div.style.height = (f.box[3] - f.box[1]) * scale + "px";
    pic.appendChild(div);
  }
}

async function clickPicture(which, event) {
  const img = event.target, seg = S.seg[which];
  if (!seg || !img.naturalWidth) return;
  const x = event.offsetX * img.naturalWidth / img.clientWidth, y = event.offsetY * img.naturalHeight / img.clientHeight;
  try {
    const hit = await api("/api/part", {file: seg.file, model: S.model, frame: seg.frame, hard: S.hard, x: x, y: y});
    if (which === "target" && hit.face && S.faces.length > 1 && S.face !== "all") {
      S.face = String(hit.face);
      $("face").value = S.face;
      drawFaces();
    }
    toggle(hit.channel);
  } catch (e) { say(e.message); }
}

// ---------------------------------------------------------------- preview, command line, render

let previewTimer = null;
function changed() {
  clearTimeout(previewTimer);
  previewTimer = setTimeout(preview, 250);
}

async function preview() {
  const status = $("preview-status");
  if (!S.target || !S.source || !S.model || !S.parts.size) {
    status.dataset.state = "idle";
    status.textContent = "Choose a target, a source and at least one part.";
    return;
  }
  const seq = ++S.previewSeq, started = performance.now();
  status.dataset.state = "working";
  status.textContent = "Making the preview…";
  try {
    const cmd = await api("/api/command", settings());
    $("command").textContent = cmd.command;
    const p = await api("/api/preview", settings());
    if (seq !== S.previewSeq) return;  // a newer change is on its way
    const video = $("preview-video"), img = $("preview-img");
    if (p.still) { video.hidden = true; img.hidden = false; img.src = fileUrl(p.result); } else {
      img.hidden = true; video.hidden = false; video.src = fileUrl(p.result); video.play().catch(() => {});
    }
    status.dataset.state = "ready";
    status.dataset.result = p.result;
    status.textContent = "Preview ready" + (p.cached ? " (from the cache)" : "") + " in " +
      ((performance.now() - started) / 1000).toFixed(1) + " s.";
  } catch (e) {
    if (seq !== S.previewSeq) return;
    status.dataset.state = "error";
    status.textContent = e.message;
  }
}

function showRender(st) {
  const status = $("render-status"), bar = $("progress");
  status.dataset.state = st.state;
  $("cancel").disabled = st.state !== "running";
  $("render").disabled = st.state === "running";
  if (st.total) { bar.max = st.total; bar.value = st.done || 0; }
  if (st.state === "running") {
    status.textContent = "Rendering: " + (st.done || 0) + (st.total ? " of " + st.total : "") + " frames" +
      (st.fps ? ", " + st.fps.toFixed(1) + " frames/s" : "") +
      (st.left !== null && st.left !== undefined ? ", " + Math.ceil(st.left) + " s left" : "");
  } else if (st.state === "done") {
    bar.max = 1; bar.value = 1;
    status.textContent = "Done" + (st.cached ? " (rendered before with the same settings)" : ": " + st.done +
      " frames, " + (st.fps || 0).toFixed(1) + " frames/s") + ".";
    status.dataset.result = st.result;
    const video = $("result-video");
    video.src = fileUrl(st.result);
    video.hidden = false;
    const link = $("download");
    link.href = fileUrl(st.result, true);
    link.hidden = false;
  } else if (st.state === "cancelled" || st.state === "failed") {
    bar.value = 0;
    status.textContent = st.message || st.state;
  }
}

function follow() {
  if (S.events) S.events.close();
  const events = new EventSource("/api/render/events");
  S.events = events;
  events.onmessage = (e) => {
    const st = JSON.parse(e.data);
    showRender(st);
    if (st.state !== "running") { events.close(); S.events = null; }
  };
  events.onerror = () => { events.close(); S.events = null; api("/api/render").then(showRender).catch(() => {}); };
}

async function render() {
  try {
    $("download").hidden = true;
    const st = await api("/api/render/start", settings());
    showRender(st);
    if (st.state === "running") follow();
  } catch (e) { $("render-status").dataset.state = "failed"; $("render-status").textContent = e.message; }
}

async function cancel() {
  try { showRender(await api("/api/render/cancel", {})); } catch (e) { say(e.message); }
}

// ---------------------------------------------------------------- names

async function saveNames() {
  const names = {};
  for (const input of document.querySelectorAll("#legend input[type=text]")) {
    for (const name of input.value.split(",").map((n) => n.trim()).filter(Boolean)) {
      (names[name] = names[name] || []).push(Number(input.dataset.channel));
    }
  }
  const status = $("names-status");
  try {
    const saved = await api("/api/names", {model: S.model, names: names, filename: $("names-file").value});
    await loadState(true);
    $("model").value = saved.model;
    S.model = saved.model;
    status.textContent = "Saved " + saved.file + ".";
    status.dataset.file = saved.file;
  } catch (e) { status.textContent = e.message; }
}

// ---------------------------------------------------------------- training runs

function curves(series) {
  const names = Object.keys(series);
  const W = 560, H = 260, pad = 40, ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.id = "curve-svg";
  let steps = [], values = [];
  for (const n of names) for (const [s, v] of series[n]) { steps.push(s); values.push(v); }
  if (!steps.length) return svg;
  const x0 = Math.min(...steps), x1 = Math.max(...steps, x0 + 1);
  const y0 = Math.min(...values, 0), y1 = Math.max(...values, y0 + 1e-9);
  const X = (s) => pad + (s - x0) / (x1 - x0) * (W - 2 * pad), Y = (v) => H - pad - (v - y0) / (y1 - y0) * (H - 2 * pad);
  const colours = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];
  const text = (x, y, t, c) => {
    const e = document.createElementNS(ns, "text");
    e.setAttribute("x", x); e.setAttribute("y", y); e.setAttribute("font-size", "11");
    if (c) e.setAttribute("fill", c);
    e.textContent = t; svg.appendChild(e);
  };
  const axis = document.createElementNS(ns, "path");
  axis.setAttribute("d", `M${pad},${pad / 2}V${H - pad}H${W - pad / 2}`);
  axis.setAttribute("stroke", "#888"); axis.setAttribute("fill", "none"); svg.appendChild(axis);
  text(pad, H - pad + 14, String(x0)); text(W - pad - 20, H - pad + 14, String(x1)); text(W / 2 - 10, H - 8, "step");
  text(2, Y(y1) + 4, y1.toPrecision(3)); text(2, Y(y0), y0.toPrecision(3));
  names.forEach((n, i) => {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", series[n].map(([s, v]) => X(s).toFixed(1) + "," + Y(v).toFixed(1)).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", colours[i % colours.length]);
    line.setAttribute("stroke-width", "1.5"); line.classList.add("curve"); line.dataset.name = n;
    svg.appendChild(line);
    text(W - pad - 120, pad / 2 + 12 * (i + 1), n, colours[i % colours.length]);
  });
  return svg;
}

async function showRun() {
  clearInterval(S.runTimer);
  const ref = $("run").value;
  $("curves").textContent = ""; $("vis").textContent = "";
  if (!ref) return;
  const refresh = async () => {
    try {
      const run = await api("/api/run?log=" + encodeURIComponent(ref));
      if ($("run").value !== ref) return;
      $("curves").textContent = "";
      $("curves").appendChild(curves(run.series));
      $("run-status").textContent = run.records + " steps logged; refreshed " + new Date().toLocaleTimeString();
      const vis = $("vis");
      vis.textContent = "";
      for (const picture of run.pictures.slice(-1)) {
        const img = document.createElement("img");
        img.src = fileUrl(picture) + "?t=" + Date.now(); img.alt = picture; vis.appendChild(img);
      }
    } catch (e) { $("run-status").textContent = e.message; }
  };
  await refresh();
  S.runTimer = setInterval(refresh, 3000);
}

// ---------------------------------------------------------------- wiring

async function chooseMedia(which, ref) {
  S[which] = ref;
  if (which === "target") {
    S.frame = 0;
    $("frame").value = 0;
    $("frame-label").textContent = "0";
    S.info = ref ? await api("/api/info?file=" + encodeURIComponent(ref)).catch((e) => { say(e.message); return null; })
      : null;
    $("frame").max = S.info ? Math.max(0, S.info.frames - 1) : 0;
  }
  await segment(which);
  changed();
}

function wire() {
  $("target").addEventListener("change", (e) => chooseMedia("target", e.target.value));
  $("source").addEventListener("change", (e) => chooseMedia("source", e.target.value));
  $("model").addEventListener("change", async (e) => {
    S.model = e.target.value;
    $("model-note").textContent = S.models[S.model] ? S.models[S.model].note : "";
    S.legend = [];
    await Promise.all([segment("target"), segment("source")]);
    changed();
  });
  for (const [id, kind, which] of [["target-upload", "media", "target"], ["source-upload", "media", "source"],
                                   ["model-upload", "model", null]]) {
    $(id).addEventListener("change", async (e) => {
      const done = await upload(e.target, kind);
      if (!done) return;
      if (which) { $(which).value = done.file; await chooseMedia(which, done.file); } else {
        $("model").value = done.model; $("model").dispatchEvent(new Event("change"));
      }
    });
  }
  let slide = null;
  $("frame").addEventListener("input", (e) => {
    $("frame-label").textContent = e.target.value;
    clearTimeout(slide);
    slide = setTimeout(async () => { S.frame = Number(e.target.value); await segment("target"); changed(); }, 150);
  });
  $("target-img").addEventListener("click", (e) => clickPicture("target", e));
  $("source-img").addEventListener("click", (e) => clickPicture("source", e));
  $("target-img").addEventListener("load", drawFaces);
  for (const id of ["soft", "hard"]) $(id).addEventListener("change", async () => {
    S.hard = $("hard").checked;
    await Promise.all([segment("target"), segment("source")]);
    changed();
  });
  for (const id of ["mask-target", "mask-source"]) $(id).addEventListener("change", () => {
    S.source_mask = $("mask-source").checked; changed();
  });
  $("face").addEventListener("change", (e) => { S.face = e.target.value; drawFaces(); changed(); });
  $("copy").addEventListener("click", () => {
    const text = $("command").textContent;
    if (navigator.clipboard) navigator.clipboard.writeText(text).catch(() => {});
  });
  $("render").addEventListener("click", render);
  $("cancel").addEventListener("click", cancel);
  $("save-names").addEventListener("click", saveNames);
  $("run").addEventListener("change", showRun);
}

window.addEventListener("DOMContentLoaded", async () => {
  wire();
  $("preview-img").hidden = true;
  try {
    await loadState(false);
    const st = await api("/api/render");
    if (st.state === "running") follow();
    document.body.dataset.ready = "1";
  } catch (e) { say(e.message); }
});
