// The condition builder: edits a condition tree of ../shared/spec/conditions.md as nested
// all / any / none groups of rows (attribute, tag, segment, event count, bucket).
// Every control has a <label>; everything is plain buttons, selects and inputs, so it is
// reachable and usable by keyboard. No dependencies, no build step.

const OPS = {
  string: ["is", "not", "in", "not_in", "contains", "not_contains", "starts_with", "ends_with",
    "regex", "is_set", "is_not_set"],
  number: ["is", "not", "in", "not_in", "lt", "lte", "gt", "gte", "between", "is_set",
    "is_not_set"],
  boolean: ["is", "not", "is_set", "is_not_set"],
  datetime: ["within_last_days", "more_than_days_ago", "before", "after", "on", "between",
    "is_set", "is_not_set"],
  list: ["includes_any", "includes_all", "not_includes_any", "not_includes_all", "is_set",
    "is_not_set"],
};
const OP_LABELS = {
  is: "is", not: "is not", in: "is one of", not_in: "is none of", contains: "contains",
  not_contains: "does not contain", starts_with: "starts with", ends_with: "ends with",
  regex: "matches regex", is_set: "is set", is_not_set: "is not set", lt: "less than",
  lte: "at most", gt: "more than", gte: "at least", between: "between",
  before: "before", after: "after", on: "on", within_last_days: "in the last (days)",
  more_than_days_ago: "more than (days) ago", includes_any: "includes any of",
  includes_all: "includes all of", not_includes_any: "includes none of",
  not_includes_all: "does not include all of",
};
const EVENT_OPS = ["gte", "gt", "is", "not", "lt", "lte", "between"];
const KINDS = [["attribute", "Attribute"], ["tag", "Tag"], ["segment", "Segment"],
  ["event", "Event count"], ["bucket", "Percentage bucket"]];
const GROUP_LABELS = { all: "All of these (AND)", any: "Any of these (OR)", none: "None of these (NOT)" };
const NO_VALUE = new Set(["is_set", "is_not_set"]);
const LIST_VALUE = new Set(["in", "not_in", "includes_any", "includes_all", "not_includes_any",
  "not_includes_all"]);
const CI_OPS = new Set(["is", "not", "in", "not_in", "contains", "not_contains", "starts_with",
  "ends_with", "includes_any", "includes_all", "not_includes_any", "not_includes_all"]);

let uid = 0;
const nextId = (what) => `b${++uid}-${what}`;

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c) el.append(c);
  return el;
}

// ---- model <-> JSON -------------------------------------------------------------------

function fromJSON(cond) {
  if (cond === null || cond === undefined) return group("all", []);
  for (const op of ["all", "any", "none"]) {
    if (Array.isArray(cond[op])) {
      const kids = cond[op];
      if (op === "none" && kids.length === 1 && (kids[0].tag || kids[0].segment !== undefined)) {
        const leaf = fromJSON(kids[0]);
        leaf.neg = true;
        return leaf;
      }
      return group(op, kids.map(fromJSON));
    }
  }
  if (cond.tag) return { t: "tag", neg: false, key: cond.tag.key || "", value: cond.tag.value || "" };
  if (cond.segment !== undefined) return { t: "segment", neg: false, key: String(cond.segment) };
  if (cond.event !== undefined) {
    const [v, v2] = Array.isArray(cond.value) ? cond.value : [cond.value, ""];
    return { t: "event", name: cond.event, op: cond.op || "gte", value: str(v), value2: str(v2),
      withinDays: str(cond.withinDays) };
  }
  if (cond.bucket) {
    return { t: "bucket", seed: cond.bucket.seed || "", from: str(cond.bucket.from),
      to: str(cond.bucket.to) };
  }
  const leaf = { t: "attribute", name: cond.attribute || "", scope: cond.scope || "user",
    op: cond.op || "is", value: "", value2: "", ci: Boolean(cond.ci) };
  if (cond.op === "between" && Array.isArray(cond.value)) {
    [leaf.value, leaf.value2] = cond.value.map(str);
  } else if (Array.isArray(cond.value)) {
    leaf.value = cond.value.join(", ");
  } else {
    leaf.value = str(cond.value);
  }
  return leaf;
}

const str = (v) => (v === undefined || v === null ? "" : String(v));
const group = (op, children) => ({ t: "group", op, children });

function num(text) {
  const n = Number(text);
  return text.trim() !== "" && Number.isFinite(n) ? n : text;
}

// A value as the attribute's type wants it (the server validates and names what is wrong).
function typed(type, text) {
  if (type === "number") return num(text);
  if (type === "boolean") return text === "true" ? true : text === "false" ? false : text;
  return text;
}

