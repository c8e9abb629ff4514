// Draws the cost chart from the page's JSON (no inline script: the page's CSP allows only files from here).
(function () {
  "use strict";
  var source = document.getElementById("cost-data");
  var canvas = document.getElementById("cost-chart");
  if (!source || !canvas || typeof Chart === "undefined") { return; }
  var data = JSON.parse(source.textContent);
  var palette = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
                 "#9c755f", "#bab0ac"];
  var datasets = data.series.map(function (s, i) {
    return { label: s.provider + " / " + s.service + (s.currency ? " (" + s.currency + ")" : ""),
             data: s.values, backgroundColor: palette[i % palette.length], stack: "cost" };
  });
  var chart = new Chart(canvas, {
    type: "bar",
    data: { labels: data.days, datasets: datasets },
    options: { animation: false, responsive: true, maintainAspectRatio: false,
               scales: { x: { stacked: true }, y: { stacked: true, title: { display: true, text: "EffectiveCost" } } },
               plugins: { legend: { position: "bottom" } } }
  });
  // What was drawn, for tests and for anyone reading the DOM: bars Chart.js laid out, per dataset.
  var points = 0;
  datasets.forEach(function (_, i) {
    chart.getDatasetMeta(i).data.forEach(function (bar) { if (bar.height > 0) { points += 1; } });
  });
  canvas.setAttribute("data-datasets", String(datasets.length));
  canvas.setAttribute("data-bars-drawn", String(points));
  canvas.setAttribute("data-chart-ready", "1");
}());
