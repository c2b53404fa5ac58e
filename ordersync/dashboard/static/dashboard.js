// ordersync dashboard: row selection, actions as the signed-in user (the session's CSRF token) or, on a
// dashboard without accounts, with the operator token (enabled only where the reader may act and the
// orders' states allow them, their outcome polled until the pipeline reports it), filters that apply on change,
// keyboard use of the grid (/ search, j/k move, Enter open, x select), and a status key that refreshes
// itself. No framework and nothing from another host: it runs offline
// under the page's Content-Security-Policy (script-src 'self').
"use strict";

(function () {
  const TOKEN_KEY = "ordersync.operatorToken";
  const HEALTH_REFRESH_MS = 30000;
  const OUTCOME_POLL_MS = 2000;
  const OUTCOME_POLL_FOR_MS = 180000;

  function $(selector, root) { return (root || document).querySelector(selector); }
  function $all(selector, root) { return Array.from((root || document).querySelectorAll(selector)); }

  function showResult(kind, text, problems) {
    const box = $("#action-result");
    if (!box) { return; }
    box.className = "notice " + kind;
    box.textContent = text;
    if (problems && problems.length) {
      const list = document.createElement("ul");
      for (const problem of problems) {
        const item = document.createElement("li");
        item.textContent = problem;
        list.appendChild(item);
      }
      box.appendChild(list);
    }
    box.setAttribute("role", kind === "error" ? "alert" : "status");
  }

  // --- selection ---------------------------------------------------------------------------------

  function selectedOrders() {
    const detail = $("#order-detail");
    if (detail) {
      return [{ channel: detail.dataset.channel, amazon_order_id: detail.dataset.order }];
    }
    return $all("input.row-select:checked").map(function (box) {
      return { channel: box.dataset.channel, amazon_order_id: box.value };
    });
  }

  // The actions each selected order's state allows (data-allowed, the server's rules).
  function selectedAllowed() {
    const detail = $("#order-detail");
    if (detail) { return [(detail.dataset.allowed || "").split(" ")]; }
    return $all("input.row-select:checked").map(function (box) {
      const row = box.closest("tr");
      return ((row && row.dataset.allowed) || "").split(" ");
    });
  }

  function updateSelection() {
    const count = selectedOrders().length;
    const label = $("#selection-count");
    if (label && !$("#order-detail")) {
      label.textContent = count ? count + " selected" : "select orders to act on them";
    }
    const bar = $("#actions");
    const enabled = bar && bar.dataset.enabled === "yes";
    const allowed = selectedAllowed();
    for (const button of $all("button.action")) {
      const refusing = allowed.filter(function (list) { return list.indexOf(button.dataset.action) < 0; }).length;
      button.disabled = !enabled || count === 0 || refusing > 0;
      if (!enabled) {
        // Who may not act is told why (the role, or no operator token), whatever is selected.
        button.title = bar.dataset.why || "";
      } else if (refusing && !$("#order-detail")) {
        button.title = button.textContent.trim() + ": not allowed for " + refusing + " of the selected orders (their state)";
      } else if (!$("#order-detail")) {
        button.removeAttribute("title");
      }
    }
    const all = $("#select-all");
    if (all) {
      const boxes = $all("input.row-select");
      all.checked = boxes.length > 0 && boxes.every(function (b) { return b.checked; });
      all.indeterminate = count > 0 && !all.checked;
    }
  }

  // --- actions -----------------------------------------------------------------------------------

  function operatorToken() {
    const field = $("#operator-token");
    if (field && field.value) {
      if ($("#remember-token") && $("#remember-token").checked) {
        sessionStorage.setItem(TOKEN_KEY, field.value);
      }
      return field.value;
    }
    const remembered = sessionStorage.getItem(TOKEN_KEY);
    if (remembered) { return remembered; }
    const asked = window.prompt("Operator token (ORDERSYNC_DASHBOARD__OPERATOR_TOKEN)");
    return asked ? asked.trim() : null;
  }

  // The signed-in user's CSRF token (the page's meta tag); none on a dashboard without accounts.
  function csrfToken() {
    const meta = document.querySelector("meta[name='csrf-token']");
    return meta ? meta.getAttribute("content") : "";
  }

  // POST ``body`` as JSON: as the signed-in user (the session cookie and its CSRF token), or, without
  // accounts, with the operator token (asked for when the page does not have it). Resolves to
  // {response, answer} (the answer's JSON, {} when it has none), or null when no token was given.
  async function postWithAuth(url, body) {
    const headers = { "Content-Type": "application/json" };
    const csrf = csrfToken();
    if (csrf) {
      headers["X-CSRF-Token"] = csrf;
    } else {
      const token = operatorToken();
      if (!token) { return null; }
      headers["X-Operator-Token"] = token;
    }
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: headers,
      body: JSON.stringify(body),
    });
    let answer = {};
    try { answer = await response.json(); } catch (e) { answer = {}; }
    // A refused token is forgotten, so the next action asks again.
    if (response.status === 403 && !csrf) { sessionStorage.removeItem(TOKEN_KEY); }
    if (response.status === 401) { answer.error = (answer.error || "your session has ended") + " (reload the page to sign in)"; }
    return { response: response, answer: answer };
  }

  async function runAction(button) {
    const action = button.dataset.action;
    const label = button.textContent.trim();
    const orders = selectedOrders();
    if (!orders.length) {
      showResult("error", "Select at least one order first.");
      return;
    }
    const channels = Array.from(new Set(orders.map(function (o) { return o.channel; })));
    const what = orders.length === 1 ? "order " + orders[0].amazon_order_id : orders.length + " orders";
    if (!window.confirm(label + " " + what + " (" + channels.join(", ") + ")?")) { return; }
    const nameField = $("#operator-name");
    const body = { action: action, orders: orders };
    if (nameField && nameField.value.trim()) { body.operator = nameField.value.trim(); }
    for (const b of $all("button.action")) { b.disabled = true; }
    showResult("info", label + ": sending…");
    try {
      const result = await postWithAuth("/api/actions", body);
      if (!result) {
        showResult("error", "No operator token given: nothing was sent.");
        return;
      }
      const response = result.response;
      const answer = result.answer;
      if (response.ok) {
        const published = answer.published || [];
        const events = published.map(function (p) {
          return p.channel + ": " + p.amazon_order_ids.length + " order(s), event " + p.event_id;
        });
        showResult("success", label + " sent for " + what + ": waiting for the outcome…", events);
        const box = $("#action-result");
        if (box) { box.dataset.state = "sent"; }
        for (const b of $all("input.row-select:checked")) { b.checked = false; }
        followOutcome(label + " sent for " + what, published.map(function (p) { return p.event_id; }));
      } else if (response.status === 403 || response.status === 401) {
        showResult("error", label + " refused: " + (answer.error || "forbidden") + ". Nothing was sent.");
      } else if (response.status === 409 || response.status === 422) {
        showResult("error", label + " refused: " + (answer.error || response.statusText) + ". Nothing was sent.", answer.problems || []);
      } else {
        const sent = (answer.published || []).map(function (p) { return "sent: " + p.channel + " event " + p.event_id; });
        const notSent = (answer.not_sent || []).map(function (c) { return "not sent: " + c; });
        showResult("error", label + " failed: " + (answer.error || response.statusText),
          (answer.problems || []).concat(sent, notSent));
      }
    } catch (err) {
      showResult("error", label + " failed: the dashboard did not answer (" + err + "). It may or may not have been sent; sending again is safe.");
    } finally {
      updateSelection();
    }
  }

  // Poll the commands' outcomes (read back from the read model) until each is done or failed.
  // ``sent``: "Retry Import sent for 3 orders", kept at the head of every message.
  function followOutcome(sent, eventIds) {
    if (!eventIds.length) { return; }
    const started = Date.now();
    async function poll() {
      const outcomes = [];
      for (const id of eventIds) {
        try {
          const response = await fetch("/api/commands/" + encodeURIComponent(id), {
            credentials: "same-origin", headers: { "X-Ordersync-Background": "1" },
          });
          outcomes.push(response.ok ? await response.json() : { state: "sent", summary: "" });
        } catch (e) {
          outcomes.push({ state: "sent", summary: "" });
        }
      }
      const open = outcomes.filter(function (o) { return o.state === "sent"; }).length;
      const failed = outcomes.filter(function (o) { return o.state === "failed"; }).length;
      const lines = outcomes.map(function (o) { return o.summary; }).filter(Boolean);
      const box = $("#action-result");
      if (open === 0) {
        showResult(failed ? "error" : "success", sent + (failed ? ": failed, see the reasons below." :
          ": done, every order reported."), lines);
        if (box) { box.dataset.state = failed ? "failed" : "done"; }
        return;
      }
      if (Date.now() - started > OUTCOME_POLL_FOR_MS) {
        showResult("warning", sent + ": no outcome reported yet for every order. Tasks shows it when it comes.", lines);
        return;
      }
      showResult("success", sent + ": waiting for the outcome…", lines);
      if (box) { box.dataset.state = "sent"; }
      window.setTimeout(poll, OUTCOME_POLL_MS);
    }
    window.setTimeout(poll, OUTCOME_POLL_MS / 2);
  }

  // --- keyboard ----------------------------------------------------------------------------------

  function gridRows() { return $all("#orders tbody tr[data-order]"); }

  function focusRow(index) {
    const rows = gridRows();
    if (!rows.length) { return; }
    const row = rows[Math.max(0, Math.min(rows.length - 1, index))];
    for (const r of rows) { r.classList.remove("focused"); }
    row.classList.add("focused");
    row.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    const target = event.target;
    const typing = target && (target.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName));
    if (typing) {
      if (event.key === "Escape") { target.blur(); }
      return;
    }
    const rows = gridRows();
    const current = rows.indexOf(document.activeElement && document.activeElement.closest ? document.activeElement.closest("tr[data-order]") : null);
    if (event.key === "/") {
      const search = $("#search");
      if (search) {
        event.preventDefault();
        const box = $("#filters-box");
        if (box) { box.open = true; }
        search.focus();
        search.select();
      }
    } else if (event.key === "j" || (event.key === "ArrowDown" && current >= 0)) {
      if (!rows.length) { return; }
      event.preventDefault();
      focusRow(current < 0 ? 0 : current + 1);
    } else if (event.key === "k" || (event.key === "ArrowUp" && current >= 0)) {
      if (!rows.length) { return; }
      event.preventDefault();
      focusRow(current < 0 ? 0 : current - 1);
    } else if (event.key === "Enter" && current >= 0) {
      const link = $("td.order-id a", rows[current]);
      if (link) { event.preventDefault(); window.location.href = link.getAttribute("href"); }
    } else if (event.key === "x" && current >= 0) {
      const box = $("input.row-select", rows[current]);
      if (box) { event.preventDefault(); box.checked = !box.checked; updateSelection(); }
    }
  }

  // --- dead letters ------------------------------------------------------------------------------

  function selectedLetters() {
    return $all("input.letter-select:checked").map(function (box) {
      return { topic: box.dataset.topic, partition: Number(box.dataset.partition), offset: Number(box.dataset.offset) };
    });
  }

  function updateLetterSelection() {
    const bar = $("#letter-actions");
    if (!bar) { return; }
    const count = selectedLetters().length;
    const label = $("#letter-selection-count");
    if (label) { label.textContent = count ? count + " selected" : "select dead letters to act on them"; }
    for (const button of $all("button.letter-action")) {
      button.disabled = bar.dataset.enabled !== "yes" || count === 0;
      if (bar.dataset.enabled !== "yes") { button.title = bar.dataset.why || ""; }
    }
  }

  async function runLetterAction(button) {
    const action = button.dataset.action;
    const label = button.textContent.trim();
    const letters = selectedLetters();
    // Signed in, the dashboard knows who acts; with the operator token, the page asks for a name.
    const nameField = $("#operator-name");
    const operator = nameField ? nameField.value.trim() : "";
    const note = ($("#letter-note") || { value: "" }).value.trim();
    if (!letters.length) { showResult("error", "Select at least one dead letter first."); return; }
    if (nameField && !operator) { showResult("error", "Give your name: it is kept with the letters. Nothing was done."); return; }
    if (action === "resolve" && !note) {
      showResult("error", "Say in the note why these letters need nothing more. Nothing was done.");
      return;
    }
    if (!window.confirm(label + " " + letters.length + " dead letter(s)?")) { return; }
    for (const b of $all("button.letter-action")) { b.disabled = true; }
    showResult("info", label + ": sending…");
    try {
      const body = { action: action, letters: letters, note: note };
      if (operator) { body.operator = operator; }
      const result = await postWithAuth("/api/dead-letters/actions", body);
      if (!result) { showResult("error", "No operator token given: nothing was done."); return; }
      const response = result.response;
      const answer = result.answer;
      if (response.ok) {
        const details = (answer.missing || []).map(function (m) { return "not found: " + m; });
        if (answer.replay && answer.replay.skipped) {
          for (const reason of Object.keys(answer.replay.skipped)) {
            details.push(answer.replay.skipped[reason] + " skipped: " + reason);
          }
        }
        showResult(answer.done ? "success" : "error",
          label + ": " + answer.done + " of " + answer.asked + " done. Reload the page to see them handled.", details);
        for (const box of $all("input.letter-select:checked")) { box.checked = false; }
      } else {
        showResult("error", label + " failed: " + (answer.error || response.statusText), answer.problems || []);
      }
    } catch (err) {
      showResult("error", label + " failed: the dashboard did not answer (" + err + "). Reload to see what was done.");
    } finally {
      updateLetterSelection();
    }
  }

  // --- status key --------------------------------------------------------------------------------

  async function refreshHealth() {
    const table = $("#status-key");
    if (!table || document.hidden) { return; }
    try {
      // A background refresh: it does not keep a signed-in session from ending when idle.
      const response = await fetch("/api/health", { credentials: "same-origin", headers: { "X-Ordersync-Background": "1" } });
      if (!response.ok) { return; }
      const answer = await response.json();
      for (const h of answer.health || []) {
        const row = $all("tr[data-account]", table).find(function (r) {
          return r.dataset.account === h.channel + "|" + h.seller_id;
        });
        const cell = row && $("td[data-api='" + h.api + "']", row);
        if (!cell) { continue; }
        const badge = $(".badge", cell);
        const reason = $(".reason", cell);
        badge.className = "badge health-" + h.colour.toLowerCase();
        badge.textContent = h.colour;
        reason.textContent = h.reason;
      }
    } catch (e) {
      // A missed refresh is retried on the next tick; the page keeps what it shows.
    }
  }

  // --- wiring ------------------------------------------------------------------------------------

  // --- alerts ------------------------------------------------------------------------------------

  async function runAlertAction(button) {
    const action = button.dataset.alertAction;
    const body = { fingerprint: button.dataset.fingerprint, action: action };
    if (!csrfToken()) {
      // Without accounts, who acts is named by hand.
      const operator = ($("#operator-name") || { value: "" }).value.trim() || window.prompt("Your name (kept with the alert)");
      if (!operator) { showResult("error", "Give your name: it is kept with the alert. Nothing was done."); return; }
      body.operator = operator.trim();
    }
    if (action === "snooze") { body.snooze_s = parseInt(button.dataset.snoozeS, 10); }
    button.disabled = true;
    try {
      const result = await postWithAuth("/api/alerts/actions", body);
      if (!result) {
        button.disabled = false;
        showResult("error", "No operator token given: nothing was done.");
        return;
      }
      const response = result.response;
      const answer = result.answer;
      if (response.ok) {
        window.location.reload();
      } else {
        button.disabled = false;
        showResult("error", "The alert was not changed: " + (answer.error || response.statusText));
      }
    } catch (err) {
      button.disabled = false;
      showResult("error", "The dashboard did not answer: nothing was changed.");
    }
  }

  // Synchronize now: the stage that owns the task runs it at once; the row's "Next run" and "Last run"
  // show it after a reload.
  async function runTaskNow(button) {
    const task = button.dataset.runTask;
    const channel = button.dataset.channel;
    const body = { task: task, channel: channel };
    if (!csrfToken()) {
      const operator = window.prompt("Your name (kept with the request)");
      if (!operator || !operator.trim()) { showResult("error", "Give your name: nothing was asked."); return; }
      body.operator = operator.trim();
    }
    button.disabled = true;
    try {
      const result = await postWithAuth("/api/tasks/run", body);
      if (!result) {
        showResult("error", "No operator token given: nothing was asked.");
        return;
      }
      const answer = result.answer;
      if (result.response.ok) {
        showResult("success", task + " on " + channel + ": run asked of " + answer.stage + " (event " + answer.event_id + ").");
      } else {
        showResult("error", task + " on " + channel + " not asked: " + (answer.error || result.response.statusText));
      }
    } catch (err) {
      showResult("error", "The dashboard did not answer: nothing was asked.");
    } finally {
      button.disabled = false;
    }
  }

  // Listings: a whole CSV, or one row fixed by hand; the page reloads to show what Redis now has.
  async function sendListings(url, body, what) {
    const result = await postWithAuth(url, body);
    if (!result) {
      showResult("error", "No operator token given: nothing was loaded.");
      return;
    }
    const answer = result.answer;
    if (result.response.ok) {
      showResult("success", what + ": " + answer.loaded + " listing(s) loaded.");
      window.setTimeout(function () { window.location.reload(); }, 800);
    } else {
      showResult("error", what + " refused: " + (answer.error || result.response.statusText), answer.problems || []);
    }
  }

  function listingsChannel() {
    const box = $("#listing-actions");
    return box ? box.dataset.channel : "";
  }

  async function uploadListings() {
    const input = $("#listings-file");
    const file = input && input.files ? input.files[0] : null;
    if (!file) { showResult("error", "Choose a listings CSV first."); return; }
    const text = await file.text();
    await sendListings("/api/listings/upload", { channel: listingsChannel(), csv: text }, file.name);
  }

  async function saveListing(event) {
    event.preventDefault();
    const form = event.target;
    const row = {};
    for (const field of $all("input[name]", form)) {
      if (field.value.trim()) { row[field.name] = field.value.trim(); }
    }
    await sendListings("/api/listings/row", { channel: listingsChannel(), row: row }, "Listing " + (row["Merchant SKU"] || ""));
  }

  function editListing(button) {
    const tr = button.closest("tr");
    const form = $("#listing-row");
    if (!tr || !form) { return; }
    const cell = function (field) {
      const td = tr.querySelector("td[data-field='" + field + "']");
      return td ? td.textContent.trim() : "";
    };
    form.elements["Merchant SKU"].value = cell("seller_sku");
    form.elements["Client SKU Id"].value = cell("stock_code");
    form.elements["ASIN"].value = cell("asin");
    form.elements["EAN"].value = cell("ean");
    form.elements["Client SKU Id"].focus();
  }

  // --- channels (admins) -------------------------------------------------------------------------

  async function sendChannel(url, body, what, reload) {
    const result = await postWithAuth(url, body);
    if (!result) { showResult("error", "Not signed in: nothing was changed."); return null; }
    const answer = result.answer;
    if (!result.response.ok) {
      showResult("error", what + " refused: " + (answer.error || result.response.statusText), answer.problems || []);
      return null;
    }
    if (reload) {
      showResult("success", what + ": done.");
      window.setTimeout(function () { window.location.reload(); }, 800);
    }
    return answer;
  }

  function rowChannel(button) {
    const tr = button.closest("tr[data-channel]");
    return tr ? tr.dataset.channel : "";
  }

  async function saveChannel(event) {
    event.preventDefault();
    const form = event.target;
    const text = form.elements["yaml"].value;
    let name = form.dataset.channel;
    if (!name) {
      const found = /^name:\s*["']?([a-z0-9][a-z0-9._-]*)/m.exec(text);
      name = found ? found[1] : "";
    }
    const credentials = {};
    for (const field of ["client_id", "client_secret", "refresh_token"]) {
      const input = form.elements[field];
      if (input && input.value.trim()) { credentials[field] = input.value.trim(); }
    }
    const answer = await sendChannel("/api/channels/save", { name: name, yaml: text, credentials: credentials }, "Channel " + name, true);
    if (answer) { for (const input of $all("input[type=password]", form)) { input.value = ""; } }
  }

  async function testChannel(button) {
    const name = rowChannel(button);
    button.disabled = true;
    try {
      const answer = await sendChannel("/api/channels/test", { name: name }, "Test of " + name, false);
      if (answer) {
        showResult(answer.ok ? "success" : "error", "Test of " + name + ": " + (answer.ok ? "OK" : "FAILED"), answer.lines || []);
      }
    } finally { button.disabled = false; }
  }

  async function discoverChannel(button) {
    const form = button.closest("form");
    const box = form.parentElement.querySelector(".discovered");
    const name = form.dataset.channel;
    button.disabled = true;
    try {
      const answer = await sendChannel("/api/channels/discover", { name: name, yaml: form.elements["yaml"].value }, "Discovery for " + name, false);
      if (!answer || !box) { return; }
      box.textContent = "";
      const list = document.createElement("ul");
      for (const p of answer.participations) {
        const item = document.createElement("li");
        item.textContent = p.marketplace_id + " " + p.name + " (" + p.country_code + "): " + (p.participating ? "participating" : "not participating") + (p.suspended_listings ? ", listings suspended" : "");
        list.appendChild(item);
      }
      box.appendChild(list);
      if (answer.yaml) {
        const use = document.createElement("button");
        use.type = "button";
        use.textContent = "Use the participating marketplaces";
        use.addEventListener("click", function () { form.elements["yaml"].value = answer.yaml; });
        box.appendChild(use);
      }
    } finally { button.disabled = false; }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const all = $("#select-all");
    if (all) {
      all.addEventListener("change", function () {
        for (const box of $all("input.row-select")) { box.checked = all.checked; }
        updateSelection();
      });
    }
    for (const box of $all("input.row-select")) { box.addEventListener("change", updateSelection); }
    for (const button of $all("button.action")) {
      button.addEventListener("click", function () { runAction(button); });
    }
    const allLetters = $("#select-all-letters");
    if (allLetters) {
      allLetters.addEventListener("change", function () {
        for (const box of $all("input.letter-select")) { box.checked = allLetters.checked; }
        updateLetterSelection();
      });
    }
    for (const box of $all("input.letter-select")) { box.addEventListener("change", updateLetterSelection); }
    for (const button of $all("button.letter-action")) {
      button.addEventListener("click", function () { runLetterAction(button); });
    }
    for (const button of $all("button.alert-action")) {
      button.addEventListener("click", function () { runAlertAction(button); });
    }
    for (const button of $all("button.task-run")) {
      button.addEventListener("click", function () { runTaskNow(button); });
    }
    const upload = $("#listings-upload");
    if (upload) { upload.addEventListener("click", uploadListings); }
    const rowForm = $("#listing-row");
    if (rowForm) { rowForm.addEventListener("submit", saveListing); }
    for (const button of $all("button.listing-edit")) {
      button.addEventListener("click", function () { editListing(button); });
    }
    for (const form of $all("form.channel-form")) { form.addEventListener("submit", saveChannel); }
    for (const button of $all("button.channel-active")) {
      button.addEventListener("click", function () {
        sendChannel("/api/channels/active", { name: rowChannel(button), active: button.dataset.active === "true" }, button.textContent + " " + rowChannel(button), true);
      });
    }
    for (const button of $all("button.channel-revert")) {
      button.addEventListener("click", function () {
        sendChannel("/api/channels/revert", { name: rowChannel(button) }, "Removing the dashboard changes of " + rowChannel(button), true);
      });
    }
    for (const button of $all("button.channel-test")) {
      button.addEventListener("click", function () { testChannel(button); });
    }
    for (const button of $all("button.channel-discover")) {
      button.addEventListener("click", function () { discoverChannel(button); });
    }
    // To Amazon by navigation, not as a form's submission: the page's form-action 'self' would stop
    // the redirect to Seller Central.
    const authorize = $("#authorize-form");
    if (authorize) {
      authorize.addEventListener("submit", function (event) {
        event.preventDefault();
        const query = new URLSearchParams(new FormData(authorize)).toString();
        window.location.assign("/channels/authorize?" + query);
      });
    }
    updateLetterSelection();
    const form = $("#filters");
    if (form) {
      for (const control of $all("[data-autosubmit]", form)) {
        control.addEventListener("change", function () {
          const offset = form.querySelector("input[name=offset]");
          if (offset) { offset.remove(); }
          form.requestSubmit();
        });
      }
      // Empty fields stay out of the address, so links and the CSV export carry only real filters.
      form.addEventListener("submit", function () {
        for (const field of $all("input[name], select[name]", form)) {
          if (!field.value) { field.disabled = true; }
        }
      });
    }
    if (sessionStorage.getItem(TOKEN_KEY) && $("#remember-token")) {
      $("#remember-token").checked = true;
    }
    updateSelection();
    document.addEventListener("keydown", onKey);
    // A phone shows the orders first: the filters fold away behind their toggle.
    const filtersBox = $("#filters-box");
    if (filtersBox && window.matchMedia("(max-width: 480px)").matches && !$("#query-error")) {
      filtersBox.open = false;
    }
    window.setInterval(refreshHealth, HEALTH_REFRESH_MS);
  });

  // Back to a page from the history: the fields disabled for the submit are usable again.
  window.addEventListener("pageshow", function () {
    for (const field of $all("#filters [disabled]")) { field.disabled = false; }
  });
})();