function toJSON(node, path, paths) {
  if (node.t === "group") {
    paths.set(path, node);
    return { [node.op]: node.children.map((c, i) => toJSON(c, `${path}.${node.op}[${i}]`, paths)) };
  }
  if (node.neg) {
    paths.set(path, node);
    const inner = toJSON({ ...node, neg: false }, `${path}.none[0]`, paths);
    paths.set(`${path}.none[0]`, node);
    return { none: [inner] };
  }
  paths.set(path, node);
  if (node.t === "tag") {
    return { tag: node.value ? { key: node.key, value: node.value } : { key: node.key } };
  }
  if (node.t === "segment") return { segment: node.key };
  if (node.t === "event") {
    const out = { event: node.name, op: node.op,
      value: node.op === "between" ? [num(node.value), num(node.value2)] : num(node.value) };
    if (node.withinDays !== "") out.withinDays = num(node.withinDays);
    return out;
  }
  if (node.t === "bucket") {
    return { bucket: { seed: node.seed, from: num(node.from), to: num(node.to) } };
  }
  const type = node.type || "string";
  const out = { attribute: node.name, op: node.op };
  if (node.scope === "company") out.scope = "company";
  if (NO_VALUE.has(node.op)) {
    // no value
  } else if (node.op === "between") {
    out.value = type === "number" ? [num(node.value), num(node.value2)] : [node.value, node.value2];
  } else if (LIST_VALUE.has(node.op)) {
    out.value = node.value.split(",").map((s) => s.trim()).filter((s) => s !== "")
      .map((s) => typed(type, s));
  } else if (node.op === "within_last_days" || node.op === "more_than_days_ago") {
    out.value = num(node.value);
  } else {
    out.value = typed(type, node.value);
  }
  if (node.ci && CI_OPS.has(node.op) && (type === "string" || type === "list")) out.ci = true;
  return out;
}

// ---- rendering ------------------------------------------------------------------------

export class Builder {
  /**
   * @param {HTMLElement} root where the builder draws itself
   * @param {{initial?: any, attributes: any[], segments: any[], tags: any[],
   *          onChange?: (value: any) => void, exclude?: string}} options
   */
  constructor(root, options) {
    this.root = root;
    this.options = options;
    this.types = new Map(options.attributes.map((a) => [`${a.scope}:${a.name}`, a.type]));
    const model = fromJSON(options.initial);
    this.model = model.t === "group" ? model : group("all", [model]);
    this.paths = new Map();
    this.rows = new Map();
    root.classList.add("builder");
    this.lists();
    this.render();
  }

  value() {
    this.paths = new Map();
    return toJSON(this.model, "$", this.paths);
  }

  changed() {
    this.clearErrors();
    this.options.onChange?.(this.value());
  }

  // datalists shared by every row (attribute names, tag keys and values)
  lists() {
    const names = [...new Set(this.options.attributes.map((a) => a.name))];
    this.attrList = nextId("attrs");
    this.tagKeyList = nextId("tagkeys");
    this.tagValueList = nextId("tagvalues");
    this.root.append(
      h("datalist", { id: this.attrList }, names.map((n) => h("option", { value: n }))),
      h("datalist", { id: this.tagKeyList },
        [...new Set(this.options.tags.map((t) => t.key))].map((k) => h("option", { value: k }))),
      h("datalist", { id: this.tagValueList },
        [...new Set(this.options.tags.map((t) => t.value))].map((v) => h("option", { value: v }))),
    );
  }

  render(focusNode) {
    this.root.querySelector(":scope > .group")?.remove();
    this.rows = new Map();
    this.root.append(this.groupEl(this.model, null));
    this.value();
    const el = focusNode && this.rows.get(focusNode);
    el?.querySelector("select, input")?.focus();
  }

