// The web UI's behaviour: dialogs, the scorer picker, BTQL checks as you type, and every write
// through the JSON API (the same validation and permission checks as any API client).
"use strict";

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];
const PROJECT = document.body.dataset.project;
const POLL_MS = 500;

// --- The API ----------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.details = error;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json", "X-CSRFToken": $('meta[name="csrf-token"]').content };
  if (document.body.dataset.organization) headers["X-Organization"] = document.body.dataset.organization;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: { message: `The server answered ${response.status} without JSON.` } };
  }
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || {});
  return data;
}

// --- Errors next to the field at fault --------------------------------------------------------

function errorSlot(root, field) {
  // The most specific slot: "config.online.scorers[1]" lands on "config.online.scorers".
  let best = null;
  for (const slot of $$("[data-error-for]", root)) {
    const name = slot.dataset.errorFor;
    if ((field === name || field.startsWith(name + "[") || field.startsWith(name + "."))
        && (!best || name.length > best.dataset.errorFor.length)) best = slot;
  }
  return best;
}

function showError(slot, error) {
  slot.textContent = error.message;
  if (error.details && error.details.snippet) {
    const pre = document.createElement("pre");
    pre.className = "snippet";
    pre.textContent = error.details.snippet;
    slot.append(pre);
  }
}

function clearErrors(root) {
  for (const slot of $$("[data-error-for], [data-form-error]", root)) slot.textContent = "";
}

function reportError(root, error) {
  const field = error.details && error.details.field;
  const slot = (field && errorSlot(root, field)) || $("[data-form-error]", root);
  if (slot) showError(slot, error);
  else alert(error.message);
}

// --- Dialogs, menus, selection ----------------------------------------------------------------

document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-open-dialog]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.openDialog);
    const form = $("form", dialog);
    clearErrors(form);
    $("[data-progress]", form)?.setAttribute("hidden", "");
    const count = $("[data-selected-count]", form);
    if (count) count.textContent = selectedRows().length;
    opener.closest("details")?.removeAttribute("open");
    dialog.showModal();
  }
  const closer = event.target.closest("[data-close]");
  if (closer) closer.closest("dialog").close();
});

// Menus close on a click elsewhere, or on Escape.
document.addEventListener("click", (event) => {
  for (const menu of $$("details[open]")) if (!menu.contains(event.target)) menu.removeAttribute("open");
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  for (const menu of $$("details[open]")) {
    menu.removeAttribute("open");
    $("summary", menu).focus();
  }
});

document.addEventListener("close", (event) => {
  if (event.target.dataset.reloadOnClose) location.reload();
}, true);

function selectedRows() {
  return $$("[data-row]:checked").map((box) => box.value);
}

document.addEventListener("change", (event) => {
  if (event.target.matches("[data-select-all]")) {
    for (const box of $$("[data-row]")) box.checked = event.target.checked;
  }
  if (event.target.matches("[data-row], [data-select-all]")) {
    for (const button of $$("[data-needs-selection]")) button.disabled = selectedRows().length === 0;
  }
});

// --- The scorer picker ------------------------------------------------------------------------

document.addEventListener("input", (event) => {
  if (!event.target.matches(".picker-search")) return;
  const words = event.target.value.toLowerCase();
  for (const option of $$(".picker-option", event.target.closest(".picker"))) {
    option.hidden = !option.textContent.toLowerCase().includes(words);
  }
});

const refKey = (ref) => `${ref.type}:${ref.name || ref.id}`;

function pickedScorers(form) {
  return $$('input[name="scorer"]:checked', form).map((box) => JSON.parse(box.value));
}

function pickScorers(form, refs) {
  const wanted = new Set(refs.map(refKey));
  for (const box of $$('input[name="scorer"]', form)) box.checked = wanted.has(refKey(JSON.parse(box.value)));
}

// --- BTQL: checked as you type, with the position of the fault --------------------------------

const btqlTimers = new WeakMap();
const btqlChecks = new WeakMap(); // per input, the number of its latest check

