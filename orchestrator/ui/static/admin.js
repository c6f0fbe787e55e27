// The policy form of the admin pages (docs/ui.md): rules added and removed, and each
// rule's condition checked by the API as the admin types (POST /ui/admin/policies/validate,
// which asks POST /policies/validate), showing the error and where it is.
// No inline script anywhere: the Content-Security-Policy allows only files like this one.
"use strict";

(() => {
  const form = document.getElementById("policy-form");
  if (!form) return;
  const rules = document.getElementById("rules");
  const template = document.getElementById("rule-template");
  const token = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
  const DELAY = 300;  // ms after the last key before asking

  document.getElementById("add-rule").addEventListener("click", () => {
    const row = template.content.firstElementChild.cloneNode(true);
    rules.append(row);
    row.querySelector('input[name="resource"]').focus();
  });
  rules.addEventListener("click", (event) => {
    const button = event.target.closest(".remove-rule");
    if (!button) return;
    const row = button.closest("fieldset.rule");
    const next = row.nextElementSibling || row.previousElementSibling;
    row.remove();
    next?.querySelector("input, textarea, select")?.focus();
  });

  // One pending check per field: a newer text cancels the older question's answer.
  const state = new WeakMap();

  function show(field, verdict) {
    const row = field.closest("fieldset.rule");
    const message = row.querySelector(".condition-check");
    const caret = row.querySelector(".condition-caret");
    message.classList.remove("ok", "bad", "unknown");
    caret.hidden = true;
    if (verdict === null) {
      field.removeAttribute("aria-invalid");
      message.textContent = "";
      return;
    }
    if (verdict.valid) {
      field.setAttribute("aria-invalid", "false");
      message.classList.add("ok");
      message.textContent = "✓ The condition is valid.";
      return;
    }
    if (verdict.unknown) {
      field.removeAttribute("aria-invalid");
      message.classList.add("unknown");
      message.textContent = verdict.error;
      return;
    }
    field.setAttribute("aria-invalid", "true");
    message.classList.add("bad");
    const where = verdict.column
      ? ` (${verdict.line && verdict.line !== 1 ? `line ${verdict.line}, ` : ""}column ${verdict.column})`
      : "";
    message.textContent = `✗ ${verdict.error}${where}`;
    if (verdict.column) {
      // The faulty line, and a caret under the column the API named.
      const line = field.value.split("\n")[(verdict.line || 1) - 1] ?? "";
      caret.textContent = `${line}\n${" ".repeat(Math.max(0, verdict.column - 1))}^`;
      caret.hidden = false;
    }
  }

  async function check(field) {
    const text = field.value;
    const mine = (state.get(field)?.asked || 0) + 1;
    state.set(field, { ...state.get(field), asked: mine, timer: null });
    if (!text.trim()) { show(field, null); return; }
    let verdict;
    try {
      const response = await fetch("/ui/admin/policies/validate", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": token() },
        body: JSON.stringify({ condition: text }),
      });
      const body = await response.json().catch(() => ({}));
      if (response.status === 401) { window.location.assign("/ui/login"); return; }
      verdict = response.ok ? body : { unknown: true, error: body.error || `the check answered ${response.status}` };
    } catch (error) {
      verdict = { unknown: true, error: "the check did not answer; it is made again when you save" };
    }
    if (state.get(field)?.asked !== mine || field.value !== text) return;  // a newer text was asked
    show(field, verdict);
  }

  rules.addEventListener("input", (event) => {
    const field = event.target.closest("textarea.condition");
    if (!field) return;
    const known = state.get(field) || {};
    if (known.timer) window.clearTimeout(known.timer);
    state.set(field, { ...known, timer: window.setTimeout(() => check(field), DELAY) });
  });
  // The conditions already there (an edited policy, a refused form) are checked at once.
  for (const field of rules.querySelectorAll("textarea.condition")) if (field.value.trim()) check(field);
})();
