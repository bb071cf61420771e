// Draws one uPlot chart per kind from /ui/throughput.json. Kind names come from the page's
// data attributes and reach the DOM only as text (never as HTML).
(function () {
  "use strict";
  var charts = document.getElementById("charts");
  if (!charts) return;
  var colours = {
    succeeded: "#16a34a", failed: "#d97706", exhausted: "#dc2626", cancelled: "#6b7280"
  };
  var plots = [];

  function draw(minutes) {
    fetch(charts.dataset.source + "?minutes=" + minutes, { credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        plots.forEach(function (plot) { plot.destroy(); });
        plots = [];
        charts.querySelectorAll(".chart").forEach(function (el) {
          var series = data.kinds[el.dataset.kind] || {};
          var zeros = data.minutes.map(function () { return 0; });
          var names = ["succeeded", "failed", "exhausted", "cancelled"];
          var opts = {
            width: Math.max(320, el.clientWidth || 800),
            height: 220,
            scales: { x: { time: true } },
            axes: [{}, { label: "tasks / minute" }],
            series: [{}].concat(names.map(function (name) {
              return { label: name, stroke: colours[name], width: 2, points: { show: false } };
            })),
          };
          var values = [data.minutes].concat(names.map(function (name) {
            return series[name] || zeros;
          }));
          plots.push(new uPlot(opts, values, el));
          el.dataset.drawn = String(minutes);
        });
        charts.dataset.drawn = String(minutes);
      });
  }

  document.querySelectorAll(".range-button").forEach(function (button) {
    button.addEventListener("click", function () {
      document.querySelectorAll(".range-button").forEach(function (other) {
        other.setAttribute("aria-pressed", String(other === button));
      });
      draw(Number(button.dataset.minutes));
    });
  });
  var initial = new URLSearchParams(window.location.search).get("minutes") === "1440" ? 1440 : 60;
  document.querySelectorAll(".range-button").forEach(function (button) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.minutes) === initial));
  });
  draw(initial);
})();