async function btqlCheck(input) {
  // The logs filter bar's error sits outside its form: look in the whole page.
  const slot = errorSlot(input.closest("dialog") || document, input.dataset.btql);
  if (!slot) return;
  const check = (btqlChecks.get(input) || 0) + 1;
  btqlChecks.set(input, check);
  const text = input.value.trim();
  let failure = null;
  if (text) {
    try {
      // The fetch endpoint compiles the filter exactly as rules and "Score past logs" do.
      await api("GET", `/v1/project_logs/${PROJECT}/fetch?limit=1&filter=${encodeURIComponent(text)}`);
    } catch (error) {
      if (error.status !== 400) return; // not the filter's fault: say nothing new
      failure = error;
    }
  }
  // The message changes only now, with the answer, and only for the latest check: clearing it
  // first would move the dialog's contents under the pointer of the click that left the field.
  if (btqlChecks.get(input) !== check) return;
  slot.textContent = "";
  if (failure) showError(slot, failure);
}

document.addEventListener("input", (event) => {
  const input = event.target;
  if (!input.matches("[data-btql]")) return;
  clearTimeout(btqlTimers.get(input));
  btqlTimers.set(input, setTimeout(() => btqlCheck(input), 400));
});
document.addEventListener("focusout", (event) => {
  if (event.target.matches("[data-btql]")) btqlCheck(event.target);
});

// --- Manual scoring: selected logs, one span, or "Score past logs" ----------------------------

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.matches("[data-score-form]")) return;
  event.preventDefault();
  clearErrors(form);
  const body = { scorers: pickedScorers(form) };
  $("[data-progress]", form).hidden = true; // an earlier request's progress
  const mode = form.dataset.mode;
  if (mode === "selected") body.ids = selectedRows();
  if (mode === "ids") body.ids = [form.dataset.ids];
  if (mode === "past") {
    // Trimmed, as the check as you type sends it, so that both point at the same column.
    const filter = form.elements.filter.value.trim();
    if (filter) body.filter = filter;
    body.limit = Number(form.elements.limit.value) || 50;
  }
  const submit = $('button[type="submit"]', form);
  submit.disabled = true;
  try {
    const { runs } = await api("POST", `/v1/project_logs/${PROJECT}/score`, body);
    await followRuns(form, runs);
  } catch (error) {
    reportError(form, error);
  } finally {
    submit.disabled = false;
  }
});