  groupEl(node, parent) {
    const opId = nextId("match");
    const box = h("div", { class: `group ${node.op}`, role: "group",
      "aria-label": parent ? "Group of conditions" : "Conditions" });
    const head = h("div", { class: "grouphead" },
      h("div", { class: "cell" },
        h("label", { for: opId, text: parent ? "Group: match" : "Match" }),
        h("select", { id: opId, onchange: (e) => {
          node.op = e.target.value; box.className = `group ${node.op}`; this.changed();
        } }, Object.entries(GROUP_LABELS).map(([v, l]) =>
          h("option", { value: v, selected: v === node.op }, l)))),
      h("button", { type: "button", class: "secondary small", onclick: () => {
        const leaf = { t: "attribute", name: "", scope: "user", op: "is", value: "", value2: "",
          ci: false };
        node.children.push(leaf); this.render(leaf); this.changed();
      } }, "Add condition"),
      h("button", { type: "button", class: "secondary small", onclick: () => {
        const g = group("any", []);
        node.children.push(g); this.render(g); this.changed();
      } }, "Add group"),
      parent && h("button", { type: "button", class: "link", onclick: () => {
        parent.children.splice(parent.children.indexOf(node), 1); this.render(); this.changed();
      } }, "Remove group"),
    );
    box.append(head);
    if (!node.children.length) {
      box.append(h("p", { class: "muted", text: node.op === "any"
        ? "No condition yet: matches nobody." : "No condition yet: matches every user." }));
    }
    for (const child of node.children) {
      box.append(child.t === "group" ? this.groupEl(child, node) : this.rowEl(child, node));
    }
    this.rows.set(node, box);
    return box;
  }

  field(label, control, narrow = false) {
    const id = nextId("f");
    control.id = id;
    return h("div", { class: narrow ? "cell narrow" : "cell" }, h("label", { for: id, text: label }),
      control);
  }

  input(node, key, attrs = {}) {
    return h("input", { value: node[key] ?? "", ...attrs,
      oninput: (e) => { node[key] = e.target.value; this.changed(); } });
  }

  select(options, current, onchange) {
    return h("select", { onchange: (e) => onchange(e.target.value) },
      options.map(([v, l]) => h("option", { value: v, selected: v === current }, l)));
  }

  rowEl(node, parent) {
    const row = h("div", { class: "row", "data-kind": node.t });
    row.append(this.field("Condition", this.select(KINDS, node.t, (t) => {
      const fresh = fromJSON(
        t === "tag" ? { tag: { key: "" } } : t === "segment" ? { segment: "" }
          : t === "event" ? { event: "", op: "gte", value: 1 }
            : t === "bucket" ? { bucket: { seed: "rollout", from: 0, to: 10 } }
              : { attribute: "", op: "is", value: "" });
      parent.children[parent.children.indexOf(node)] = fresh;
      this.render(fresh); this.changed();
    })));
    row.append(...this[`${node.t}Fields`](node, row));
    row.append(h("button", { type: "button", class: "link", "aria-label": "Remove this condition",
      onclick: () => {
        parent.children.splice(parent.children.indexOf(node), 1); this.render(); this.changed();
      } }, "Remove"));
    this.rows.set(node, row);
    return row;
  }

  attributeFields(node, row) {
    const typeOf = () => this.types.get(`${node.scope}:${node.name}`) || "string";
    node.type = typeOf();
    const fields = [];
    const nameInput = this.input(node, "name", { list: this.attrList, placeholder: "plan",
      autocomplete: "off", required: true });
    nameInput.addEventListener("change", () => {
      const before = node.type;
      node.type = typeOf();
      if (node.type !== before) {
        if (!OPS[node.type].includes(node.op)) node.op = OPS[node.type][0];
        this.render(node);
      }
      this.changed();
    });
    fields.push(this.field("Attribute", nameInput));
    fields.push(this.field("Of", this.select([["user", "User"], ["company", "Company"]], node.scope,
      (v) => { node.scope = v; node.type = typeOf(); this.render(node); this.changed(); }), true));
    const type = node.type;
    const ops = OPS[type].includes(node.op) ? OPS[type] : [node.op, ...OPS[type]];
    fields.push(this.field(`Operator (${type})`, this.select(ops.map((o) => [o, OP_LABELS[o] || o]),
      node.op, (v) => { node.op = v; this.render(node); this.changed(); })));
    fields.push(...this.valueFields(node, type));
    if (CI_OPS.has(node.op) && (type === "string" || type === "list")) {
      const id = nextId("ci");
      fields.push(h("div", { class: "cell narrow" },
        h("label", { for: id, text: "Ignore case" }),
        h("input", { id, type: "checkbox", checked: node.ci,
          onchange: (e) => { node.ci = e.target.checked; this.changed(); } })));
    }
    return fields;
  }

  valueFields(node, type) {
    const op = node.op;
    if (NO_VALUE.has(op)) return [];
    if (op === "within_last_days" || op === "more_than_days_ago") {
      return [this.field("Days", this.input(node, "value", { type: "number", min: 0 }), true)];
    }
    const kind = type === "number" ? "number" : type === "datetime" ? "date" : "text";
    if (op === "between") {
      return [this.field("From", this.input(node, "value", { type: kind })),
        this.field("To", this.input(node, "value2", { type: kind }))];
    }
    if (LIST_VALUE.has(op)) {
      return [this.field("Values (comma-separated)", this.input(node, "value"))];
    }
    if (type === "boolean") {
      if (node.value === "") node.value = "true";
      return [this.field("Value", this.select([["true", "true"], ["false", "false"]], node.value,
        (v) => { node.value = v; this.changed(); }), true)];
    }
    return [this.field("Value", this.input(node, "value", { type: kind }))];
  }

