// vireid search page: plain DOM code, no framework, no network access beyond this service.
// Every value from the service is put on the page as text (textContent), never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "vireid-api-key";
let selectedItem = null;

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return `${response.status}: ${body.detail}`;
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

function formatTime(iso) {
  if (!iso) return "—";
  return iso.replace("T", " ").replace(/(\.\d+)?(Z|\+00:00)$/, " UTC");
}

// Writes: send the key kept for this tab; on 401 ask for it and try once more.
async function write(url, options) {
  for (let attempt = 0; attempt < 2; attempt++) {
    const headers = new Headers(options.headers || {});
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) headers.set("X-API-Key", key);
    const response = await fetch(url, { ...options, headers });
    if (response.status !== 401 || attempt === 1) return response;
    const entered = await askKey();
    if (!entered) return response;
  }
  throw new Error("unreachable");
}

function askKey() {
  return new Promise((resolve) => {
    const dialog = $("key-dialog");
    $("key-input").value = "";
    dialog.addEventListener("close", () => {
      const value = $("key-input").value;
      if (dialog.returnValue === "ok" && value) {
        sessionStorage.setItem(KEY_STORAGE, value);
        resolve(true);
      } else {
        resolve(false);
      }
    }, { once: true });
    dialog.showModal();
  });
}

async function loadOverview() {
  const box = $("overview");
  try {
    const [ready, stats] = await Promise.all([fetch("/readyz"), fetch("/gallery/stats")]);
    const readyBody = await ready.json();
    if (!ready.ok) {
      box.textContent = `not ready: ${readyBody.detail || ready.status}`;
      return;
    }
    const body = await stats.json();
    box.replaceChildren();
    const model = readyBody.model || {};
    box.append(el("div", {}, `model ${model.method || "?"} ${(model.version || "").slice(0, 12)} · `
      + `${body.by_modality.visible} visible, ${body.by_modality.infrared} infrared crops`));
    const table = el("table", { id: "camera-table" });
    const names = $("camera-names");
    names.replaceChildren();
    for (const row of body.by_camera) {
      table.append(el("tr", {}, el("td", {}, row.camera), el("td", {}, row.modality), el("td", {}, String(row.count))));
      names.append(el("option", { value: row.camera }));
    }
    box.append(table);
  } catch (err) {
    box.textContent = `gallery unavailable: ${err}`;
  }
}

function showQueryPreview(files) {
  const url = URL.createObjectURL(files[0]);
  const preview = $("query-preview");
  preview.src = url;
  preview.hidden = false;
  $("drop-text").textContent = files.length > 1
    ? `${files[0].name} and ${files.length - 1} more (one tracklet)` : files[0].name;
}

function matchCard(match, rank) {
  const img = el("img", { src: `/gallery/${match.id}/image`, alt: `match ${rank}: gallery item ${match.id}`, loading: "lazy" });
  img.addEventListener("error", () => { img.alt = "crop not stored"; img.removeAttribute("src"); }, { once: true });
  const card = el("li", { class: "match", tabindex: "0", "data-id": String(match.id) },
    img,
    el("div", { class: "score" }, `#${rank} · ${match.score.toFixed(3)}`),
    el("div", { class: "meta" }, match.camera),
    el("div", { class: "meta" }, formatTime(match.captured_at)),
    el("div", { class: "meta" }, (match.track_id ? `track ${match.track_id}` : "no track")
      + (match.track_matches > 1 ? ` · ${match.track_matches} crops` : "")));
  const open = () => showDetail(match.id);
  card.addEventListener("click", open);
  card.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
  return card;
}