async function followRuns(form, runs) {
  const progress = $("[data-progress]", form);
  const bar = $("progress", progress);
  const text = $("[data-progress-text]", progress);
  progress.hidden = false;
  if (!runs.length) {
    bar.value = 1;
    text.textContent = "No logs match: nothing to score.";
    return;
  }
  form.closest("dialog").dataset.reloadOnClose = "1";
  let pending = runs.map((run) => run.id);
  const finished = new Map();
  while (pending.length) {
    for (let i = 0; i < pending.length; i += 500) {
      const { objects } = await api("GET", `/v1/scoring_runs?ids=${pending.slice(i, i + 500).join(",")}`);
      for (const run of objects) if (run.status === "done" || run.status === "error") finished.set(run.id, run);
    }
    pending = pending.filter((id) => !finished.has(id));
    const errors = [...finished.values()].filter((run) => run.status === "error").length;
    bar.value = finished.size / runs.length;
    text.textContent = `${finished.size} of ${runs.length} runs finished` + (errors ? `, ${errors} with errors` : "")
      + (pending.length ? "…" : ". Close to see the scores.");
    if (pending.length) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

// --- Online scoring rules ---------------------------------------------------------------------

const ruleDialog = document.getElementById("rule-dialog");

function ruleForm(rule) {
  const form = $("form", ruleDialog);
  form.reset();
  clearErrors(form);
  $("[data-test-results]", form).hidden = true;
  form.dataset.ruleId = rule ? rule.id : "";
  $("h2", form).textContent = rule ? `Edit rule ${rule.name}` : "Create rule";
  const online = rule ? rule.config.online : null;
  pickScorers(form, online ? online.scorers : []);
  if (rule) {
    form.elements.name.value = rule.name;
    form.elements.description.value = rule.description || "";
    form.elements.sampling_rate.value = Math.round(online.sampling_rate * 100 * 1000) / 1000;
    form.elements.btql_filter.value = online.btql_filter || "";
    form.elements.apply_to_root_span.checked = online.apply_to_root_span;
    form.elements.apply_to_span_names.value = (online.apply_to_span_names || []).join(", ");
    form.elements.sample_by.value = online.sample_by || "span";
    form.elements.enabled.checked = online.enabled;
  }
  ruleDialog.showModal();
}

function ruleBody(form) {
  const f = form.elements;
  const rate = f.sampling_rate.value.trim();
  return {
    project_id: PROJECT,
    name: f.name.value.trim(),
    description: f.description.value,
    score_type: "online",
    config: {
      online: {
        // The API validates the rate: a blank or out-of-range one comes back as its error.
        sampling_rate: rate === "" ? null : Number(rate) / 100,
        scorers: pickedScorers(form),
        btql_filter: f.btql_filter.value.trim() || null,
        apply_to_root_span: f.apply_to_root_span.checked,
        apply_to_span_names: f.apply_to_span_names.value.split(",").map((s) => s.trim()).filter(Boolean),
        sample_by: f.sample_by.value,
        enabled: f.enabled.checked,
      },
    },
  };
}

document.addEventListener("click", async (event) => {
  const target = event.target;
  if (target.closest("[data-rule-new]")) ruleForm(null);
  const edit = target.closest("[data-rule-edit]");
  if (edit) ruleForm(JSON.parse(edit.dataset.ruleEdit));
  const remove = target.closest("[data-rule-delete]");
  if (remove) {
    const row = remove.closest("[data-rule-id]");
    if (!confirm(`Delete the rule ${$("strong", row).textContent}? Its scores stay on the spans.`)) return;
    try {
      await api("DELETE", `/v1/project_score/${row.dataset.ruleId}`);
      location.reload();
    } catch (error) {
      alert(error.message);
    }
  }
  if (target.closest("[data-rule-test]")) ruleTest($("form", ruleDialog));
});

document.addEventListener("change", async (event) => {
  const toggle = event.target;
  if (!toggle.matches("[data-rule-enabled]")) return;
  const row = toggle.closest("[data-rule-id]");
  try {
    const rule = await api("PATCH", `/v1/project_score/${row.dataset.ruleId}`, { config: { online: { enabled: toggle.checked } } });
    // The Edit dialog starts from this copy: keep it current, or saving would undo the toggle.
    $("[data-rule-edit]", row).dataset.ruleEdit = JSON.stringify(rule);
  } catch (error) {
    toggle.checked = !toggle.checked;
    alert(error.message);
  }
});

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.matches("[data-rule-form]")) return;
  event.preventDefault();
  clearErrors(form);
  const body = ruleBody(form);
  const submit = $('button[type="submit"]', form);
  submit.disabled = true; // one rule per click, however fast the clicks
  try {
    if (form.dataset.ruleId) {
      const { project_id, score_type, ...patch } = body;
      await api("PATCH", `/v1/project_score/${form.dataset.ruleId}`, patch);
    } else {
      const rule = await api("POST", "/v1/project_score", body);
      // Braintrust's POST answers an existing rule of that name unchanged: say so.
      if ($(`[data-rule-id="${rule.id}"]`)) {
        showError(errorSlot(form, "name"), { message: `A rule named ${rule.name} already exists: edit it instead.` });
        return;
      }
    }
    location.reload();
  } catch (error) {
    reportError(form, error);
  } finally {
    submit.disabled = false;
  }
});

// The rule list's counts stay live: each rule's stats, every few seconds, while the page is open.
const STATS_MS = 3000;
const seconds = (value) => (value < 1 ? `${Math.round(value * 1000)} ms` : `${value.toFixed(2)} s`);

async function rulesStatsRefresh() {
  for (const row of $$("tr[data-rule-id]")) {
    try {
      const stats = await api("GET", `/v1/project_score/${row.dataset.ruleId}/stats`);
      $('[data-stat="scored"]', row).textContent = stats.scored;
      const errored = $('[data-stat="errored"]', row);
      // A count of errors opens them: the spans, scorers and messages.
      if (stats.errored > 0) {
        const link = Object.assign(document.createElement("a"), {
          href: errored.dataset.errorsUrl, title: "See the errors", textContent: stats.errored,
        });
        errored.replaceChildren(link);
      } else {
        errored.textContent = "0";
      }
      errored.classList.toggle("error", stats.errored > 0);
      const lag = $('[data-stat="queue_lag_seconds"]', row);
      lag.textContent = seconds(stats.queue_lag_seconds);
      lag.title = `${stats.pending_runs} pending runs`;
    } catch {
      // A rule deleted meanwhile, or the server restarting: the next round tries again.
    }
  }
}
if ($("tr[data-rule-id]")) setInterval(rulesStatsRefresh, STATS_MS);

