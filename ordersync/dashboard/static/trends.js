// ordersync dashboard, Trends page (/trends): reads the page's series from /api/trends and draws them with
// uPlot (static/vendor/uplot, loaded before this file). The page's tables hold the same numbers, so
// nothing is lost without the script. No inline code or style: everything here runs under the page's
// Content-Security-Policy (script-src 'self'; style-src 'self'), uPlot included (CSSOM only).
"use strict";

(function () {
  const HEIGHT = 240;
  const MIN_WIDTH = 320;
  const OPERATIONS_DRAWN = 6;
  // Colours near the dashboard's (dashboard.css); a chart's series also differ by dash or width, so colour
  // is never the only signal (and the tables under the charts hold every number).
  const COLORS = ["#0b5cad", "#1e7b34", "#7a3e9d", "#b35c00", "#4a535c", "#0e7c86", "#8a6d00"];
  const RED = "#a4161a";
  const AMBER = "#b35c00";
  const DAY_S = 86400;
  // The time axis in 24-hour, year-month-day words (uPlot's stamps: tick increment, default format, then
  // the formats when the year, month, day... changes, and the mode).
  const STAMPS = [
    [DAY_S * 365, "{YYYY}", null, null, null, null, null, null, 1],
    [DAY_S * 28, "{MMM}", "\n{YYYY}", null, null, null, null, null, 1],
    [DAY_S, "{MM}-{DD}", "\n{YYYY}", null, null, null, null, null, 1],
    [3600, "{HH}:{mm}", "\n{YYYY}-{MM}-{DD}", null, "\n{MM}-{DD}", null, null, null, 1],
    [60, "{HH}:{mm}", "\n{YYYY}-{MM}-{DD}", null, "\n{MM}-{DD}", null, null, null, 1],
  ];

  const root = document.getElementById("trends");
  if (!root) { return; }
  const charts = [];

  function showError(text) {
    const box = document.getElementById("trends-error");
    if (!box) { return; }
    box.className = "notice error";
    box.textContent = text;
  }

  if (typeof uPlot === "undefined") {
    showError("The chart library did not load; the tables below hold every number.");
    return;
  }

  const tz = root.dataset.tz || "UTC";
  function tzDate(ts) { return uPlot.tzDate(new Date(ts * 1e3), tz); }

  function widthOf(el) { return Math.max(MIN_WIDTH, Math.floor(el.clientWidth || 0)); }

  function minutes(seconds) { return seconds === null || seconds === undefined ? null : seconds / 60; }

  function countAxis(label) {
    return { label: label, size: 56, values: function (u, splits) { return splits.map(function (v) { return Number.isInteger(v) ? String(v) : ""; }); } };
  }

  function draw(el, series, data, yAxis, daily) {
    if (!el) { return; }
    const x = { time: true };
    if (daily) {
      // Bars a day wide: half a day of room on each side, so the first and the last show whole.
      x.range = function (u, min, max) { return [min - DAY_S / 2, max + DAY_S / 2]; };
    }
    const options = {
      width: widthOf(el),
      height: HEIGHT,
      tzDate: tzDate,
      cursor: { drag: { x: true, y: false } },
      scales: { x: x, y: { range: function (u, min, max) { return [0, Math.max(1, max || 0)]; } } },
      axes: [daily ? { values: STAMPS, incrs: [DAY_S, 2 * DAY_S, 7 * DAY_S] } : { values: STAMPS }, yAxis],
      series: [{ label: daily ? "Day" : "Hour", value: daily ? "{YYYY}-{MM}-{DD}" : "{YYYY}-{MM}-{DD} {HH}:{mm}" }].concat(series),
    };
    const plot = new uPlot(options, data, el);
    el.dataset.drawn = "1";
    charts.push({ plot: plot, el: el });
  }

  function line(label, color, extra) {
    const s = { label: label, stroke: color, width: 2, points: { show: false } };
    return Object.assign(s, extra || {});
  }

  function ordersChart(json) {
    const o = json.orders;
    draw(
      document.getElementById("chart-orders"),
      [
        line("Downloaded", COLORS[0]),
        line("Imported", COLORS[1], { dash: [6, 3] }),
        line("Confirmed", COLORS[2], { dash: [2, 2] }),
      ],
      [json.hours, o.downloaded, o.imported, o.confirmed],
      countAxis("orders"),
    );
  }

  function failuresChart(json) {
    const totals = json.failures.totals;
    const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 48] }) : undefined;
    // Stacked by hand: each kind drawn on top of the ones before it (its own count in the legend).
    const kinds = [["import", "Import", COLORS[0]], ["write-back", "Write-back", AMBER], ["dead-letter", "Dead letters", RED]];
    const data = [json.day_starts];
    const series = [];
    const running = json.day_starts.map(function () { return 0; });
    const stacked = [];
    for (const [kind, label, color] of kinds) {
      const counts = totals[kind] || running.map(function () { return 0; });
      const top = running.map(function (v, i) { return v + counts[i]; });
      stacked.push({ label: label, color: color, top: top.slice(), counts: counts });
      for (let i = 0; i < running.length; i++) { running[i] = top[i]; }
    }
    // Drawn from the tallest down, so each bar shows its own band.
    for (let k = stacked.length - 1; k >= 0; k--) {
      const s = stacked[k];
      const counts = s.counts;
      series.push({
        label: s.label,
        stroke: s.color,
        fill: s.color + "cc",
        width: 1,
        paths: bars,
        points: { show: false },
        value: function (u, v, si, i) { return i === null || i === undefined ? "" : String(counts[i]); },
      });
      data.push(s.top);
    }
    draw(document.getElementById("chart-failures"), series, data, countAxis("failures"), true);
  }

  function lagChart(json) {
    const lag = json.lag;
    draw(
      document.getElementById("chart-lag"),
      [
        line("Median (min)", COLORS[0], { spanGaps: false, points: { show: true, size: 4 } }),
        line("Longest (min)", RED, { dash: [6, 3], spanGaps: false, points: { show: true, size: 4 } }),
      ],
      [json.hours, lag.median_s.map(minutes), lag.max_s.map(minutes)],
      { label: "minutes", size: 56 },
    );
  }

  function quotaChart(json) {
    const operations = json.quota.slice(0, OPERATIONS_DRAWN);
    const series = operations.map(function (q, i) {
      return line(q.operation, COLORS[i % COLORS.length], { width: 1.5 });
    });
    const data = [json.hours].concat(operations.map(function (q) { return q.calls; }));
    const sum = function (counter) {
      return json.hours.map(function (_, i) {
        return json.quota.reduce(function (total, q) { return total + q[counter][i]; }, 0);
      });
    };
    series.push(line("Throttled (429)", RED, { width: 2.5, dash: [3, 2] }));
    data.push(sum("throttled"));
    series.push(line("Waited for quota", AMBER, { width: 2, dash: [8, 4] }));
    data.push(sum("waited"));
    draw(document.getElementById("chart-quota"), series, data, countAxis("calls"));
  }

  function drawAll(json) {
    ordersChart(json);
    failuresChart(json);
    lagChart(json);
    quotaChart(json);
    root.dataset.charts = String(charts.length);
  }

  let resizing = null;
  window.addEventListener("resize", function () {
    if (resizing) { window.clearTimeout(resizing); }
    resizing = window.setTimeout(function () {
      for (const c of charts) { c.plot.setSize({ width: widthOf(c.el), height: HEIGHT }); }
    }, 150);
  });

  // The channel filter applies on change (the Show button stays for use without the script).
  const channel = document.getElementById("trends-channel");
  if (channel && channel.form) {
    channel.addEventListener("change", function () { channel.form.submit(); });
  }

  fetch(root.dataset.api, { credentials: "same-origin", headers: { Accept: "application/json" } })
    .then(function (response) {
      if (!response.ok) { throw new Error("the trends could not be read (HTTP " + response.status + ")"); }
      return response.json();
    })
    .then(drawAll)
    .catch(function (error) { showError(String(error.message || error) + "; the tables below hold every number."); });
})();
