// flotilla web UI: plain JavaScript, no dependencies, no build step.
// Every page is rendered from the JSON API under /api/v6.
"use strict";

(function () {
  var API = "/api/v6";
  var API_V7 = "/api/v7";
  var TOKEN_KEY = "flotilla_token";
  var OWNER_COOKIE = "flotilla_owner";
  var PAGE_SIZE = 20;
  var ACTIVE = ["QUEUED", "PENDING", "RUNNING"];
  var ALL_STATUSES = ["QUEUED", "PENDING", "RUNNING", "NEEDS_RETRY", "STOPPED"];
  var authMode = document.body.getAttribute("data-auth") || "none";
  var main = document.getElementById("main");
  var timers = [];

  // ---------- small helpers ----------

  // h("tag", {attr: value, onclick: fn}, child...) builds an element; text
  // children are text nodes, so nothing from the API is parsed as HTML.
  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (k) {
        var v = attrs[k];
        if (v === null || v === undefined || v === false) return;
        if (k.slice(0, 2) === "on" && typeof v === "function") {
          el.addEventListener(k.slice(2), v);
        } else if (k === "text") {
          el.textContent = v;
        } else if (k === "value") {
          el.value = v;
        } else if (v === true) {
          el.setAttribute(k, "");
        } else {
          el.setAttribute(k, String(v));
        }
      });
    }
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }

  // append(el, child...) adds children (arrays are flattened).
  function append(el, child) {
    if (arguments.length > 2) {
      for (var i = 1; i < arguments.length; i++) append(el, arguments[i]);
      return;
    }
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) {
      child.forEach(function (c) { append(el, c); });
    } else if (typeof child === "object") {
      el.appendChild(child);
    } else {
      el.appendChild(document.createTextNode(String(child)));
    }
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
  }

  function setMain() {
    timers.forEach(function (t) { clearInterval(t); });
    timers = [];
    clear(main);
    for (var i = 0; i < arguments.length; i++) append(main, arguments[i]);
  }

  function banner(message, kind) {
    var b = document.getElementById("banner");
    if (!message) {
      b.hidden = true;
      b.textContent = "";
      return;
    }
    b.className = "banner " + (kind || "error");
    b.textContent = message;
    b.hidden = false;
  }

  function fmtTime(s) {
    if (!s) return "—";
    var d = new Date(s);
    if (isNaN(d.getTime())) return s;
    return d.toLocaleString();
  }

  function duration(run) {
    if (!run.started_at) return "—";
    var end = run.finished_at ? new Date(run.finished_at) : new Date();
    var secs = Math.max(0, Math.round((end - new Date(run.started_at)) / 1000));
    var m = Math.floor(secs / 60), s = secs % 60;
    var hh = Math.floor(m / 60);
    m = m % 60;
    return (hh ? hh + "h " : "") + (hh || m ? m + "m " : "") + s + "s";
  }

  function orDash(v) {
    return v === null || v === undefined || v === "" ? "—" : String(v);
  }

  function getCookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return "";
  }

  function setCookie(name, value) {
    document.cookie = name + "=" + encodeURIComponent(value) +
      "; path=/; max-age=31536000; SameSite=Lax";
  }

  function query() {
    return new URLSearchParams(location.search);
  }

  // Replaces the page's query string (so reload and back keep filters).
  function setQuery(params) {
    var s = params.toString();
    history.replaceState(null, "", location.pathname + (s ? "?" + s : ""));
  }

  // The badge of a run: flotilla-os shows SUCCESS/FAILED for stopped runs.
  function displayStatus(run) {
    if (run.status !== "STOPPED") return run.status;
    if (run.exit_code === 0) return "SUCCESS";
    if (run.failure === "terminated") return "STOPPED";
    return "FAILED";
  }

  function badge(run) {
    var s = displayStatus(run);
    return h("span", { "class": "badge badge-" + s.toLowerCase(), "data-status": s, text: s });
  }

  function isActive(run) {
    return run.status !== "STOPPED";
  }

  // ---------- API ----------

  function token() {
    try { return localStorage.getItem(TOKEN_KEY) || ""; } catch (e) { return ""; }
  }

  function headers(extra) {
    var hd = extra || {};
    var t = token();
    if (t) hd["Authorization"] = "Bearer " + t;
    return hd;
  }

  function ApiError(status, message) {
    this.status = status;
    this.message = message;
  }

  function api(method, path, body, base) {
    var opts = { method: method, headers: headers({ "Accept": "application/json" }) };
    if (body !== undefined) {
      opts.body = JSON.stringify(body);
      opts.headers["Content-Type"] = "application/json";
    }
    return fetch((base || API) + path, opts).then(function (resp) {
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!resp.ok) {
          var msg = data && data.error ? data.error : (text || resp.statusText || "request failed");
          if (resp.status === 401 && authMode === "tokens") {
            showLogin("The server did not accept the token: " + msg);
          }
          throw new ApiError(resp.status, msg);
        }
        return data;
      });
    }, function (e) {
      throw new ApiError(0, "cannot reach the server: " + e.message);
    });
  }

  // Shows an API error as a readable message.
  function fail(e) {
    if (e && e.status === 401 && authMode === "tokens") return;
    var msg = e && e.message ? e.message : String(e);
    var prefix = e && e.status ? "Error " + e.status + ": " : "Error: ";
    banner(prefix + msg);
  }

  // ---------- confirmation dialog ----------

  function confirmAction(text, okLabel) {
    var dlg = document.getElementById("confirm");
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = okLabel || "OK";
    return new Promise(function (resolve) {
      function done() {
        dlg.removeEventListener("close", done);
        resolve(dlg.returnValue === "ok");
      }
      dlg.returnValue = "cancel";
      dlg.addEventListener("close", done);
      dlg.showModal();
      document.getElementById("confirm-cancel").focus();
    });
  }

  // ---------- authentication ----------

  function renderWho() {
    var who = document.getElementById("who");
    clear(who);
    if (authMode !== "tokens") return;
    if (token()) {
      append(who, h("button", {
        type: "button", "class": "link", id: "sign-out",
        onclick: function () {
          localStorage.removeItem(TOKEN_KEY);
          location.reload();
        }
      }, "Sign out"));
    }
  }

  function showLogin(message) {
    banner(message || "");
    var input = h("input", {
      id: "token", name: "token", type: "password", autocomplete: "current-password",
      required: true, "aria-describedby": "token-help"
    });
    var form = h("form", {
      id: "login-form", "class": "card narrow", novalidate: true,
      onsubmit: function (ev) {
        ev.preventDefault();
        var v = input.value.trim();
        if (!v) {
          document.getElementById("err-token").textContent = "Enter your API token.";
          input.setAttribute("aria-invalid", "true");
          return;
        }
        localStorage.setItem(TOKEN_KEY, v);
        banner("");
        route();
      }
    },
      h("h1", null, "Sign in"),
      h("div", { "class": "field" },
        h("label", { "for": "token" }, "API token"),
        input,
        h("p", { id: "token-help", "class": "help" },
          "Stored in this browser only and sent as a Bearer token to the API."),
        h("p", { id: "err-token", "class": "field-error", "aria-live": "polite" })),
      h("div", { "class": "actions" }, h("button", { type: "submit", id: "sign-in" }, "Sign in")));
    localStorage.removeItem(TOKEN_KEY);
    renderWho();
    setMain(form);
    input.focus();
  }

  // ---------- pages ----------

  // capped: the server stopped counting at `total` (at least that many).
  function pager(total, offset, limit, go, capped) {
    var from = total === 0 ? 0 : offset + 1;
    var to = Math.min(total, offset + limit);
    return h("nav", { "class": "pager", "aria-label": "Pages" },
      h("button", {
        type: "button", "class": "secondary", id: "prev-page", disabled: offset <= 0,
        onclick: function () { go(Math.max(0, offset - limit)); }
      }, "‹ Previous"),
      h("span", { "class": "muted", "aria-live": "polite" }, from + "–" + to + " of " + total + (capped ? "+" : "")),
      h("button", {
        type: "button", "class": "secondary", id: "next-page", disabled: offset + limit >= total,
        onclick: function () { go(offset + limit); }
      }, "Next ›"));
  }

  function sortHeader(label, field, state, go) {
    var active = state.sort_by === field;
    var dir = active ? state.order : "none";
    return h("th", {
      scope: "col",
      "aria-sort": active ? (state.order === "asc" ? "ascending" : "descending") : "none"
    }, h("button", {
      type: "button", "class": "sort", "data-sort": field,
      onclick: function () {
        var order = active && state.order === "asc" ? "desc" : "asc";
        go(field, order);
      }
    }, label, h("span", { "class": "arrow", "aria-hidden": "true" },
      dir === "asc" ? " ▲" : dir === "desc" ? " ▼" : "")));
  }

  // Definitions list.
  function definitionsPage() {
    document.title = "Definitions · flotilla";
    var q = query();
    var state = {
      alias: q.get("alias") || "",
      group_name: q.get("group_name") || "",
      image: q.get("image") || "",
      sort_by: q.get("sort_by") || "alias",
      order: q.get("order") || "asc",
      offset: parseInt(q.get("offset") || "0", 10) || 0
    };
    var results = h("div", { id: "definitions-results" }, h("p", { "class": "muted" }, "Loading…"));
    var aliasInput = h("input", { id: "filter-alias", type: "search", value: state.alias, placeholder: "alias contains…" });
    var groupSelect = h("select", { id: "filter-group" }, h("option", { value: "" }, "Any group"));
    var imageInput = h("input", { id: "filter-image", type: "search", value: state.image, placeholder: "image contains…" });
    var debounce = null;

    function load() {
      var p = new URLSearchParams();
      ["alias", "group_name", "image"].forEach(function (k) { if (state[k]) p.set(k, state[k]); });
      if (state.sort_by !== "alias") p.set("sort_by", state.sort_by);
      if (state.order !== "asc") p.set("order", state.order);
      if (state.offset) p.set("offset", String(state.offset));
      setQuery(p);
      var api_q = new URLSearchParams(p);
      api_q.set("sort_by", state.sort_by);
      api_q.set("order", state.order);
      api_q.set("limit", String(PAGE_SIZE));
      api_q.set("offset", String(state.offset));
      api("GET", "/task?" + api_q.toString()).then(function (data) {
        banner("");
        renderRows(data);
      }, fail);
    }

    function resort(field, order) {
      state.sort_by = field;
      state.order = order;
      state.offset = 0;
      load();
    }

    function renderRows(data) {
      clear(results);
      if (!data.definitions.length) {
        append(results, h("p", { "class": "empty" }, state.alias || state.image || state.group_name
          ? "No definition matches these filters." : "No definitions yet. Create one to get started."));
      } else {
        append(results, h("div", { "class": "table-wrap" }, h("table", { id: "definitions-table" },
          h("caption", { "class": "sr-only" }, "Definitions"),
          h("thead", null, h("tr", null,
            sortHeader("Alias", "alias", state, resort),
            sortHeader("Group", "group_name", state, resort),
            sortHeader("Image", "image", state, resort),
            sortHeader("Memory", "memory", state, resort),
            h("th", { scope: "col" }, "CPU"))),
          h("tbody", null, data.definitions.map(function (d) {
            return h("tr", { "data-alias": d.alias },
              h("td", { "data-label": "Alias" }, h("a", { href: "/definitions/" + encodeURIComponent(d.definition_id) }, d.alias)),
              h("td", { "data-label": "Group" }, orDash(d.group_name)),
              h("td", { "data-label": "Image", "class": "mono" }, d.image),
              h("td", { "data-label": "Memory" }, d.memory ? d.memory + " MiB" : "—"),
              h("td", { "data-label": "CPU" }, d.cpu ? d.cpu + " m" : "—"));
          })))));
      }
      append(results, pager(data.total, state.offset, PAGE_SIZE, function (o) { state.offset = o; load(); }));
    }

    function onFilter() {
      clearTimeout(debounce);
      debounce = setTimeout(function () {
        state.alias = aliasInput.value.trim();
        state.image = imageInput.value.trim();
        state.group_name = groupSelect.value;
        state.offset = 0;
        load();
      }, 250);
    }
    aliasInput.addEventListener("input", onFilter);
    imageInput.addEventListener("input", onFilter);
    groupSelect.addEventListener("change", onFilter);

    setMain(
      h("div", { "class": "page-head" },
        h("h1", null, "Definitions"),
        h("a", { "class": "button", href: "/definitions/new", id: "new-definition" }, "New definition")),
      h("form", { "class": "filters", role: "search", onsubmit: function (ev) { ev.preventDefault(); onFilter(); } },
        h("div", { "class": "field" }, h("label", { "for": "filter-alias" }, "Alias"), aliasInput),
        h("div", { "class": "field" }, h("label", { "for": "filter-group" }, "Group"), groupSelect),
        h("div", { "class": "field" }, h("label", { "for": "filter-image" }, "Image"), imageInput)),
      results);
    api("GET", "/groups?limit=500").then(function (g) {
      (g.groups || []).forEach(function (name) {
        append(groupSelect, h("option", { value: name, selected: name === state.group_name }, name));
      });
    }, function () { /* groups are optional for the filter */ });
    load();
  }

  // ---------- definition form ----------

  function envRow(container, name, value, prefix) {
    var idx = container.getAttribute("data-next") || "0";
    container.setAttribute("data-next", String(parseInt(idx, 10) + 1));
    var nameId = prefix + "-name-" + idx, valueId = prefix + "-value-" + idx;
    var row = h("div", { "class": "env-row" },
      h("label", { "for": nameId, "class": "sr-only" }, "Variable name"),
      h("input", { id: nameId, "class": "env-name mono", placeholder: "NAME", value: name || "", autocomplete: "off" }),
      h("label", { "for": valueId, "class": "sr-only" }, "Value"),
      h("input", { id: valueId, "class": "env-value mono", placeholder: "value", value: value || "", autocomplete: "off" }),
      h("button", {
        type: "button", "class": "secondary small", "aria-label": "Remove variable " + (name || ""),
        onclick: function () { row.parentNode.removeChild(row); }
      }, "Remove"));
    container.appendChild(row);
    return row;
  }

  function envEditor(prefix, env) {
    var rows = h("div", { "class": "env-rows", id: prefix + "-rows" });
    (env || []).forEach(function (e) { envRow(rows, e.name, e.value, prefix); });
    var add = h("button", {
      type: "button", "class": "secondary small", id: prefix + "-add",
      onclick: function () {
        var row = envRow(rows, "", "", prefix);
        row.querySelector("input").focus();
      }
    }, "Add variable");
    return { rows: rows, add: add };
  }

  function readEnv(rows) {
    var out = [];
    Array.prototype.forEach.call(rows.querySelectorAll(".env-row"), function (r) {
      var n = r.querySelector(".env-name").value.trim();
      var v = r.querySelector(".env-value").value;
      if (n || v) out.push({ name: n, value: v });
    });
    return out;
  }

  function field(id, label, control, help) {
    control.setAttribute("aria-describedby", (help ? "help-" + id + " " : "") + "err-" + id);
    return h("div", { "class": "field", id: "field-" + id },
      h("label", { "for": id }, label),
      control,
      help ? h("p", { "class": "help", id: "help-" + id }, help) : null,
      h("p", { "class": "field-error", id: "err-" + id, "aria-live": "polite" }));
  }

  function clearFieldErrors(form) {
    Array.prototype.forEach.call(form.querySelectorAll(".field-error"), function (e) { e.textContent = ""; });
    Array.prototype.forEach.call(form.querySelectorAll("[aria-invalid]"), function (e) { e.removeAttribute("aria-invalid"); });
  }

  // Puts "field: message" errors next to their field; returns whether it could.
  function showFieldError(form, message, known) {
    var m = /^([A-Za-z_]+)(\[\d+\])?(\.[A-Za-z_]+)?:\s*(.*)$/.exec(message || "");
    if (!m || known.indexOf(m[1]) < 0) return false;
    var el = form.querySelector("#err-" + m[1]);
    if (!el) return false;
    el.textContent = message;
    var input = form.querySelector("#" + m[1]);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
    return true;
  }

  function intOrNull(v, name, errors) {
    v = String(v || "").trim();
    if (!v) return null;
    if (!/^\d+$/.test(v)) {
      errors.push(name + ": must be a whole number");
      return null;
    }
    return parseInt(v, 10);
  }

  function definitionForm(existing) {
    var editing = !!existing;
    var d = existing || { alias: "", group_name: "", image: "", command: "", env: [], tags: [] };
    document.title = (editing ? "Edit " + d.alias : "New definition") + " · flotilla";
    var env = envEditor("env", d.env);
    var inputs = {
      alias: h("input", { id: "alias", name: "alias", required: true, value: d.alias, autocomplete: "off", readonly: editing }),
      group_name: h("input", { id: "group_name", name: "group_name", value: d.group_name || "", autocomplete: "off" }),
      image: h("input", { id: "image", name: "image", required: true, value: d.image, "class": "mono", autocomplete: "off" }),
      command: h("textarea", { id: "command", name: "command", rows: "6", "class": "mono", spellcheck: "false" }),
      memory: h("input", { id: "memory", name: "memory", inputmode: "numeric", value: d.memory == null ? "" : d.memory }),
      cpu: h("input", { id: "cpu", name: "cpu", inputmode: "numeric", value: d.cpu == null ? "" : d.cpu }),
      gpu: h("input", { id: "gpu", name: "gpu", inputmode: "numeric", value: d.gpu == null ? "" : d.gpu }),
      tags: h("input", { id: "tags", name: "tags", value: (d.tags || []).join(", "), autocomplete: "off" })
    };
    inputs.command.value = d.command || "";
    var known = ["alias", "group_name", "image", "command", "memory", "cpu", "gpu", "env", "tags"];
    var form = h("form", { id: "definition-form", "class": "card", novalidate: true });
    append(form,
      field("alias", "Alias", inputs.alias, editing ? "The alias names the definition and cannot change." : "Unique name, e.g. nightly-report."),
      field("group_name", "Group", inputs.group_name),
      field("image", "Image", inputs.image, "Container image, e.g. python:3.12-slim."),
      field("command", "Command", inputs.command, "Run with /bin/sh -c."),
      h("div", { "class": "row3" },
        field("memory", "Memory (MiB)", inputs.memory),
        field("cpu", "CPU (millicores)", inputs.cpu),
        field("gpu", "GPU", inputs.gpu)),
      h("fieldset", { "class": "field", id: "field-env" },
        h("legend", null, "Environment"),
        env.rows, env.add,
        h("p", { "class": "field-error", id: "err-env", "aria-live": "polite" })),
      field("tags", "Tags", inputs.tags, "Comma separated."),
      h("div", { "class": "actions" },
        h("a", { "class": "button secondary", href: editing ? "/definitions/" + encodeURIComponent(d.definition_id) : "/definitions" }, "Cancel"),
        h("button", { type: "submit", id: "save-definition" }, editing ? "Save changes" : "Create definition")));

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      clearFieldErrors(form);
      banner("");
      var errors = [];
      var body = {
        alias: inputs.alias.value.trim(),
        group_name: inputs.group_name.value.trim(),
        image: inputs.image.value.trim(),
        command: inputs.command.value,
        memory: intOrNull(inputs.memory.value, "memory", errors),
        cpu: intOrNull(inputs.cpu.value, "cpu", errors),
        gpu: intOrNull(inputs.gpu.value, "gpu", errors),
        env: readEnv(env.rows),
        tags: inputs.tags.value.split(",").map(function (t) { return t.trim(); }).filter(Boolean)
      };
      if (!body.alias) errors.push("alias: required");
      if (!body.image) errors.push("image: required");
      body.env.forEach(function (e, i) { if (!e.name) errors.push("env[" + i + "].name: required"); });
      if (errors.length) {
        errors.slice().reverse().forEach(function (m) { showFieldError(form, m, known); });
        return;
      }
      ["memory", "cpu", "gpu"].forEach(function (k) { if (body[k] === null) delete body[k]; });
      if (!body.command.trim()) delete body.command;
      var save = form.querySelector("#save-definition");
      save.disabled = true;
      var req = editing
        ? api("PUT", "/task/" + encodeURIComponent(d.definition_id), body)
        : api("POST", "/task", body);
      req.then(function (def) {
        location.href = "/definitions/" + encodeURIComponent(def.definition_id);
      }, function (e) {
        save.disabled = false;
        if (!(e && e.status === 400 && showFieldError(form, e.message, known))) fail(e);
      });
    });

    setMain(
      h("nav", { "class": "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/definitions" }, "Definitions"), " / ",
        editing ? d.alias : "New"),
      h("h1", null, editing ? "Edit " + d.alias : "New definition"),
      form);
    (editing ? inputs.image : inputs.alias).focus();
  }

  function newDefinitionPage() {
    definitionForm(null);
  }

  function editDefinitionPage(id) {
    api("GET", "/task/" + encodeURIComponent(id)).then(definitionForm, fail);
  }

  // ---------- definition detail + run form ----------

  function dl(pairs) {
    return h("dl", { "class": "fields" }, pairs.map(function (p) {
      return [h("dt", null, p[0]), h("dd", p[2] ? { "class": p[2], "data-field": p[3] || null } : { "data-field": p[3] || null }, p[1])];
    }));
  }

  function envList(env) {
    if (!env || !env.length) return "—";
    return h("ul", { "class": "env-list mono" }, env.map(function (e) {
      return h("li", null, e.name + "=" + e.value);
    }));
  }

  function runsTable(runs, id) {
    if (!runs.length) return h("p", { "class": "empty" }, "No runs.");
    return h("div", { "class": "table-wrap" }, h("table", { id: id },
      h("thead", null, h("tr", null,
        ["Status", "Run", "Alias", "Cluster", "Owner", "Queued", "Duration"].map(function (c) {
          return h("th", { scope: "col" }, c);
        }))),
      h("tbody", null, runs.map(function (r) {
        return h("tr", { "data-run-id": r.run_id, "data-alias": r.alias },
          h("td", { "data-label": "Status" }, badge(r)),
          h("td", { "data-label": "Run", "class": "mono" }, h("a", { href: "/runs/" + encodeURIComponent(r.run_id) }, r.run_id.slice(-12))),
          h("td", { "data-label": "Alias" }, r.alias),
          h("td", { "data-label": "Cluster" }, r.cluster),
          h("td", { "data-label": "Owner" }, orDash(r.owner)),
          h("td", { "data-label": "Queued" }, fmtTime(r.queued_at)),
          h("td", { "data-label": "Duration" }, duration(r)));
      }))));
  }

  function userEnv(env) {
    return (env || []).filter(function (e) { return e.name.indexOf("FLOTILLA_") !== 0; });
  }

  function runForm(def, clusters, from) {
    var src = from || def;
    var env = envEditor("run-env", userEnv(src.env));
    var cluster = h("select", { id: "run-cluster", name: "cluster" });
    var names = clusters.map(function (c) { return typeof c === "string" ? c : c.name; });
    if (from && from.cluster && names.indexOf(from.cluster) < 0) names.unshift(from.cluster);
    if (!names.length) append(cluster, h("option", { value: "" }, "default"));
    names.forEach(function (n) {
      append(cluster, h("option", { value: n, selected: from ? n === from.cluster : n === "default" }, n));
    });
    var command = h("textarea", { id: "run-command", rows: "4", "class": "mono", spellcheck: "false" });
    command.value = src.command || "";
    var memory = h("input", { id: "run-memory", inputmode: "numeric", value: src.memory == null ? "" : src.memory });
    var cpu = h("input", { id: "run-cpu", inputmode: "numeric", value: src.cpu == null ? "" : src.cpu });
    var owner = h("input", { id: "run-owner", autocomplete: "username", value: (from && from.owner) || getCookie(OWNER_COOKIE) });
    var known = ["cluster", "command", "memory", "cpu", "env", "owner"];
    var form = h("form", { id: "run-form", "class": "card", novalidate: true });
    // Field errors use ids err-<name>; map API names onto the run form's.
    append(form,
      h("h2", { id: "run" }, from ? "Retry run" : "Run"),
      from ? h("p", { "class": "help" }, "Prefilled from run " + from.run_id + ".") : null,
      h("div", { "class": "row2" },
        field("run-cluster", "Cluster", cluster),
        authMode === "tokens" ? null : field("run-owner", "Owner", owner, "Remembered in this browser.")),
      field("run-command", "Command", command),
      h("div", { "class": "row2" },
        field("run-memory", "Memory (MiB)", memory),
        field("run-cpu", "CPU (millicores)", cpu)),
      h("fieldset", { "class": "field" },
        h("legend", null, "Environment overrides"),
        env.rows, env.add,
        h("p", { "class": "field-error", id: "err-run-env", "aria-live": "polite" })),
      h("div", { "class": "actions" }, h("button", { type: "submit", id: "run-submit" }, "Run")));

    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      clearFieldErrors(form);
      banner("");
      var errors = [];
      var body = {
        env: readEnv(env.rows),
        command: command.value,
        memory: intOrNull(memory.value, "memory", errors),
        cpu: intOrNull(cpu.value, "cpu", errors)
      };
      if (cluster.value) body.cluster = cluster.value;
      if (authMode !== "tokens") {
        var o = owner.value.trim();
        if (!o) errors.push("owner: required (who runs this)");
        body.run_tags = { owner_id: o };
      }
      body.env.forEach(function (e, i) { if (!e.name) errors.push("env[" + i + "].name: required"); });
      var mapErr = function (msg) {
        var m = /^(run_tags\.owner_id|owner_id|[a-z_]+)/.exec(msg);
        var key = m ? m[1] : "";
        if (key === "run_tags.owner_id" || key === "owner_id" || key === "run_tags") key = "owner";
        if (known.indexOf(key) < 0) return false;
        var el = form.querySelector("#err-run-" + key);
        if (!el) return false;
        el.textContent = msg;
        var input = form.querySelector("#run-" + key);
        if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
        return true;
      };
      if (errors.length) {
        errors.slice().reverse().forEach(mapErr);
        return;
      }
      ["memory", "cpu"].forEach(function (k) { if (body[k] === null) delete body[k]; });
      if (!body.command.trim()) delete body.command;
      if (body.run_tags) setCookie(OWNER_COOKIE, body.run_tags.owner_id);
      var submit = form.querySelector("#run-submit");
      submit.disabled = true;
      api("PUT", "/task/" + encodeURIComponent(def.definition_id) + "/execute", body).then(function (run) {
        location.href = "/runs/" + encodeURIComponent(run.run_id);
      }, function (e) {
        submit.disabled = false;
        if (!(e && e.status === 400 && mapErr(e.message))) fail(e);
      });
    });
    return form;
  }

  function definitionPage(id) {
    var retry = query().get("retry");
    Promise.all([
      api("GET", "/task/" + encodeURIComponent(id)),
      api("GET", "/clusters").catch(function () { return { clusters: [] }; }),
      retry ? api("GET", "/history/" + encodeURIComponent(retry)) : Promise.resolve(null),
      api("GET", "/task/" + encodeURIComponent(id) + "/history?limit=10&sort_by=queued_at&order=desc")
    ]).then(function (res) {
      var d = res[0], clusters = res[1].clusters || [], from = res[2], runs = res[3].history || [];
      document.title = d.alias + " · flotilla";
      var form = runForm(d, clusters, from);
      setMain(
        h("nav", { "class": "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/definitions" }, "Definitions"), " / ", d.alias),
        h("div", { "class": "page-head" },
          h("h1", { id: "definition-alias" }, d.alias),
          h("div", { "class": "actions" },
            h("a", { "class": "button secondary", href: "/definitions/" + encodeURIComponent(id) + "/edit", id: "edit-definition" }, "Edit"),
            h("button", {
              type: "button", "class": "danger", id: "delete-definition",
              onclick: function () {
                confirmAction("Delete definition " + d.alias + "? Its runs stay in the history.", "Delete").then(function (ok) {
                  if (!ok) return;
                  api("DELETE", "/task/" + encodeURIComponent(id)).then(function () {
                    location.href = "/definitions";
                  }, fail);
                });
              }
            }, "Delete"))),
        h("div", { "class": "grid" },
          h("section", { "class": "card", "aria-labelledby": "def-fields" },
            h("h2", { id: "def-fields" }, "Definition"),
            dl([
              ["Alias", d.alias],
              ["Group", orDash(d.group_name)],
              ["Image", d.image, "mono"],
              ["Command", d.command ? h("pre", { "class": "code" }, d.command) : "—"],
              ["Memory", d.memory ? d.memory + " MiB" : "—"],
              ["CPU", d.cpu ? d.cpu + " millicores" : "—"],
              ["GPU", orDash(d.gpu)],
              ["Environment", envList(d.env)],
              ["Tags", d.tags && d.tags.length ? d.tags.join(", ") : "—"],
              ["Id", d.definition_id, "mono"],
              ["Created", fmtTime(d.created_at)],
              ["Updated", fmtTime(d.updated_at)]
            ])),
          form),
        h("section", { "aria-labelledby": "recent-runs" },
          h("div", { "class": "page-head" },
            h("h2", { id: "recent-runs" }, "Recent runs"),
            h("a", { href: "/runs?alias=" + encodeURIComponent(d.alias) + "&status=" + ALL_STATUSES.join(",") }, "All runs of " + d.alias)),
          runsTable(runs, "recent-runs-table")));
      if (from) {
        var cmd = document.getElementById("run-command");
        form.scrollIntoView();
        cmd.focus();
      }
    }, fail);
  }

  // ---------- runs list ----------

  function runsPage() {
    document.title = "Runs · flotilla";
    var q = query();
    var statuses = q.get("status") ? q.get("status").split(",").filter(Boolean) : ACTIVE.slice();
    var state = {
      statuses: statuses,
      alias: q.get("alias") || "",
      cluster: q.get("cluster_name") || "",
      owner: q.get("owner") || "",
      sort_by: q.get("sort_by") || "queued_at",
      order: q.get("order") || "desc",
      offset: parseInt(q.get("offset") || "0", 10) || 0,
      refresh: q.get("refresh") !== "off"
    };
    var results = h("div", { id: "runs-results", "aria-live": "polite" }, h("p", { "class": "muted" }, "Loading…"));
    var chips = h("div", { "class": "chips", role: "group", "aria-label": "Status" });
    ALL_STATUSES.forEach(function (s) {
      append(chips, h("button", {
        type: "button", "class": "chip", "data-status": s, "aria-pressed": state.statuses.indexOf(s) >= 0 ? "true" : "false",
        onclick: function (ev) {
          var b = ev.currentTarget;
          var on = b.getAttribute("aria-pressed") !== "true";
          b.setAttribute("aria-pressed", on ? "true" : "false");
          state.statuses = ALL_STATUSES.filter(function (x) {
            return chips.querySelector('[data-status="' + x + '"]').getAttribute("aria-pressed") === "true";
          });
          state.offset = 0;
          load();
        }
      }, s === "STOPPED" ? "STOPPED (success, failed)" : s));
    });
    var aliasIn = h("input", { id: "filter-alias", type: "search", value: state.alias, placeholder: "exact alias" });
    var clusterIn = h("input", { id: "filter-cluster", type: "search", value: state.cluster, placeholder: "cluster" });
    var ownerIn = h("input", { id: "filter-owner", type: "search", value: state.owner, placeholder: "owner" });
    var sortSel = h("select", { id: "sort-by" }, [
      ["queued_at", "Queued"], ["started_at", "Started"], ["finished_at", "Finished"],
      ["status", "Status"], ["alias", "Alias"], ["cluster_name", "Cluster"]
    ].map(function (o) { return h("option", { value: o[0], selected: o[0] === state.sort_by }, o[1]); }));
    var orderSel = h("select", { id: "sort-order" },
      h("option", { value: "desc", selected: state.order === "desc" }, "Newest first / Z–A"),
      h("option", { value: "asc", selected: state.order === "asc" }, "Oldest first / A–Z"));
    var refresh = h("input", { id: "auto-refresh", type: "checkbox", checked: state.refresh });
    var debounce = null;
    var loading = false;

    function load() {
      var p = new URLSearchParams();
      p.set("status", state.statuses.join(","));
      if (state.alias) p.set("alias", state.alias);
      if (state.cluster) p.set("cluster_name", state.cluster);
      if (state.owner) p.set("owner", state.owner);
      if (state.sort_by !== "queued_at") p.set("sort_by", state.sort_by);
      if (state.order !== "desc") p.set("order", state.order);
      if (state.offset) p.set("offset", String(state.offset));
      if (!state.refresh) p.set("refresh", "off");
      setQuery(p);
      var a = new URLSearchParams();
      state.statuses.forEach(function (s) { a.append("status", s); });
      if (state.alias) a.set("alias", state.alias);
      if (state.cluster) a.set("cluster_name", state.cluster);
      if (state.owner) a.set("owner", state.owner);
      a.set("sort_by", state.sort_by);
      a.set("order", state.order);
      a.set("limit", String(PAGE_SIZE));
      a.set("offset", String(state.offset));
      if (!state.statuses.length) {
        clear(results);
        append(results, h("p", { "class": "empty" }, "Pick at least one status."));
        return;
      }
      loading = true;
      api("GET", "/history?" + a.toString()).then(function (data) {
        loading = false;
        banner("");
        clear(results);
        append(results, data.history.length ? runsTable(data.history, "runs-table")
          : h("p", { "class": "empty" }, "No runs match these filters."));
        append(results, pager(data.total, state.offset, PAGE_SIZE, function (o) { state.offset = o; load(); }, data.total_capped));
        results.setAttribute("data-loaded", String(Date.now()));
      }, function (e) { loading = false; fail(e); });
    }

    function onFilter() {
      clearTimeout(debounce);
      debounce = setTimeout(function () {
        state.alias = aliasIn.value.trim();
        state.cluster = clusterIn.value.trim();
        state.owner = ownerIn.value.trim();
        state.sort_by = sortSel.value;
        state.order = orderSel.value;
        state.offset = 0;
        load();
      }, 250);
    }
    [aliasIn, clusterIn, ownerIn].forEach(function (i) { i.addEventListener("input", onFilter); });
    [sortSel, orderSel].forEach(function (i) { i.addEventListener("change", onFilter); });
    refresh.addEventListener("change", function () { state.refresh = refresh.checked; load(); });

    setMain(
      h("div", { "class": "page-head" }, h("h1", null, "Runs"),
        h("label", { "class": "inline", "for": "auto-refresh" }, refresh, " Auto-refresh")),
      chips,
      h("form", { "class": "filters", role: "search", onsubmit: function (ev) { ev.preventDefault(); onFilter(); } },
        h("div", { "class": "field" }, h("label", { "for": "filter-alias" }, "Alias"), aliasIn),
        h("div", { "class": "field" }, h("label", { "for": "filter-cluster" }, "Cluster"), clusterIn),
        h("div", { "class": "field" }, h("label", { "for": "filter-owner" }, "Owner"), ownerIn),
        h("div", { "class": "field" }, h("label", { "for": "sort-by" }, "Sort by"), sortSel),
        h("div", { "class": "field" }, h("label", { "for": "sort-order" }, "Order"), orderSel)),
      results);
    load();
    timers.push(setInterval(function () {
      if (state.refresh && !loading && !document.hidden) load();
    }, 3000));
  }

  // ---------- run detail ----------

  // Reads server-sent events with fetch (so the Authorization header goes
  // along) and calls on(event, data, id) for each.
  function streamSSE(url, on, signal) {
    return fetch(url, { headers: headers({ "Accept": "text/event-stream" }), signal: signal }).then(function (resp) {
      if (!resp.ok) {
        return resp.text().then(function (t) {
          var msg = t;
          try { msg = JSON.parse(t).error || t; } catch (e) { /* text */ }
          throw new ApiError(resp.status, msg);
        });
      }
      var reader = resp.body.getReader();
      var decoder = new TextDecoder();
      var buf = "";
      function dispatch(block) {
        var ev = "message", data = [], id = null;
        block.split("\n").forEach(function (line) {
          if (!line || line.charAt(0) === ":") return;
          var i = line.indexOf(":");
          var k = i < 0 ? line : line.slice(0, i);
          var v = i < 0 ? "" : line.slice(i + 1);
          if (v.charAt(0) === " ") v = v.slice(1);
          if (k === "event") ev = v;
          else if (k === "data") data.push(v);
          else if (k === "id") id = v;
        });
        if (data.length || ev !== "message") on(ev, data.join("\n"), id);
      }
      function pump() {
        return reader.read().then(function (r) {
          if (r.done) return;
          buf += decoder.decode(r.value, { stream: true }).replace(/\r\n?/g, "\n");
          var idx;
          while ((idx = buf.indexOf("\n\n")) >= 0) {
            dispatch(buf.slice(0, idx));
            buf = buf.slice(idx + 2);
          }
          return pump();
        });
      }
      return pump();
    });
  }

  function runPage(id) {
    var enc = encodeURIComponent(id);
    var details = h("div", { id: "run-details" }, h("p", { "class": "muted" }, "Loading…"));
    var timeline = h("ol", { id: "timeline", "class": "timeline" });
    var logEl = h("pre", { id: "log", "class": "log", tabindex: "0", "aria-label": "Log", "aria-live": "off" });
    var follow = h("span", { id: "follow", "class": "muted" }, "Following the log");
    var logState = h("span", { id: "log-state", "class": "muted" }, "");
    var actions = h("div", { "class": "actions", id: "run-actions" });
    var head = h("div", { "class": "page-head" }, h("h1", { id: "run-title" }, "Run"), actions);
    var following = true;
    var run = null;
    var cursor = null;
    var ended = false;
    var controller = window.AbortController ? new AbortController() : null;

    logEl.addEventListener("scroll", function () {
      var atBottom = logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 24;
      following = atBottom;
      follow.textContent = atBottom ? "Following the log" : "Paused (scroll to the bottom to follow)";
    });

    function renderRun(r) {
      run = r;
      document.title = r.alias + " " + displayStatus(r) + " · flotilla";
      clear(head.firstChild);
      append(head.firstChild, [r.alias, " ", badge(r)]);
      clear(actions);
      if (isActive(r)) {
        append(actions, h("button", {
          type: "button", "class": "danger", id: "stop-run",
          onclick: function () {
            confirmAction("Stop run " + r.run_id + " of " + r.alias + "?", "Stop run").then(function (ok) {
              if (!ok) return;
              api("DELETE", "/task/" + encodeURIComponent(r.definition_id) + "/history/" + enc).then(function () {
                banner("Stop requested.", "info");
                refresh();
              }, fail);
            });
          }
        }, "Stop"));
      }
      // A template's run is run again from its template's form.
      var home = r.executable_type === "template"
        ? "/templates/" + encodeURIComponent(r.executable_id)
        : "/definitions/" + encodeURIComponent(r.definition_id);
      append(actions, h("a", {
        "class": "button secondary", id: "retry-run",
        href: r.executable_type === "template" ? home + "#template-run" : home + "?retry=" + enc + "#run"
      }, "Retry"));
      clear(details);
      var inst = r.instance || {};
      append(details, dl([
        ["Status", badge(r), null, "status"],
        ["Alias", h("a", { href: home }, r.alias)],
        ["Run id", r.run_id, "mono"],
        ["Image", r.image, "mono"],
        ["Command", r.command ? h("pre", { "class": "code" }, r.command) : "—"],
        ["Memory", r.memory ? r.memory + " MiB" : "—"],
        ["CPU", r.cpu ? r.cpu + " millicores" : "—"],
        ["GPU", orDash(r.gpu)],
        ["Cluster", r.cluster],
        ["Engine", r.engine],
        ["Engine ref", orDash(r.engine_ref), "mono"],
        ["Instance", inst.instance_id ? inst.instance_id + (inst.dns_name ? " (" + inst.dns_name + ")" : "") : "—"],
        ["Owner", orDash(r.owner)],
        ["Attempt", r.attempt + (r.max_attempts ? " of " + r.max_attempts : "")],
        ["Queued", fmtTime(r.queued_at)],
        ["Started", fmtTime(r.started_at)],
        ["Finished", fmtTime(r.finished_at)],
        ["Duration", duration(r)],
        ["Exit code", orDash(r.exit_code), null, "exit_code"],
        ["Exit reason", orDash(r.exit_reason), null, "exit_reason"],
        ["Failure", orDash(r.failure)],
        ["Environment", envList(r.env)]
      ]));
    }

    function renderEvents(data) {
      clear(timeline);
      (data.events || []).forEach(function (e) {
        append(timeline, h("li", null,
          h("time", { datetime: e.at }, fmtTime(e.at)), " ",
          h("strong", null, (e.from ? e.from + " → " : "") + e.to),
          e.attempt ? " (attempt " + e.attempt + ")" : "",
          e.reason ? h("span", { "class": "muted" }, " — " + e.reason) : null));
      });
      if (!timeline.firstChild) append(timeline, h("li", { "class": "muted" }, "No events yet."));
    }

    function refresh() {
      return Promise.all([
        api("GET", "/history/" + enc).then(renderRun),
        api("GET", "/" + enc + "/events").then(renderEvents)
      ]).catch(fail);
    }

    function appendLog(text) {
      logEl.appendChild(document.createTextNode(text));
      if (following) logEl.scrollTop = logEl.scrollHeight;
    }

    function stream() {
      var url = API + "/" + enc + "/logs/stream" + (cursor ? "?last_seen=" + encodeURIComponent(cursor) : "");
      logState.textContent = "Streaming…";
      var closed = false;
      streamSSE(url, function (ev, data, evId) {
        if (ev === "log") {
          if (evId) cursor = evId;
          appendLog(data);
        } else if (ev === "status") {
          refresh();
        } else if (ev === "end") {
          ended = true;
          logState.textContent = "Log complete.";
          try { renderRun(JSON.parse(data)); } catch (e) { /* refresh below */ }
          refresh();
        } else if (ev === "closed") {
          closed = true;
        } else if (ev === "error") {
          logState.textContent = "Log error: " + data;
          ended = true;
        }
      }, controller ? controller.signal : undefined).then(function () {
        if (!ended) setTimeout(stream, closed ? 0 : 1000);
      }, function (e) {
        if (e && e.name === "AbortError") return;
        if (e && e.status) {
          logState.textContent = "Log unavailable: " + e.message;
          if (e.status >= 500 || e.status === 429) setTimeout(stream, 2000);
          return;
        }
        if (!ended) setTimeout(stream, 2000);
      });
    }

    function download() {
      fetch(API + "/" + enc + "/logs?raw_text=true", { headers: headers() }).then(function (resp) {
        if (!resp.ok) {
          return resp.text().then(function (t) {
            var m = t;
            try { m = JSON.parse(t).error || t; } catch (e) { /* text */ }
            throw new ApiError(resp.status, m);
          });
        }
        return resp.blob();
      }).then(function (blob) {
        var a = h("a", { href: URL.createObjectURL(blob), download: "flotilla-" + id + ".log" });
        document.body.appendChild(a);
        a.click();
        setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
      }).catch(fail);
    }

    setMain(
      h("nav", { "class": "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/runs" }, "Runs"), " / ", h("span", { "class": "mono" }, id)),
      head,
      h("section", { "class": "card", "aria-labelledby": "run-log" },
        h("div", { "class": "page-head" },
          h("h2", { id: "run-log" }, "Log"),
          h("div", { "class": "actions" }, follow, " ", logState, " ",
            h("button", { type: "button", "class": "secondary small", id: "download-log", onclick: download }, "Download raw log"))),
        logEl),
      h("div", { "class": "grid" },
        h("section", { "class": "card", "aria-labelledby": "run-fields" }, h("h2", { id: "run-fields" }, "Details"), details),
        h("section", { "class": "card", "aria-labelledby": "run-timeline" }, h("h2", { id: "run-timeline" }, "Timeline"), timeline)));
    refresh().then(function () { if (run) stream(); });
    window.addEventListener("pagehide", function () { if (controller) controller.abort(); });
    timers.push(setInterval(function () {
      if (run && isActive(run) && !document.hidden) refresh();
    }, 5000));
  }

  // ---------- clusters ----------

  // svg("tag", {attr: value}, child...) builds an SVG element.
  function svg(tag, attrs) {
    var el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    Object.keys(attrs || {}).forEach(function (k) { el.setAttribute(k, String(attrs[k])); });
    for (var i = 2; i < arguments.length; i++) {
      var c = arguments[i];
      el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    }
    return el;
  }

  // Queue depth (runs waiting for capacity) and running runs over the
  // last hour, one point per sample of GET /clusters/{name}/usage.
  function usageChart(name, u) {
    var W = 720, H = 150, L = 34, R = 8, T = 10, B = 22;
    var s = u.samples || [];
    var top = Math.max(1, (u.capacity && u.capacity.runs) || 0);
    s.forEach(function (x) { top = Math.max(top, x.waiting, x.running); });
    var x = function (i) { return L + (W - L - R) * (s.length > 1 ? i / (s.length - 1) : 0); };
    var y = function (v) { return T + (H - T - B) * (1 - v / top); };
    var series = [["waiting", "#b45309", "Waiting (queue depth)"], ["running", "#1d4ed8", "Running"]];
    var chart = svg("svg", { viewBox: "0 0 " + W + " " + H, width: "100%", role: "img", "class": "usage-chart",
      id: "usage-" + name, "aria-label": "Waiting and running runs on " + name + " over the last hour" },
      svg("line", { x1: L, y1: y(0), x2: W - R, y2: y(0), stroke: "#d8dde5" }),
      svg("line", { x1: L, y1: y(top), x2: W - R, y2: y(top), stroke: "#eef0f3" }),
      svg("text", { x: L - 4, y: y(top) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6575" }, String(top)),
      svg("text", { x: L - 4, y: y(0) + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6575" }, "0"),
      svg("text", { x: L, y: H - 6, "font-size": 11, fill: "#5b6575" }, "60 min ago"),
      svg("text", { x: W - R, y: H - 6, "text-anchor": "end", "font-size": 11, fill: "#5b6575" }, "now"));
    series.forEach(function (d) {
      var values = s.map(function (p) { return p[d[0]]; });
      chart.appendChild(svg("polyline", { fill: "none", stroke: d[1], "stroke-width": 2, "data-series": d[0],
        "data-values": values.join(","), points: values.map(function (v, i) { return x(i).toFixed(1) + "," + y(v).toFixed(1); }).join(" ") },
        svg("title", null, d[2])));
    });
    var legend = h("p", { "class": "muted legend" }, series.map(function (d) {
      return h("span", null, h("span", { "class": "swatch-" + d[0] }, "■ "), d[2]);
    }), "(the most in each " + (u.bucket_seconds || 10) + " s)");
    return h("div", null, chart, legend);
  }

  function capacityText(c, key, unit) {
    return c && c[key] !== undefined && c[key] !== null ? c[key] + unit : "unlimited";
  }

  function clusterCard(c, u, active, queued) {
    var waiting = queued.filter(function (r) { return r.waiting; }).sort(function (a, b) {
      return a.waiting.position - b.waiting.position;
    });
    var cap = u.capacity || {};
    return h("section", { "class": "card", "data-cluster": c.name, "aria-labelledby": "cluster-" + c.name },
      h("div", { "class": "page-head" }, h("h2", { id: "cluster-" + c.name }, c.name),
        h("span", { "class": "badge", "data-cluster-status": c.status, text: c.status })),
      dl([
        ["Capacity: runs", capacityText(cap, "runs", ""), null, "capacity-runs"],
        ["CPU", capacityText(cap, "cpu", " millicores"), null, "capacity-cpu"],
        ["Memory", capacityText(cap, "memory", " MiB"), null, "capacity-memory"],
        ["GPU", capacityText(cap, "gpu", ""), null, "capacity-gpu"],
        ["Now", u.running + " running, " + u.waiting + " waiting", null, "usage-now"]
      ]),
      usageChart(c.name, u),
      h("h3", null, "Running"),
      runsTable(active, "running-" + c.name),
      h("h3", null, "Waiting for capacity"),
      waiting.length ? h("div", { "class": "table-wrap" }, h("table", { id: "waiting-" + c.name },
        h("thead", null, h("tr", null, ["Position", "Run", "Alias", "Owner", "Priority", "Reason"].map(function (t) {
          return h("th", { scope: "col" }, t);
        }))),
        h("tbody", null, waiting.map(function (r) {
          return h("tr", { "data-run-id": r.run_id },
            h("td", { "data-label": "Position", "class": "position" }, String(r.waiting.position)),
            h("td", { "data-label": "Run", "class": "mono" }, h("a", { href: "/runs/" + encodeURIComponent(r.run_id) }, r.run_id.slice(-12))),
            h("td", { "data-label": "Alias" }, r.alias),
            h("td", { "data-label": "Owner" }, orDash(r.owner)),
            h("td", { "data-label": "Priority" }, String(r.priority || 0)),
            h("td", { "data-label": "Reason", "class": "reason" }, r.waiting.reason));
        })))) : h("p", { "class": "empty" }, "Nothing waits."));
  }

  function clustersPage() {
    document.title = "Clusters · flotilla";
    var results = h("div", { id: "clusters-results", "aria-live": "polite" }, h("p", { "class": "muted" }, "Loading…"));
    var loading = false;
    function runs(name, statuses) {
      var a = new URLSearchParams();
      statuses.forEach(function (s) { a.append("status", s); });
      a.set("cluster_name", name);
      a.set("sort_by", "queued_at");
      a.set("order", "asc");
      a.set("limit", "50");
      return api("GET", "/history?" + a.toString()).then(function (d) { return d.history; });
    }
    function load() {
      loading = true;
      api("GET", "/clusters").then(function (list) {
        return Promise.all(list.cluster_details.map(function (c) {
          var enc = encodeURIComponent(c.name);
          return Promise.all([api("GET", "/clusters/" + enc + "/usage"), runs(c.name, ["PENDING", "RUNNING"]), runs(c.name, ["QUEUED"])])
            .then(function (r) { return clusterCard(c, r[0], r[1], r[2]); });
        }));
      }).then(function (cards) {
        loading = false;
        banner("");
        clear(results);
        append(results, cards.length ? cards : h("p", { "class": "empty" }, "No clusters."));
        results.setAttribute("data-loaded", String(Date.now()));
      }, function (e) { loading = false; fail(e); });
    }
    setMain(h("div", { "class": "page-head" }, h("h1", null, "Clusters")), results);
    load();
    timers.push(setInterval(function () {
      if (!loading && !document.hidden) load();
    }, 5000));
  }

  // ---------- templates (flotilla-os v7) ----------

  function api7(method, path, body) {
    return api(method, path, body, API_V7);
  }

  function templatesPage() {
    document.title = "Templates · flotilla";
    var results = h("div", { id: "templates-results", "aria-live": "polite" });
    setMain(
      h("div", { "class": "page-head" }, h("h1", null, "Templates")),
      h("p", { "class": "help" }, "A template runs a command rendered from a form. The latest version of each is listed."),
      results);
    api7("GET", "/template?latest_only=true&limit=500").then(function (data) {
      clear(results);
      if (!data.templates.length) {
        append(results, h("p", { "class": "empty" }, "No templates yet. They are created through the API (POST /api/v7/template)."));
        return;
      }
      append(results, h("div", { "class": "table-wrap" }, h("table", { id: "templates-table" },
        h("thead", null, h("tr", null, ["Name", "Version", "Image", "Created"].map(function (c) {
          return h("th", { scope: "col" }, c);
        }))),
        h("tbody", null, data.templates.map(function (t) {
          return h("tr", { "data-template": t.template_name },
            h("td", { "data-label": "Name" }, h("a", { href: "/templates/" + encodeURIComponent(t.template_id) }, t.template_name)),
            h("td", { "data-label": "Version" }, String(t.version)),
            h("td", { "data-label": "Image", "class": "mono" }, t.image),
            h("td", { "data-label": "Created" }, fmtTime(t.created_at)));
        })))));
    }, fail);
  }

  // One form control per property of the template's JSON Schema: enums are
  // selects, booleans checkboxes, numbers and strings inputs, string lists
  // comma-separated inputs, anything else JSON. Returns the controls and a
  // reader that turns them back into a payload (pushing "key: problem"
  // errors for what cannot be read).
  function schemaControls(t) {
    var schema = t.schema || {};
    var props = schema.properties || {};
    var required = schema.required || [];
    var defaults = t.defaults || {};
    var fields = [];
    var readers = {};
    Object.keys(props).forEach(function (key) {
      var p = props[key] || {};
      var id = "tp-" + key;
      var dflt = defaults[key] !== undefined ? defaults[key] : p["default"];
      var req = required.indexOf(key) >= 0;
      var label = (p.title || key) + (req ? " *" : "");
      var help = p.description || "";
      var control, read;
      if (Array.isArray(p["enum"])) {
        control = h("select", { id: id, name: key });
        if (!req) append(control, h("option", { value: "" }, "—"));
        p["enum"].forEach(function (v, i) {
          append(control, h("option", { value: String(i), selected: JSON.stringify(v) === JSON.stringify(dflt) }, String(v)));
        });
        read = function () { return control.value === "" ? undefined : p["enum"][Number(control.value)]; };
      } else if (p.type === "boolean") {
        control = h("input", { id: id, name: key, type: "checkbox", checked: dflt === true });
        read = function () { return control.checked; };
      } else if (p.type === "integer" || p.type === "number") {
        control = h("input", { id: id, name: key, inputmode: p.type === "integer" ? "numeric" : "decimal", value: dflt == null ? "" : String(dflt) });
        read = function (errors) {
          var v = control.value.trim();
          if (!v) return undefined;
          var n = Number(v);
          if (!isFinite(n) || (p.type === "integer" && Math.floor(n) !== n)) {
            errors.push("template_payload." + key + ": " + JSON.stringify(v) + " is not " + (p.type === "integer" ? "an integer" : "a number"));
            return undefined;
          }
          return n;
        };
      } else if (p.type === "array" && (!p.items || p.items.type === "string")) {
        control = h("input", { id: id, name: key, value: Array.isArray(dflt) ? dflt.join(", ") : "" });
        help = (help ? help + " " : "") + "Comma-separated.";
        read = function () {
          var v = control.value.trim();
          return v ? v.split(",").map(function (s) { return s.trim(); }).filter(Boolean) : undefined;
        };
      } else if (p.type === "string" || p.type === undefined && typeof dflt === "string") {
        control = h("input", { id: id, name: key, value: dflt == null ? "" : String(dflt) });
        read = function () { return control.value === "" ? undefined : control.value; };
      } else {
        control = h("textarea", { id: id, name: key, rows: "3", "class": "mono", spellcheck: "false" });
        control.value = dflt === undefined ? "" : JSON.stringify(dflt, null, 2);
        help = (help ? help + " " : "") + "JSON.";
        read = function (errors) {
          var v = control.value.trim();
          if (!v) return undefined;
          try { return JSON.parse(v); } catch (e) {
            errors.push("template_payload." + key + ": not JSON (" + e.message + ")");
            return undefined;
          }
        };
      }
      if (req) control.setAttribute("aria-required", "true");
      control.setAttribute("data-key", key);
      fields.push(field(id, label, control, help || null));
      readers[key] = { read: read, required: req };
    });
    function payload(errors) {
      var out = {};
      Object.keys(readers).forEach(function (key) {
        var v = readers[key].read(errors);
        if (v === undefined) {
          if (readers[key].required && defaults[key] === undefined) {
            errors.push("template_payload." + key + ": required");
          }
          return;
        }
        out[key] = v;
      });
      return out;
    }
    return { fields: fields, payload: payload };
  }

  // Puts each "template_payload.<key>...: message" of an error beside the
  // field of <key>; returns whether every part found its field.
  function showPayloadErrors(form, message) {
    var all = true, first = null;
    String(message || "").split("; ").forEach(function (part) {
      var m = /^template_payload\.([^.:\s]+)[^:]*:\s*(.*)$/.exec(part);
      var el = m && form.querySelector("#err-tp-" + CSS.escape(m[1]));
      if (!el) { all = false; return; }
      el.textContent = el.textContent ? el.textContent + "; " + m[2] : m[2];
      var input = form.querySelector("#tp-" + CSS.escape(m[1]));
      if (input) {
        input.setAttribute("aria-invalid", "true");
        if (!first) first = input;
      }
    });
    if (first) first.focus();
    return all;
  }

  function templateRunForm(t, clusters) {
    var controls = schemaControls(t);
    var cluster = h("select", { id: "tpl-cluster", name: "cluster" });
    var names = clusters.map(function (c) { return typeof c === "string" ? c : c.name; });
    if (!names.length) append(cluster, h("option", { value: "" }, "default"));
    names.forEach(function (n) { append(cluster, h("option", { value: n, selected: n === "default" }, n)); });
    var owner = h("input", { id: "tpl-owner", autocomplete: "username", value: getCookie(OWNER_COOKIE) });
    var form = h("form", { id: "template-run-form", "class": "card", novalidate: true });
    append(form,
      h("h2", { id: "template-run" }, "Run"),
      controls.fields,
      h("div", { "class": "row2" },
        field("tpl-cluster", "Cluster", cluster),
        authMode === "tokens" ? null : field("tpl-owner", "Owner", owner, "Remembered in this browser.")),
      h("div", { "class": "actions" }, h("button", { type: "submit", id: "template-run-submit" }, "Run")));
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      clearFieldErrors(form);
      banner("");
      var errors = [];
      var body = { template_payload: controls.payload(errors) };
      if (cluster.value) body.cluster = cluster.value;
      if (authMode !== "tokens") {
        var o = owner.value.trim();
        if (!o) {
          form.querySelector("#err-tpl-owner").textContent = "owner: required (who runs this)";
          owner.setAttribute("aria-invalid", "true");
          if (!errors.length) owner.focus();
        }
        body.owner_id = o;
      }
      if (errors.length) { showPayloadErrors(form, errors.join("; ")); return; }
      if (!body.owner_id && authMode !== "tokens") return;
      if (body.owner_id) setCookie(OWNER_COOKIE, body.owner_id);
      var submit = form.querySelector("#template-run-submit");
      submit.disabled = true;
      api7("PUT", "/template/" + encodeURIComponent(t.template_id) + "/execute", body).then(function (run) {
        location.href = "/runs/" + encodeURIComponent(run.run_id);
      }, function (e) {
        submit.disabled = false;
        if (!(e && e.status === 400 && showPayloadErrors(form, e.message))) fail(e);
      });
    });
    return form;
  }

  function templatePage(id) {
    Promise.all([
      api7("GET", "/template/" + encodeURIComponent(id)),
      api("GET", "/clusters").catch(function () { return { clusters: [] }; }),
      api7("GET", "/template/" + encodeURIComponent(id) + "/history?limit=10&sort_by=queued_at&order=desc")
    ]).then(function (res) {
      var t = res[0], clusters = res[1].clusters || [], runs = res[2].history || [];
      document.title = t.template_name + " · flotilla";
      setMain(
        h("nav", { "class": "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "/templates" }, "Templates"), " / ", t.template_name),
        h("div", { "class": "page-head" }, h("h1", { id: "template-name" }, t.template_name + " v" + t.version)),
        h("div", { "class": "grid" },
          h("section", { "class": "card", "aria-labelledby": "tpl-fields" },
            h("h2", { id: "tpl-fields" }, "Template"),
            dl([
              ["Name", t.template_name],
              ["Version", String(t.version)],
              ["Image", t.image, "mono"],
              ["Command", h("pre", { "class": "code" }, t.command_template)],
              ["Memory", t.memory ? t.memory + " MiB" : "—"],
              ["CPU", t.cpu ? t.cpu + " millicores" : "—"],
              ["Environment", envList(t.env)],
              ["Id", t.template_id, "mono"],
              ["Created", fmtTime(t.created_at)]
            ])),
          templateRunForm(t, clusters)),
        h("section", { "aria-labelledby": "recent-runs" },
          h("h2", { id: "recent-runs" }, "Recent runs"),
          runsTable(runs, "recent-runs-table")));
    }, fail);
  }

  // ---------- routing ----------

  function route() {
    renderWho();
    var path = location.pathname.replace(/\/+$/, "") || "/";
    Array.prototype.forEach.call(document.querySelectorAll("[data-nav]"), function (a) {
      var here = path.indexOf("/" + a.getAttribute("data-nav")) === 0 ||
        (path === "/" && a.getAttribute("data-nav") === "definitions");
      if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    });
    if (authMode === "tokens" && !token()) {
      showLogin("");
      return;
    }
    var m;
    if (path === "/" || path === "/definitions") return definitionsPage();
    if (path === "/definitions/new") return newDefinitionPage();
    if ((m = /^\/definitions\/([^/]+)\/edit$/.exec(path))) return editDefinitionPage(decodeURIComponent(m[1]));
    if ((m = /^\/definitions\/([^/]+)$/.exec(path))) return definitionPage(decodeURIComponent(m[1]));
    if (path === "/templates") return templatesPage();
    if ((m = /^\/templates\/([^/]+)$/.exec(path))) return templatePage(decodeURIComponent(m[1]));
    if (path === "/runs") return runsPage();
    if ((m = /^\/runs\/([^/]+)$/.exec(path))) return runPage(decodeURIComponent(m[1]));
    if (path === "/clusters") return clustersPage();
    setMain(h("h1", null, "Not found"), h("p", null, "No page at " + path + "."));
  }

  route();
})();