async function ruleTest(form) {
  clearErrors(form);
  const results = $("[data-test-results]", form);
  const button = $("[data-rule-test]", form);
  const { name, ...body } = ruleBody(form);
  button.disabled = true;
  results.hidden = false;
  results.textContent = "Testing the rule on recent spans…";
  try {
    const data = await api("POST", "/v1/project_score/test", { ...body, ...(name ? { name } : {}), limit: 20 });
    results.replaceChildren(testTable(data.results));
  } catch (error) {
    results.hidden = true;
    reportError(form, error);
  } finally {
    button.disabled = false;
  }
}

function cell(row, content, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  row.append(td);
}

function testTable(results) {
  const wrap = document.createElement("div");
  const title = document.createElement("h3");
  title.textContent = `Test rule: the ${results.length} most recent spans (nothing is saved)`;
  wrap.append(title);
  if (!results.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "No ended spans in this project yet.";
    wrap.append(p);
    return wrap;
  }
  const table = document.createElement("table");
  table.className = "table compact";
  table.innerHTML = "<thead><tr><th>Span</th><th>Matched filter</th><th>Selected</th><th>Sampled</th><th>Scores or error</th></tr></thead>";
  const body = document.createElement("tbody");
  for (const result of results) {
    const row = document.createElement("tr");
    const link = document.createElement("a");
    link.href = `/projects/${PROJECT}/logs/${encodeURIComponent(result.id)}/`;
    link.target = "_blank"; // the rule being edited stays open
    link.rel = "noopener";
    link.textContent = result.name || result.id;
    cell(row, link);
    // The steps run in order: a step after one that said no was not reached.
    const steps = [result.matched_filter, result.selected, result.sampled];
    const reached = steps.indexOf(false);
    steps.forEach((passed, i) => {
      if (reached !== -1 && i > reached) cell(row, "—", "no");
      else cell(row, passed ? "✓ yes" : "✗ no", passed ? "yes" : "no");
    });
    const scores = Object.entries(result.scores || {})
      .map(([scoreName, value]) => `${scoreName} ${value === null ? "—" : Math.round(value * 100) + "%"}`);
    // Scores of a span the draw left out show what scoring it would give.
    const shown = scores.length && !result.sampled ? [`If drawn: ${scores.join(" · ")}`] : scores;
    cell(row, [...shown, result.error ? `Error: ${result.error}` : ""].filter(Boolean).join(" · ") || "—",
      result.error ? "error" : "");
    body.append(row);
  }
  table.append(body);
  wrap.append(table);
  return wrap;
}

// --- Custom scorers ---------------------------------------------------------------------------

const functionDialog = document.getElementById("function-dialog");

function functionForm(kind, saved) {
  const form = $("form", functionDialog);
  form.reset();
  clearErrors(form);
  $("[data-function-result]", form).hidden = true;
  form.dataset.kind = kind;
  form.dataset.functionId = saved ? saved.id : "";
  form.dataset.saved = "";
  $("[data-close]", form).textContent = "Cancel";
  for (const part of $$("[data-kind]", form)) part.hidden = part.dataset.kind !== kind;
  $("h2", form).textContent = (saved ? "Edit " : "New ") + (kind === "prompt" ? "LLM judge" : "code scorer");
  form.elements.slug.readOnly = Boolean(saved);
  if (kind === "code" && !saved) form.elements.code.value = CODE_TEMPLATES.python;
  if (saved) {
    form.elements.name.value = saved.name;
    form.elements.slug.value = saved.slug;
    form.elements.description.value = saved.description || "";
    if (kind === "code") {
      form.elements.runtime.value = saved.function_data.data.runtime_context.runtime;
      form.elements.code.value = saved.function_data.data.code;
    } else {
      const prompt = saved.prompt_data;
      const message = (role) => (prompt.prompt.messages.find((m) => m.role === role) || {}).content || "";
      form.elements.system.value = message("system");
      form.elements.user.value = message("user");
      form.elements.model.value = (prompt.options || {}).model || "";
      form.elements.choice_scores.value = Object.entries(prompt.parser.choice_scores)
        .map(([choice, score]) => `${choice}: ${score}`).join("\n");
      form.elements.use_cot.checked = prompt.parser.use_cot !== false;
    }
    form.dataset.saved = JSON.stringify(functionBody(form));
  }
  functionDialog.showModal();
}

