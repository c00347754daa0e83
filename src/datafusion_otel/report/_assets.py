"""The report's inline stylesheet and script (nothing is loaded from the network)."""

from __future__ import annotations

__all__ = ["SCRIPT", "STYLE"]

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2430;background:#fff}
h1{font-size:1.4em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccd}
h3{font-size:1em}
pre{background:#f4f5f8;padding:.6em;overflow:auto;white-space:pre-wrap}
table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #d5d8e0;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#eef0f5}
table.grid th{cursor:pointer}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.meta th{width:8em}
.badge{display:inline-block;border-radius:3px;padding:0 5px;margin-left:4px;
  font-size:.8em;color:#fff}
.critical{background:#b3261e}.warning{background:#c77700}.info{background:#3366aa}
.tree details{margin-left:1.2em;border-left:1px dotted #aab}
.tree summary{cursor:pointer}
.tree .leaf{margin-left:2.2em}
.op{font-weight:600}.line{color:#556;font-family:monospace;font-size:.85em}
.figs{color:#333;font-size:.85em}
.bar{display:inline-block;height:.7em;background:#e0733a;margin-right:4px;vertical-align:middle}
.nr{color:#999}
.gantt{border:1px solid #d5d8e0;padding:4px;font-size:.8em}
.grow{display:flex;align-items:center;height:1.3em}
.glabel{flex:0 0 22em;overflow:hidden;white-space:nowrap;text-overflow:ellipsis;
  font-family:monospace}
.gtrack{position:relative;flex:1 1 auto;height:.9em;background:#f4f5f8}
.gbar{position:absolute;top:0;bottom:0;background:#3366aa;min-width:1px}
.gtime{flex:0 0 7em;text-align:right;font-variant-numeric:tabular-nums}
"""

SCRIPT = """
document.querySelectorAll('table.grid').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = th.getAttribute('data-order') !== 'asc';
      th.setAttribute('data-order', asc ? 'asc' : 'desc');
      rows.sort(function (a, b) {
        var x = a.cells[col].getAttribute('data-v') || a.cells[col].textContent;
        var y = b.cells[col].getAttribute('data-v') || b.cells[col].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""