async function search(event) {
  event.preventDefault();
  const files = [...$("query-file").files];
  if (!files.length) { setStatus("pick a query crop first", true); return; }
  const file = files[0];
  const form = new FormData();
  for (const crop of files) form.append("image", crop);  // several: one person's tracklet
  form.append("modality", $("modality").value);
  form.append("k", $("k").value);
  if ($("group-by-track").checked) form.append("group_by", "track");
  for (const name of ["cameras", "since", "until"]) {
    const value = $(name).value.trim();
    if (value) form.append(name, value);
  }
  const button = $("search-button");
  button.disabled = true;
  setStatus("searching…");
  try {
    const response = await fetch("/search", { method: "POST", body: form });
    if (!response.ok) { setStatus(await errorText(response), true); return; }
    const body = await response.json();
    $("results-query").src = URL.createObjectURL(file);
    $("matches").replaceChildren(...body.matches.map((m, i) => matchCard(m, i + 1)));
    const query = body.query_images > 1 ? `tracklet of ${body.query_images} crops` : "query";
    const per = body.group_by === "track" ? " (one per track)" : "";
    $("results-summary").textContent = `${body.matches.length} ${body.target_modality} matches${per} for a `
      + `${body.query_modality} ${query} · model ${body.model.method} ${body.model.version.slice(0, 12)} · `
      + `${body.took_ms.toFixed(0)} ms`;
    $("results-panel").hidden = false;
    setStatus(body.matches.length ? "" : "no gallery item passes these filters");
  } catch (err) {
    setStatus(`search failed: ${err}`, true);
  } finally {
    button.disabled = false;
  }
}

async function showDetail(id) {
  const response = await fetch(`/gallery/${id}`);
  if (!response.ok) { setStatus(await errorText(response), true); return; }
  const item = await response.json();
  selectedItem = item.id;
  $("detail-image").src = `/gallery/${item.id}/image`;
  const fields = $("detail-fields");
  fields.replaceChildren();
  const rows = [["id", item.id], ["camera", item.camera], ["modality", item.modality],
    ["captured", formatTime(item.captured_at)], ["track", item.track_id || "—"],
    ["source", item.source || "—"], ["sha256", item.sha256], ["model", item.model_version],
    ["added", formatTime(item.created_at)]];
  for (const [name, value] of rows) fields.append(el("dt", {}, name), el("dd", {}, String(value)));
  $("detail-panel").hidden = false;
  $("detail-panel").scrollIntoView({ behavior: "smooth", block: "nearest" });
}

async function deleteSelected() {
  if (selectedItem === null || !confirm(`Delete gallery item ${selectedItem}?`)) return;
  const response = await write(`/gallery/${selectedItem}`, { method: "DELETE" });
  if (response.status !== 204) { setStatus(await errorText(response), true); return; }
  document.querySelector(`.match[data-id="${selectedItem}"]`)?.remove();
  $("detail-panel").hidden = true;
  setStatus(`deleted item ${selectedItem}`);
  selectedItem = null;
  loadOverview();
}

async function addCrops(event) {
  event.preventDefault();
  const form = new FormData();
  for (const file of $("add-files").files) form.append("images", file);
  form.append("camera", $("add-camera").value.trim());
  form.append("modality", $("add-modality").value);
  if ($("add-captured").value) form.append("captured_at", $("add-captured").value);
  if ($("add-track").value.trim()) form.append("track_id", $("add-track").value.trim());
  setStatus("adding…");
  const response = await write("/gallery", { method: "POST", body: form });
  if (!response.ok) { setStatus(await errorText(response), true); return; }
  const body = await response.json();
  setStatus(`added ${body.added}, already stored ${body.duplicates}`);
  $("add-form").reset();
  loadOverview();
}

function setUpDrop() {
  const drop = $("drop");
  const input = $("query-file");
  input.addEventListener("change", () => { if (input.files.length) showQueryPreview(input.files); });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer.files.length) {
      input.files = event.dataTransfer.files;
      showQueryPreview(input.files);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  setUpDrop();
  $("search-form").addEventListener("submit", search);
  $("add-form").addEventListener("submit", addCrops);
  $("delete-button").addEventListener("click", deleteSelected);
  $("modality").addEventListener("change", () => { $("cameras").value = ""; });
  loadOverview();
});
