// bmeseg cohort page: sort by any column, filter by text, flags and registration status. No libraries.
(function () {
  "use strict";
  var table = document.getElementById("studies");
  if (!table) { return; }
  var tbody = table.tBodies[0];
  var rows = Array.prototype.slice.call(tbody.rows);
  var search = document.getElementById("filter-text");
  var flaggedOnly = document.getElementById("filter-flagged");
  var regSelect = document.getElementById("filter-registration");
  var counter = document.getElementById("shown-count");

  function sortValue(row, col) {
    var cell = row.cells[col];
    var v = cell.getAttribute("data-v");
    return v === null ? cell.textContent.trim() : v;
  }

  // blanks (missing values) sort last in both directions
  function compare(a, b, numeric, desc) {
    var sign = desc ? -1 : 1;
    if (numeric) {
      var x = parseFloat(a), y = parseFloat(b);
      var xn = isNaN(x), yn = isNaN(y);
      if (xn || yn) { return xn === yn ? 0 : (xn ? 1 : -1); }
      return sign * (x - y);
    }
    if (!a || !b) { return !a === !b ? 0 : (!a ? 1 : -1); }
    return sign * a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  }

  function sortBy(th) {
    var col = th.cellIndex;
    var numeric = th.getAttribute("data-type") === "num";
    var desc = th.classList.contains("sorted-asc");
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (h) {
      h.classList.remove("sorted-asc", "sorted-desc");
    });
    th.classList.add(desc ? "sorted-desc" : "sorted-asc");
    var keyed = rows.map(function (r, i) { return [sortValue(r, col), i, r]; });
    keyed.sort(function (p, q) {
      var c = compare(p[0], q[0], numeric, desc);
      return c !== 0 ? c : p[1] - q[1];
    });
    keyed.forEach(function (k) { tbody.appendChild(k[2]); });
  }

  function applyFilter() {
    var text = (search && search.value || "").toLowerCase();
    var onlyFlagged = flaggedOnly && flaggedOnly.checked;
    var reg = regSelect ? regSelect.value : "";
    var shown = 0;
    rows.forEach(function (r) {
      var ok = (!text || r.textContent.toLowerCase().indexOf(text) >= 0)
        && (!onlyFlagged || r.getAttribute("data-flagged") !== "0")
        && (!reg || r.getAttribute("data-registration") === reg);
      r.hidden = !ok;
      if (ok) { shown += 1; }
    });
    if (counter) { counter.textContent = String(shown); }
  }

  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    if (th.hasAttribute("data-type")) {
      th.addEventListener("click", function () { sortBy(th); });
      th.title = "click to sort";
    }
  });
  [search, flaggedOnly, regSelect].forEach(function (el) {
    if (el) { el.addEventListener("input", applyFilter); el.addEventListener("change", applyFilter); }
  });
  applyFilter();
  window.bmesegCohort = { sortBy: sortBy, applyFilter: applyFilter };
}());