const CODE_TEMPLATES = {
  python: "def handler(input, output, expected, metadata):\n    # Return a score from 0 to 1, or {\"score\": ..., \"metadata\": {...}}.\n    return 1.0 if output == expected else 0.0\n",
  node: "export function handler({ input, output, expected, metadata }: any): number {\n  // Return a score from 0 to 1, or { score, metadata }.\n  return output === expected ? 1 : 0;\n}\n",
};

function functionBody(form) {
  const f = form.elements;
  const body = { name: f.name.value.trim(), description: f.description.value };
  if (form.dataset.kind === "code") {
    const runtime = f.runtime.value;
    body.function_data = {
      type: "code",
      data: { type: "inline", runtime_context: { runtime, version: runtime === "node" ? "24" : "3.11" }, code: f.code.value },
    };
  } else {
    const messages = [];
    if (f.system.value.trim()) messages.push({ role: "system", content: f.system.value });
    messages.push({ role: "user", content: f.user.value });
    const choiceScores = {};
    for (const line of f.choice_scores.value.split("\n")) {
      const at = line.lastIndexOf(":");
      if (at > 0) choiceScores[line.slice(0, at).trim()] = Number(line.slice(at + 1).trim());
    }
    body.function_data = { type: "prompt" };
    body.prompt_data = {
      prompt: { type: "chat", messages },
      options: f.model.value.trim() ? { model: f.model.value.trim() } : {},
      parser: { type: "llm_classifier", use_cot: f.use_cot.checked, choice_scores: choiceScores },
    };
  }
  return body;
}

async function functionSave(form) {
  const body = functionBody(form);
  if (form.dataset.functionId) {
    if (JSON.stringify(body) !== form.dataset.saved) await api("PATCH", `/v1/function/${form.dataset.functionId}`, body);
  } else {
    const created = await api("POST", "/v1/function", {
      ...body, project_id: PROJECT, slug: form.elements.slug.value.trim(), function_type: "scorer",
    });
    form.dataset.functionId = created.id;
    form.elements.slug.readOnly = true;
  }
  form.dataset.saved = JSON.stringify(body);
  form.dataset.changed = "1";
  // Saved already: leaving the dialog no longer cancels anything.
  $("[data-close]", form).textContent = "Close";
}

document.addEventListener("click", async (event) => {
  const target = event.target;
  const fresh = target.closest("[data-function-new]");
  if (fresh) functionForm(fresh.dataset.functionNew, null);
  const edit = target.closest("[data-function-edit]");
  if (edit) {
    const saved = JSON.parse(edit.dataset.functionEdit);
    functionForm(saved.function_data.type, saved);
  }
  if (!target.closest("[data-function-test]")) return;
  const form = $("form", functionDialog);
  clearErrors(form);
  const result = $("[data-function-result]", form);
  result.hidden = true; // an earlier Test's result is not this one's
  const sample = {};
  for (const name of ["input", "output", "expected", "metadata"]) {
    const text = form.elements[`test_${name}`].value.trim();
    try {
      sample[name] = text ? JSON.parse(text) : null;
    } catch {
      showError(errorSlot(form, "test"), { message: `${name[0].toUpperCase() + name.slice(1)} is not valid JSON.` });
      return;
    }
  }
  try {
    await functionSave(form);
    result.hidden = false;
    result.textContent = "Running…";
    const outcome = await api("POST", `/v1/function/${form.dataset.functionId}/invoke`, sample);
    result.textContent = JSON.stringify(outcome, null, 2);
    result.classList.toggle("error", Boolean(outcome.error));
  } catch (error) {
    result.hidden = true; // it said "Running…" until the request failed
    reportError(form, error);
  }
});

document.addEventListener("change", (event) => {
  const select = event.target;
  if (!select.matches('#function-dialog select[name="runtime"]')) return;
  const code = select.form.elements.code;
  // Swap the template only while it is untouched.
  if (Object.values(CODE_TEMPLATES).includes(code.value)) code.value = CODE_TEMPLATES[select.value];
});

document.addEventListener("submit", async (event) => {
  const form = event.target;
  if (!form.matches("[data-function-form]")) return;
  event.preventDefault();
  clearErrors(form);
  $("[data-function-result]", form).hidden = true; // a Test's result of the code before the edits
  try {
    await functionSave(form);
    location.reload();
  } catch (error) {
    reportError(form, error);
  }
});

functionDialog?.addEventListener("close", () => {
  if ($("form", functionDialog).dataset.changed) location.reload();
});