  tagFields(node) {
    return [
      this.field("Users who", this.select([["has", "have the tag"], ["not", "do not have it"]],
        node.neg ? "not" : "has", (v) => { node.neg = v === "not"; this.changed(); })),
      this.field("Tag key", this.input(node, "key", { list: this.tagKeyList, autocomplete: "off",
        placeholder: "Department" })),
      this.field("Tag value (empty: any)", this.input(node, "value", { list: this.tagValueList,
        autocomplete: "off", placeholder: "Sales" })),
    ];
  }

  segmentFields(node) {
    const choices = this.options.segments.filter((s) => s.key !== this.options.exclude)
      .map((s) => [s.key, s.name]);
    if (node.key && !choices.some(([k]) => k === node.key)) choices.unshift([node.key, node.key]);
    if (!node.key && choices.length) node.key = choices[0][0];
    return [
      this.field("Users who are", this.select([["in", "in segment"], ["not", "not in segment"]],
        node.neg ? "not" : "in", (v) => { node.neg = v === "not"; this.changed(); })),
      this.field("Segment", this.select(choices, node.key, (v) => { node.key = v; this.changed(); })),
    ];
  }

  eventFields(node) {
    const fields = [
      this.field("Event", this.input(node, "name", { placeholder: "Clicked Upgrade" })),
      this.field("Count", this.select(EVENT_OPS.map((o) => [o, OP_LABELS[o]]), node.op,
        (v) => { node.op = v; this.render(node); this.changed(); })),
      this.field(node.op === "between" ? "From" : "Times", this.input(node, "value",
        { type: "number", min: 0 }), true),
    ];
    if (node.op === "between") {
      fields.push(this.field("To", this.input(node, "value2", { type: "number", min: 0 }), true));
    }
    fields.push(this.field("In the last (days, empty: ever)",
      this.input(node, "withinDays", { type: "number", min: 1 }), true));
    return fields;
  }

  bucketFields(node) {
    return [
      this.field("Seed", this.input(node, "seed")),
      this.field("From %", this.input(node, "from", { type: "number", min: 0, max: 100 }), true),
      this.field("To %", this.input(node, "to", { type: "number", min: 0, max: 100 }), true),
    ];
  }

  clearErrors() {
    for (const el of this.root.querySelectorAll(".node-error")) el.remove();
    for (const el of this.root.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  /** Show ``message`` on the node the server's JSON path (``$.all[1].value``) points at. */
  showError(message) {
    this.clearErrors();
    const match = /\$[^\s:]*/.exec(message);
    let node = null;
    if (match) {
      let best = "";
      for (const path of this.paths.keys()) {
        if ((match[0] === path || match[0].startsWith(path + ".") || match[0].startsWith(path + "["))
          && path.length > best.length) best = path;
      }
      node = this.paths.get(best) || null;
    }
    const el = (node && this.rows.get(node)) || this.root.querySelector(".group");
    const id = nextId("err");
    const text = message.replace(/^conditions: /, "");
    const note = h("span", { class: "field-error node-error", id, role: "alert", text });
    if (el.classList.contains("group")) el.querySelector(".grouphead").after(note);
    else el.append(note);
    for (const c of el.querySelectorAll(":scope > .cell > input, :scope > .cell > select")) {
      c.setAttribute("aria-invalid", "true");
      c.setAttribute("aria-describedby", id);
    }
    return el;
  }
}

/** GET a JSON API path with the session (the console's pages call /v1 like any client). */
export async function api(method, path, body) {
  const csrf = document.querySelector("meta[name=csrf-token]")?.content || "";
  const resp = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  const data = text ? JSON.parse(text) : null;
  if (!resp.ok) {
    const err = new Error(data?.error || resp.statusText);
    err.status = resp.status;
    err.field = data?.field;
    throw err;
  }
  return data;
}

/** What the builder's pickers offer: attributes, segments and tags of the environment. */
export async function vocabulary() {
  const [a, s, t] = await Promise.all([api("GET", "/v1/attributes"), api("GET", "/v1/segments"),
    api("GET", "/v1/tags")]);
  return { attributes: a.attributes, segments: s.segments, tags: t.tags };
}
