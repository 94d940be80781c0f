// Upload a CSV file straight to the imports API (POST /v1/imports, the file as a text/csv
// body, its name in ?fileName=), then open the draft to map its columns.
const form = document.getElementById("upload-form");
const kind = document.getElementById("import-kind");
const segmentChoice = document.getElementById("segment-choice");
const error = document.getElementById("upload-error");

kind.addEventListener("change", () => { segmentChoice.hidden = kind.value !== "members"; });

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.textContent = "";
  const file = form.elements.file.files[0];
  if (!file) { error.textContent = "Choose a CSV file."; return; }
  const params = new URLSearchParams({ kind: kind.value, fileName: file.name });
  if (kind.value === "members" && form.elements.segment.value) {
    params.set("segment", form.elements.segment.value);
  }
  const csrf = document.querySelector("meta[name=csrf-token]").content;
  const resp = await fetch(`/v1/imports?${params}`, {
    method: "POST", body: file, credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf, "Content-Type": "text/csv" },
  });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) { error.textContent = data.error || resp.statusText; return; }
  window.location.assign(`/imports/${data.id}`);
});
