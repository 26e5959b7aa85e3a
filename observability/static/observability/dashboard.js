/* The dashboard: reads the JSON API with the session, keeps its state in the URL.
 *
 * No build step and no inline script (the page's CSP forbids it): this file and the vendored
 * uPlot are all the code. Times are UTC everywhere; windows are aligned to the chart's
 * interval (by the minute up to an hour, hourly up to 7 days, daily above) so tiles, charts and
 * table cover the same events.
 */
(function () {
  "use strict";

  var root = document.getElementById("dashboard");
  var API = root.dataset.api;                       // "/api/requests/"
  var LOGIN = root.dataset.login;
  var MINUTE = 60, HOUR = 3600, DAY = 86400;
  var INTERVALS = {};  // bucket width in seconds -> the API's interval and the charts' label
  INTERVALS[MINUTE] = { name: "minute", label: "per minute", buckets: "minute buckets" };
  INTERVALS[HOUR] = { name: "hour", label: "hourly", buckets: "hourly buckets" };
  INTERVALS[DAY] = { name: "day", label: "daily", buckets: "daily buckets" };
  // The chart's bucket width for a window of `length` seconds: 60 minutes for the last hour,
  // hours up to 7 days (at most 168 points), days above.
  function bucketWidth(length) { return length <= HOUR ? MINUTE : length <= 7 * DAY ? HOUR : DAY; }
  var WINDOWS = { "1h": HOUR, "24h": DAY, "7d": 7 * DAY, "30d": 30 * DAY };
  var API_SORTS = ["hits", "errors", "error_rate", "avg_latency_ms", "max_latency_ms",
                   "p95_latency_ms", "p99_latency_ms"];
  var LOCAL_SORTS = ["service", "endpoint"];       // the API ranks by measures only
  var AUTO_SECONDS = 30;
  var TOP_LIMIT = 10;
  // Tick steps for axes that count (requests, errors): whole numbers only, so a small count
  // reads 0, 1, 2 rather than uPlot's default 0, 0.5, 1, 1.5, 2 (shown rounded: "2, 2, 1, 1, 0").
  var COUNT_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5,
                     1e6, 2e6, 5e6, 1e7, 2e7, 5e7, 1e8, 2e8, 5e8, 1e9];

  // --- Formatting: thousands separators, ms / s ---------------------------------------------
  var intFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  var oneDecimal = new Intl.NumberFormat("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
  var twoDecimals = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function formatCount(n) { return n == null ? "—" : intFormat.format(n); }
  function formatRate(r) { return r == null ? "—" : twoDecimals.format(r * 100) + "%"; }
  function formatLatency(ms) {
    if (ms == null) return "—";
    if (ms === 0) return "0 ms";
    if (ms >= 1000) {
      var s = ms / 1000;
      return (s >= 100 ? intFormat.format(s) : s >= 10 ? oneDecimal.format(s) : twoDecimals.format(s)) + " s";
    }
    return (ms >= 100 ? intFormat.format(ms) : ms >= 10 ? oneDecimal.format(ms) : twoDecimals.format(ms)) + " ms";
  }
  var FORMATS = {
    hits: formatCount, errors: formatCount, error_rate: formatRate,
    avg_latency_ms: formatLatency, max_latency_ms: formatLatency, p50_latency_ms: formatLatency,
    p95_latency_ms: formatLatency, p99_latency_ms: formatLatency,
  };
  function pad(n) { return (n < 10 ? "0" : "") + n; }
  function utcLabel(seconds, withDate) {
    var d = new Date(seconds * 1000);
    var day = d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate());
    var time = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
    return withDate === false ? time : day + " " + time;
  }
  function iso(seconds) { return new Date(seconds * 1000).toISOString().replace(".000Z", "Z"); }

  // --- State <-> URL ------------------------------------------------------------------------
  function readState() {
    var q = new URLSearchParams(window.location.search);
    var sort = q.get("sort");
    var windowName = q.get("window");
    if (!(windowName in WINDOWS) && windowName !== "custom") windowName = "24h";
    return {
      window: windowName,
      start: q.get("start") || "",
      end: q.get("end") || "",
      service: q.get("service") || "",
      endpoint: q.get("endpoint") || "",
      sort: API_SORTS.indexOf(sort) >= 0 || LOCAL_SORTS.indexOf(sort) >= 0 ? sort : "hits",
      order: q.get("order") === "asc" ? "asc" : "desc",
      auto: q.get("auto") === "1",
    };
  }

  function stateQuery(s) {
    var q = new URLSearchParams();
    if (s.window !== "24h") q.set("window", s.window);
    if (s.window === "custom") { q.set("start", s.start); q.set("end", s.end); }
    if (s.service) q.set("service", s.service);
    if (s.service && s.endpoint) q.set("endpoint", s.endpoint);
    if (s.sort !== "hits") q.set("sort", s.sort);
    if (s.order !== "desc") q.set("order", s.order);
    if (s.auto) q.set("auto", "1");
    var text = q.toString();
    return text ? "?" + text : window.location.pathname;
  }

  var state = readState();

  function navigate(changes) {
    var next = Object.assign({}, state, changes);
    var url = stateQuery(next);
    if (url !== stateQuery(state)) window.history.pushState(null, "", url);
    state = next;
    load();
  }

  window.addEventListener("popstate", function () { state = readState(); load(); });

  // --- The window ---------------------------------------------------------------------------
  function parseUtc(text) {  // datetime-local values carry no zone: they are UTC here
    if (!text) return NaN;
    var zoned = /(Z|[+-]\d\d:?\d\d)$/.test(text) ? text : text + "Z";
    return Date.parse(zoned) / 1000;
  }

  function currentWindow(s) {
    var now = Date.now() / 1000, start, end, width, length;
    if (s.window === "custom") {
      var a = parseUtc(s.start), b = parseUtc(s.end);
      if (!(a < b)) return { error: "Custom window: choose a start before the end (UTC)." };
      width = bucketWidth(b - a);
      start = Math.floor(a / width) * width;
      end = Math.ceil(b / width) * width;
    } else {
      length = WINDOWS[s.window];
      width = bucketWidth(length);
      end = (Math.floor(now / width) + 1) * width;  // the end of the current interval
      start = end - length;
    }
    return { start: start, end: end, width: width, interval: INTERVALS[width].name };
  }

  // --- The API ------------------------------------------------------------------------------
  function apiUrl(path, params) {
    var q = new URLSearchParams();
    Object.keys(params).forEach(function (key) {
      if (params[key] !== "" && params[key] != null) q.set(key, params[key]);
    });
    return API + path + "?" + q.toString();
  }

  function getJson(label, url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().catch(function () { return null; }).then(function (body) {
          if (response.ok && body) return { ok: true, data: body };
          var detail = body && body.detail ? body.detail : response.statusText || "no details";
          return { ok: false, status: response.status, label: label, detail: detail };
        });
      }, function (error) {
        return { ok: false, status: 0, label: label, detail: "the server could not be reached (" + error.message + ")" };
      });
  }

  // --- Messages -----------------------------------------------------------------------------
  var messages = document.getElementById("messages");
  function clearMessages() { messages.textContent = ""; }
  function showMessage(text, link) {
    var p = document.createElement("p");
    p.className = "message message-error";
    p.textContent = text;
    if (link) {
      var a = document.createElement("a");
      a.href = link.href;
      a.textContent = link.text;
      p.appendChild(document.createTextNode(" "));
      p.appendChild(a);
    }
    messages.appendChild(p);
  }
  function showFailure(result) {
    if (result.status === 401 || result.status === 403) {
      showMessage(result.label + ": your session has ended or lacks access (" + result.status + ").", {
        href: LOGIN + "?next=" + encodeURIComponent(window.location.pathname + window.location.search),
        text: "Log in again",
      });
    } else {
      showMessage(result.label + " could not be loaded: " +
                  (result.status ? "HTTP " + result.status + ", " : "") + result.detail);
    }
  }

  // --- KPI tiles ----------------------------------------------------------------------------
  var KPI_KEYS = ["hits", "errors", "error_rate", "p50_latency_ms", "p95_latency_ms", "p99_latency_ms"];

  function renderTiles(current, previous) {
    KPI_KEYS.forEach(function (key) {
      var tile = root.querySelector('.tile[data-kpi="' + key + '"]');
      var valueEl = tile.querySelector(".tile-value");
      var changeEl = tile.querySelector(".tile-change");
      tile.classList.remove("tile-failed");
      changeEl.className = "tile-change";
      changeEl.textContent = "";
      if (!current) {
        valueEl.textContent = "—";
        tile.classList.add("tile-failed");
        delete tile.dataset.value;
        return;
      }
      var value = current.data[key];
      tile.dataset.value = value == null ? "" : String(value);
      valueEl.textContent = FORMATS[key](value);
      if (!previous || value == null) return;
      var before = previous.data[key];
      var text, delta;
      if (key === "error_rate") {
        delta = (value - before) * 100;
        text = (delta >= 0 ? "+" : "−") + twoDecimals.format(Math.abs(delta)) + " pp";
      } else if (before == null || before === 0) {
        changeEl.textContent = "no data in the previous window";
        return;
      } else {
        delta = (value - before) / before * 100;
        text = (delta >= 0 ? "+" : "−") + oneDecimal.format(Math.abs(delta)) + "%";
      }
      if (/^[+−]0[.,]0+ ?(pp|%)$/.test(text)) delta = 0;  // shown as zero: no arrow, no colour
      var worse = key !== "hits" && delta > 0, better = key !== "hits" && delta < 0;
      changeEl.textContent = (delta > 0 ? "▲ " : delta < 0 ? "▼ " : "") + text + " vs previous";
      if (worse) changeEl.classList.add("worse");
      if (better) changeEl.classList.add("better");
    });
    var approx = current && current.data.precision === "approx";
    root.querySelectorAll(".precision").forEach(function (el) {
      el.textContent = current ? (approx ? "±1%" : "exact") : "";
      el.title = approx ? "within 1% of the exact value (latency histograms)" : "exact percentile";
    });
  }

  // --- Charts (uPlot, UTC) ------------------------------------------------------------------
  var charts = {};

  function chartWidth(el) { return Math.max(260, el.clientWidth); }

  function drawChart(id, win, buckets, seriesDefs) {
    var el = document.getElementById(id);
    if (charts[id]) { charts[id].destroy(); delete charts[id]; }
    el.textContent = "";
    el.classList.remove("chart-failed");
    var xs = [];
    for (var t = win.start; t < win.end; t += win.width) xs.push(t);
    var byBucket = {};
    buckets.forEach(function (row) { byBucket[Date.parse(row.bucket) / 1000] = row; });
    // A bucket still filling (it ends after now) would read as a plunge to zero: it is drawn
    // dashed, apart from the complete ones. The API's `partial` says so where it is sent;
    // otherwise the bucket's end decides. A bucket that starts after now has nothing to draw.
    var now = Date.now() / 1000;
    var payloadSays = buckets.some(function (row) { return "partial" in row; });
    function future(x) { return x >= now; }
    function partial(x) {
      var row = byBucket[x];
      if (payloadSays && row) return row.partial === true;
      return !future(x) && x + win.width > now;
    }
    function value(def, x) {
      var row = byBucket[x];
      if (!row) return def.zeroWhenMissing ? 0 : null;
      return row[def.key] == null ? null : row[def.key];
    }
    var partialCount = xs.filter(partial).length;
    var data = [xs], series = [];
    seriesDefs.forEach(function (def) {
      data.push(xs.map(function (x) { return partial(x) || future(x) ? null : value(def, x); }));
      series.push({
        label: def.label, stroke: def.color, width: 2, fill: def.fill || undefined,
        points: { show: xs.length <= 48 },
        value: function (u, v) { return def.format(v); },
      });
    });
    if (partialCount) {
      seriesDefs.forEach(function (def) {
        // The partial buckets, joined to the last complete one before them.
        data.push(xs.map(function (x, i) {
          var next = xs[i + 1];
          var joins = next !== undefined && partial(next) && !partial(x) && !future(x);
          return partial(x) || joins ? value(def, x) : null;
        }));
        series.push({
          label: def.label + " (so far)", stroke: def.color, width: 2, dash: [5, 4],
          points: { show: xs.length <= 48 },
          value: function (u, v) { return def.format(v); },
        });
      });
    }
    el.dataset.buckets = String(xs.length);
    el.dataset.points = String(xs.filter(function (x) { return byBucket[x]; }).length);
    el.dataset.partial = String(partialCount);
    el.dataset.solid = String(xs.filter(function (x) { return !partial(x) && !future(x); }).length);
    var yAxis = {
      values: function (u, ticks) {
        var labels = ticks.map(seriesDefs[0].axis);
        el.dataset.yTicks = labels.join("|");  // what the axis reads, for people and tests alike
        return labels;
      },
      size: 64, stroke: "#64748b", grid: { stroke: "#eef0f4" },
    };
    if (seriesDefs[0].counts) yAxis.incrs = COUNT_INCRS;
    var opts = {
      width: chartWidth(el),
      height: 220,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"); },
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, y: { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } } },
      axes: [
        // uPlot's own time ticks (spaced to fit), drawn in UTC through tzDate above.
        { label: "UTC", labelSize: 18, stroke: "#64748b", grid: { stroke: "#eef0f4" } },
        yAxis,
      ],
      series: [{ label: "UTC", value: function (u, v) { return v == null ? "—" : utcLabel(v) + " UTC"; } }].concat(series),
    };
    charts[id] = new uPlot(opts, data, el);
  }

  function chartFailed(id, text) {
    var el = document.getElementById(id);
    if (charts[id]) { charts[id].destroy(); delete charts[id]; }
    el.textContent = text;
    el.classList.add("chart-failed");
    delete el.dataset.points;
    delete el.dataset.buckets;
  }

  function renderCharts(win, result) {
    root.querySelectorAll(".interval-label").forEach(function (el) {
      el.textContent = INTERVALS[win.width].label + " · UTC";
    });
    if (!result.ok) {
      chartFailed("traffic-chart", "Could not load the time series.");
      chartFailed("latency-chart", "Could not load the time series.");
      return;
    }
    var rows = result.data.results;
    drawChart("traffic-chart", win, rows, [
      { key: "hits", label: "Requests", color: "#4f46e5", fill: "rgba(79,70,229,0.10)", zeroWhenMissing: true,
        counts: true, format: formatCount, axis: formatCount },
      { key: "errors", label: "Errors", color: "#dc2626", zeroWhenMissing: true, format: formatCount, axis: formatCount },
    ]);
    drawChart("latency-chart", win, rows, [
      { key: "p50_latency_ms", label: "p50", color: "#0891b2", format: formatLatency, axis: formatLatency },
      { key: "p95_latency_ms", label: "p95", color: "#d97706", format: formatLatency, axis: formatLatency },
      { key: "p99_latency_ms", label: "p99", color: "#dc2626", format: formatLatency, axis: formatLatency },
    ]);
  }

  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      Object.keys(charts).forEach(function (id) {
        charts[id].setSize({ width: chartWidth(document.getElementById(id)), height: 220 });
      });
    }, 100);
  });

  // --- Top endpoints ------------------------------------------------------------------------
  var table = document.getElementById("top");

  function renderTop(result) {
    var body = table.tBodies[0];
    body.textContent = "";
    table.querySelectorAll("th").forEach(function (th) {
      var key = th.dataset.sort;
      th.setAttribute("aria-sort", key === state.sort ? (state.order === "asc" ? "ascending" : "descending") : "none");
    });
    if (!result.ok) {
      var tr = body.insertRow();
      var td = tr.insertCell();
      td.colSpan = 9;
      td.className = "muted";
      td.textContent = "Could not load the top endpoints.";
      return;
    }
    var rows = result.data.results.slice();
    if (LOCAL_SORTS.indexOf(state.sort) >= 0) {
      rows.sort(function (a, b) {
        var x = a[state.sort], y = b[state.sort];
        return (x < y ? -1 : x > y ? 1 : 0) * (state.order === "asc" ? 1 : -1);
      });
    }
    if (!rows.length) {
      var emptyRow = body.insertRow();
      var cell = emptyRow.insertCell();
      cell.colSpan = 9;
      cell.className = "muted";
      cell.textContent = "No requests in this window.";
    }
    rows.forEach(function (row) {
      var tr = body.insertRow();
      tr.insertCell().textContent = row.service;
      var endpointCell = tr.insertCell();
      var link = document.createElement("a");
      link.href = stateQuery(Object.assign({}, state, { service: row.service, endpoint: row.endpoint }));
      link.textContent = row.endpoint;
      link.className = "endpoint-link";
      link.title = "Show only " + row.service + " " + row.endpoint;
      link.addEventListener("click", function (event) {
        event.preventDefault();
        navigate({ service: row.service, endpoint: row.endpoint });
      });
      endpointCell.appendChild(link);
      ["hits", "errors", "error_rate", "avg_latency_ms", "p95_latency_ms", "p99_latency_ms", "max_latency_ms"]
        .forEach(function (key) {
          var td = tr.insertCell();
          td.className = "num";
          td.dataset.key = key;
          td.dataset.value = row[key] == null ? "" : String(row[key]);
          td.textContent = FORMATS[key](row[key]);
        });
    });
    var note = document.getElementById("top-note");
    note.textContent = "top " + TOP_LIMIT + " by " + headerText(state.sort) +
      (result.data.precision === "approx" ? " · percentiles ±1%" : "");
  }

  function headerText(key) {
    var th = table.querySelector('th[data-sort="' + key + '"]');
    return th ? th.textContent.trim().toLowerCase() : key;
  }

  table.querySelectorAll("th button").forEach(function (button) {
    button.addEventListener("click", function () {
      var key = button.parentElement.dataset.sort;
      var order = key === state.sort ? (state.order === "asc" ? "desc" : "asc")
        : (LOCAL_SORTS.indexOf(key) >= 0 ? "asc" : "desc");
      navigate({ sort: key, order: order });
    });
  });

  // --- Pickers ------------------------------------------------------------------------------
  var serviceSelect = document.getElementById("service");
  var endpointSelect = document.getElementById("endpoint");

  function fillSelect(select, allLabel, values, selected) {
    select.textContent = "";
    var all = document.createElement("option");
    all.value = "";
    all.textContent = allLabel;
    select.appendChild(all);
    if (selected && values.indexOf(selected) < 0) values = values.concat([selected]);
    values.forEach(function (value) {
      var option = document.createElement("option");
      option.value = value;
      option.textContent = value;
      select.appendChild(option);
    });
    select.value = selected || "";
  }

  function renderPickers(result) {
    var pairs = result.ok ? result.data.results : [];
    var services = [];
    pairs.forEach(function (p) { if (services.indexOf(p.service) < 0) services.push(p.service); });
    fillSelect(serviceSelect, "All services", services, state.service);
    var endpoints = pairs.filter(function (p) { return p.service === state.service; })
      .map(function (p) { return p.endpoint; });
    fillSelect(endpointSelect, "All endpoints", endpoints, state.service ? state.endpoint : "");
    endpointSelect.disabled = !state.service;
  }

  serviceSelect.addEventListener("change", function () { navigate({ service: serviceSelect.value, endpoint: "" }); });
  endpointSelect.addEventListener("change", function () { navigate({ endpoint: endpointSelect.value }); });

  // --- Window controls, refresh -------------------------------------------------------------
  var customForm = document.getElementById("custom-range");
  var customStart = document.getElementById("custom-start");
  var customEnd = document.getElementById("custom-end");

  function toInputValue(seconds) { return new Date(seconds * 1000).toISOString().slice(0, 16); }

  root.querySelectorAll("[data-window]").forEach(function (button) {
    button.addEventListener("click", function () {
      var name = button.dataset.window;
      if (name === "custom") {
        var win = currentWindow(state);
        if (!win.error) { customStart.value = toInputValue(win.start); customEnd.value = toInputValue(win.end); }
        customForm.hidden = false;
        customStart.focus();
        return;
      }
      customForm.hidden = true;
      navigate({ window: name, start: "", end: "" });
    });
  });

  customForm.addEventListener("submit", function (event) {
    event.preventDefault();
    navigate({ window: "custom", start: customStart.value, end: customEnd.value });
  });

  document.getElementById("refresh").addEventListener("click", function () { load(); });

  var autoBox = document.getElementById("auto");
  var autoTimer = null;
  autoBox.addEventListener("change", function () { navigate({ auto: autoBox.checked }); });

  function scheduleAuto() {
    clearInterval(autoTimer);
    autoTimer = null;
    if (state.auto) autoTimer = setInterval(load, AUTO_SECONDS * 1000);
  }

  // --- Chips and range ----------------------------------------------------------------------
  function renderContext(win) {
    var chips = document.getElementById("filter-chips");
    chips.textContent = "";
    [["service", state.service], ["endpoint", state.endpoint]].forEach(function (pair) {
      if (!pair[1]) return;
      var chip = document.createElement("button");
      chip.type = "button";
      chip.className = "chip";
      chip.title = "Remove this filter";
      chip.textContent = pair[0] + ": " + pair[1] + "  ×";
      chip.addEventListener("click", function () {
        navigate(pair[0] === "service" ? { service: "", endpoint: "" } : { endpoint: "" });
      });
      chips.appendChild(chip);
    });
    // Until the new window's numbers arrive, the header says they are loading: the tiles,
    // charts and table below still show (dimmed) the previous window's.
    var rangeEl = document.getElementById("range");
    rangeEl.dataset.range = win.error ? "" :
      utcLabel(win.start) + " – " + utcLabel(win.end) + " UTC · " + INTERVALS[win.width].buckets;
    rangeEl.textContent = win.error ? "" : "Loading " + rangeEl.dataset.range + " …";
    rangeEl.classList.toggle("range-loading", !win.error);
    root.querySelectorAll("[data-window]").forEach(function (button) {
      button.classList.toggle("active", button.dataset.window === state.window);
      button.setAttribute("aria-pressed", button.dataset.window === state.window ? "true" : "false");
    });
    customForm.hidden = state.window !== "custom";
    if (state.window === "custom") { customStart.value = state.start.slice(0, 16); customEnd.value = state.end.slice(0, 16); }
    autoBox.checked = state.auto;
  }

  // --- Empty state --------------------------------------------------------------------------
  function renderEmpty(show) {
    var empty = document.getElementById("empty");
    empty.hidden = !show;
    root.classList.toggle("is-empty", show);
    if (show) {
      document.getElementById("empty-origin").textContent = window.location.origin;
      document.getElementById("empty-time").textContent = new Date().toISOString().slice(0, 19) + "Z";
    }
  }

  // --- Loading ------------------------------------------------------------------------------
  var generation = 0;

  function load() {
    var mine = ++generation;
    var win = currentWindow(state);
    renderContext(win);
    scheduleAuto();
    clearMessages();
    if (win.error) { showMessage(win.error); return Promise.resolve(); }
    root.dataset.start = iso(win.start);  // what the page shows, for people and tests alike
    root.dataset.end = iso(win.end);
    root.classList.add("loading");
    root.setAttribute("aria-busy", "true");
    var filters = { service: state.service, endpoint: state.service ? state.endpoint : "" };
    var range = { start: iso(win.start), end: iso(win.end) };
    var length = win.end - win.start;
    var previousRange = { start: iso(win.start - length), end: iso(win.start) };
    var approx = { precision: "approx" };
    var topSort = API_SORTS.indexOf(state.sort) >= 0 ? state.sort : "hits";
    var topOrder = API_SORTS.indexOf(state.sort) >= 0 ? state.order : "desc";
    var requests = [
      getJson("Key figures", apiUrl("kpis/", Object.assign({}, range, filters, approx))),
      getJson("Key figures of the previous window", apiUrl("kpis/", Object.assign({}, previousRange, filters, approx))),
      getJson("Time series", apiUrl("timeseries/", Object.assign({ interval: win.interval }, range, filters, approx))),
      getJson("Top endpoints", apiUrl("top-endpoints/", Object.assign(
        { sort: topSort, order: topOrder, limit: TOP_LIMIT, with_p95: "true" }, range, filters, approx))),
      getJson("Services and endpoints", apiUrl("series/", range)),
    ];
    return Promise.all(requests).then(function (results) {
      if (mine !== generation) return null;  // a newer load has started: drop these answers
      var current = results[0], previous = results[1];
      results.forEach(function (result) { if (!result.ok) showFailure(result); });
      renderTiles(current.ok ? current : null, previous.ok ? previous : null);
      renderCharts(win, results[2]);
      renderTop(results[3]);
      renderPickers(results[4]);
      if (current.ok && current.data.hits === 0 && !state.service) {
        // Nothing in this window: is there anything at all? (all time, counts only)
        return getJson("Key figures (all time)", apiUrl("kpis/", { with_p95: "false" })).then(function (all) {
          if (mine !== generation) return;
          renderEmpty(all.ok && all.data.hits === 0);
        });
      }
      renderEmpty(false);
      return null;
    }).then(function () {
      if (mine !== generation) return;
      root.classList.remove("loading");
      root.removeAttribute("aria-busy");
      var rangeEl = document.getElementById("range");
      rangeEl.textContent = rangeEl.dataset.range;
      rangeEl.classList.remove("range-loading");
      root.dataset.loaded = String(mine);
      document.getElementById("updated").textContent = "Updated " + utcLabel(Date.now() / 1000, false) +
        " UTC" + (state.auto ? " · refreshing every " + AUTO_SECONDS + " s" : "");
    });
  }

  load();
})();
