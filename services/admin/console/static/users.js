// The Users page: the filter panel is the condition builder; the table follows it (htmx swaps
// the table in), the URL keeps it (shareable, back button), "Save as segment" carries it.
import { Builder, vocabulary } from "./builder.js";

const box = document.getElementById("filter-builder");
const initial = JSON.parse(document.getElementById("initial-filter").textContent);
const save = document.getElementById("save-as-segment");
let timer = null;

function isEmpty(cond) {
  return cond && Array.isArray(cond.all) && cond.all.length === 0;
}

function apply(cond) {
  const filter = isEmpty(cond) ? "" : JSON.stringify(cond);
  const params = new URLSearchParams();
  if (filter) params.set("filter", filter);
  const sort = new URLSearchParams(window.location.search).get("sort");
  if (sort) params.set("sort", sort);
  const url = params.size ? `/users?${params}` : "/users";
  history.replaceState(null, "", url);
  save.href = `/segments/_new?conditions=${encodeURIComponent(filter)}`;
  window.htmx.ajax("GET", url, { target: "#user-table", swap: "outerHTML" });
}

async function start() {
  const words = await vocabulary();
  new Builder(box, { ...words, initial, onChange: (cond) => {
    clearTimeout(timer);
    timer = setTimeout(() => apply(cond), 350);
  } });
  box.dataset.ready = "true";
}

document.addEventListener("change", (event) => {
  if (event.target.id === "select-all") {
    for (const cb of document.querySelectorAll("#user-table input[name=userId]")) {
      cb.checked = event.target.checked;
    }
  }
});

start();
