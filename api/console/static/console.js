// Mission Ledger console: small enhancements. Every page works without this file.
(function () {
  "use strict";

  function plural(n, unit) { return n + " " + unit; }

  // "2 d 3 h", "4 h 12 min", "9 min": the same words the server renders.
  function left(until) {
    var seconds = Math.floor((until - Date.now()) / 1000);
    if (seconds <= 0) { return "expired"; }
    var days = Math.floor(seconds / 86400);
    var hours = Math.floor((seconds % 86400) / 3600);
    var minutes = Math.floor((seconds % 3600) / 60);
    if (days) { return plural(days, "d") + " " + plural(hours, "h"); }
    if (hours) { return plural(hours, "h") + " " + plural(minutes, "min"); }
    return plural(Math.max(1, minutes), "min");
  }

  function tick() {
    var items = document.querySelectorAll("time[data-countdown]");
    for (var i = 0; i < items.length; i++) {
      var until = Date.parse(items[i].getAttribute("datetime"));
      if (!isNaN(until)) {
        var text = left(until);
        if (items[i].textContent !== text) { items[i].textContent = text; }
      }
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    window.setInterval(tick, 15000);
    var status = document.getElementById("live-status");
    var announced = null;
    // After a live update: tell screen readers what changed.
    document.body.addEventListener("htmx:afterSettle", function () {
      var panel = document.getElementById("mission-panel");
      if (panel && status) {
        var now = panel.getAttribute("data-version");
        if (announced !== null && announced !== now) {
          status.textContent = "Mission updated: " + panel.getAttribute("data-state") +
            ", version " + now + ".";
        }
        announced = now;
      }
      tick();
    });
    // The session ended (signed out elsewhere, idle, key revoked): the live stream says so
    // and closes; reloading shows the sign-in page instead of stale private data.
    document.body.addEventListener("htmx:sseClose", function (event) {
      if (event.detail && event.detail.type === "message") { window.location.reload(); }
    });
  });
})();
