// The leaderboard page's behaviour: sortable tables and row filters, with the state of the page's main table in
// the URL fragment (#sort=image_auroc&dir=desc&k=4), so a sorted and filtered view is a link to share. No library,
// no network: it runs from file:// offline.
(function () {
  "use strict";

  function readState() {
    var state = {};
    location.hash.replace(/^#/, "").split("&").forEach(function (pair) {
      if (!pair) return;
      var at = pair.indexOf("=");
      var key = decodeURIComponent(at < 0 ? pair : pair.slice(0, at));
      state[key] = at < 0 ? "" : decodeURIComponent(pair.slice(at + 1).replace(/\+/g, " "));
    });
    return state;
  }

  function writeState(state) {
    var parts = Object.keys(state).filter(function (key) { return state[key] !== undefined; }).map(function (key) {
      return encodeURIComponent(key) + "=" + encodeURIComponent(state[key]);
    });
    var hash = parts.length ? "#" + parts.join("&") : "";
    try {
      history.replaceState(null, "", location.pathname + location.search + hash);
    } catch (error) { /* some browsers refuse replaceState on file://: the page still works */ }
  }

  function cellValue(row, index, numeric) {
    var cell = row.cells[index];
    if (!cell) return null;
    var raw = cell.hasAttribute("data-value") ? cell.getAttribute("data-value") : cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    var number = parseFloat(raw);
    return isNaN(number) ? null : number;
  }

  function sortTable(table, key, dir) {
    var header = table.querySelector('th[data-key="' + key + '"]');
    if (!header) return false;
    var index = Array.prototype.indexOf.call(header.parentNode.children, header);
    var numeric = header.getAttribute("data-type") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var sign = dir === "asc" ? 1 : -1;
    rows.forEach(function (row, position) { row._position = position; });
    rows.sort(function (a, b) {
      var x = cellValue(a, index, numeric), y = cellValue(b, index, numeric);
      if (x === null || x === "") return (y === null || y === "") ? a._position - b._position : 1;  // empty last
      if (y === null || y === "") return -1;
      if (x < y) return -sign;
      if (x > y) return sign;
      return a._position - b._position;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.querySelectorAll("th[data-key]"), function (th) {
      th.removeAttribute("aria-sort");
    });
    header.setAttribute("aria-sort", dir === "asc" ? "ascending" : "descending");
    table.setAttribute("data-sorted", key + ":" + dir);
    return true;
  }

  function filterRows(table, filters) {
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var keep = Object.keys(filters).every(function (name) {
        var wanted = filters[name];
        return wanted === "" || wanted === undefined || row.getAttribute("data-f-" + name) === wanted;
      });
      row.hidden = !keep;
      if (keep) shown += 1;
    });
    var counter = document.querySelector('[data-count-of="' + table.id + '"]');
    if (counter) counter.textContent = shown + " of " + table.tBodies[0].rows.length + " rows";
    table.setAttribute("data-shown", String(shown));
  }

  function tableFilters(table) {
    var filters = {};
    Array.prototype.forEach.call(document.querySelectorAll('select[data-table="' + table.id + '"]'), function (select) {
      filters[select.getAttribute("data-filter")] = select.value;
    });
    return filters;
  }

  function setUp() {
    var state = readState();
    var main = document.querySelector("table[data-main]");
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
      var isMain = table === main;
      if (isMain) {
        Array.prototype.forEach.call(document.querySelectorAll('select[data-table="' + table.id + '"]'), function (select) {
          var name = select.getAttribute("data-filter");
          if (state[name] !== undefined && select.querySelector('option[value="' + CSS.escape(state[name]) + '"]')) {
            select.value = state[name];
          }
        });
      }
      var key = (isMain && state.sort) || table.getAttribute("data-default-sort");
      var dir = (isMain && state.dir) || table.getAttribute("data-default-dir") || "desc";
      if (key && !sortTable(table, key, dir)) {
        key = table.getAttribute("data-default-sort");
        if (key) sortTable(table, key, dir);
      }
      filterRows(table, tableFilters(table));

      function remember() {
        if (!isMain) return;
        var sorted = (table.getAttribute("data-sorted") || ":").split(":");
        var next = {sort: sorted[0], dir: sorted[1]};
        var filters = tableFilters(table);
        Object.keys(filters).forEach(function (name) { next[name] = filters[name]; });
        writeState(next);
      }

      Array.prototype.forEach.call(table.querySelectorAll("th[data-key]"), function (th) {
        th.tabIndex = 0;
        function activate() {
          var current = (table.getAttribute("data-sorted") || ":").split(":");
          var dir = current[0] === th.getAttribute("data-key") && current[1] === "desc" ? "asc" : "desc";
          if (current[0] !== th.getAttribute("data-key") && th.getAttribute("data-type") !== "num") dir = "asc";
          sortTable(table, th.getAttribute("data-key"), dir);
          remember();
        }
        th.addEventListener("click", activate);
        th.addEventListener("keydown", function (event) { if (event.key === "Enter") activate(); });
      });
      Array.prototype.forEach.call(document.querySelectorAll('select[data-table="' + table.id + '"]'), function (select) {
        select.addEventListener("change", function () { filterRows(table, tableFilters(table)); remember(); });
      });
    });
    document.documentElement.setAttribute("data-ready", "1");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", setUp);
  else setUp();
})();
