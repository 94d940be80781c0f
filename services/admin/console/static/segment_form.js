// Create / edit a segment: the condition builder, a live preview beside it (count and sample,
// from POST /v1/segments/preview), and saving through POST / PATCH /v1/segments.
import { Builder, api, vocabulary } from "./builder.js";

const form = document.getElementById("segment-form");
const editing = form.dataset.segment || "";
const initial = JSON.parse(document.getElementById("initial-conditions").textContent);
const count = document.getElementById("preview-count");
const sample = document.getElementById("preview-sample");
const previewError = document.getElementById("preview-error");
const formError = document.getElementById("form-error");
const builderBox = document.getElementById("builder");
const kindInputs = [...form.querySelectorAll("input[name=kind]")];

const kind = () => (kindInputs.find((i) => i.checked)?.value || form.dataset.kind);
let builder = null;
let timer = null;
let inflight = null;

async function preview() {
  if (!builder) return;
  inflight?.abort();
  const controller = new AbortController();
  inflight = controller;
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  count.textContent = "…";
  try {
    const resp = await fetch("/v1/segments/preview", {
      method: "POST", signal: controller.signal, credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ conditions: builder.value() }),
    });
    const data = await resp.json();
    if (!resp.ok) {
      count.textContent = "–";
      sample.replaceChildren();
      previewError.textContent = "Fix the highlighted condition to see the preview.";
      builder.showError(data.error);
      return;
    }
    previewError.textContent = "";
    // large environments get an estimate from a sample (POST /v1/segments/preview)
    count.textContent = (data.estimated ? "about " : "") + data.count.toLocaleString("en");
    sample.replaceChildren(...data.sample.map((u) => {
      const li = document.createElement("li");
      const label = u.userId ?? "(anonymous)";
      if (u.userId) {
        const a = document.createElement("a");
        a.href = `/users/${encodeURIComponent(u.userId)}`;
        a.textContent = label;
        li.append(a);
      } else {
        li.textContent = label;
      }
      if (u.attributes?.email) li.append(` · ${u.attributes.email}`);
      return li;
    }));
  } catch (err) {
    if (err.name !== "AbortError") previewError.textContent = `Preview failed: ${err.message}`;
  }
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(preview, 350);
}

function showKind() {
  const dynamic = kind() === "dynamic";
  document.getElementById("dynamic-part").hidden = !dynamic;
}

async function start() {
  const words = await vocabulary();
  builder = new Builder(builderBox, { ...words, initial, onChange: schedule, exclude: editing });
  form.dataset.ready = "true";
  showKind();
  if (kind() === "dynamic") preview();
}

for (const input of kindInputs) input.addEventListener("change", () => { showKind(); schedule(); });

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  formError.textContent = "";
  for (const el of form.querySelectorAll(".field-error:not(.node-error)")) el.textContent = "";
  const body = { name: form.elements.name.value };
  const key = form.elements.key.value.trim();
  if (key) body.key = key;
  body.description = form.elements.description.value;
  if (!editing) body.kind = kind();
  if (kind() === "dynamic") body.conditions = builder.value();
  try {
    const saved = editing
      ? await api("PATCH", `/v1/segments/${encodeURIComponent(editing)}`, body)
      : await api("POST", "/v1/segments", body);
    window.location.assign(`/segments/${encodeURIComponent(saved.key)}`);
  } catch (err) {
    if (/\$[.\[]|^conditions/.test(err.message) || (err.field || "").startsWith("$")) {
      builder.showError(err.message).scrollIntoView({ block: "center" });
      formError.textContent = "A condition needs fixing (marked below).";
    } else {
      const slot = document.getElementById(`error-${err.field}`);
      if (slot) slot.textContent = err.message;
      else formError.textContent = err.message;
    }
  }
});

start();
