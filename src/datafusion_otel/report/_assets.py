"""The report's inline stylesheet and script (nothing is loaded from the network)."""

from __future__ import annotations

__all__ = ["PAGE_STYLE", "SCOPE", "STYLE", "script"]

SCOPE = "dfotel-profile"
"""Class of the wrapper ``<div>`` of every profile; every CSS rule is scoped under it."""

_RULES = """
{font:14px/1.4 system-ui,sans-serif;color:#1d2430;background:#fff}
h1{font-size:1.4em}
h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccd}
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
.critical{background:#b3261e}
.warning{background:#c77700}
.info{background:#3366aa}
.tree details{margin-left:1.2em;border-left:1px dotted #aab}
.tree summary{cursor:pointer}
.tree .leaf{margin-left:2.2em}
.op{font-weight:600}
.line{color:#556;font-family:monospace;font-size:.85em}
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


def _scoped(rules: str) -> str:
    """Prefix every selector of ``rules`` (``selectors{declarations}`` each) with ``.SCOPE``."""
    out = []
    for rule in rules.replace("\n", "").split("}"):
        if not rule.strip():
            continue
        selectors, body = rule.split("{", 1)
        scoped = ",".join(
            f".{SCOPE} {s.strip()}" if s.strip() else f".{SCOPE}" for s in selectors.split(",")
        )
        out.append(f"{scoped}{{{body}}}")
    return "\n".join(out)


STYLE = _scoped(_RULES)
"""The stylesheet: every selector starts with ``.dfotel-profile`` (safe inside a notebook)."""

PAGE_STYLE = "body{margin:1.5em;background:#fff}\n"
"""Extra rule of the standalone file only."""


_SCRIPT = """
(function () {
  var me = document.currentScript;
  var root = (me && me.closest && me.closest('.dfotel-profile')) ||
    document.getElementById(ROOT_ID);
  if (!root) { return; }
  root.querySelectorAll('table.grid').forEach(function (table) {
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
})();
"""


def script(root_id: str) -> str:
    """The sorting script, acting only inside the wrapper whose id is ``root_id``.

    Args:
        root_id: The wrapper's id (letters, digits, ``-`` and ``_`` only).
    """
    return _SCRIPT.replace("ROOT_ID", f"'{root_id}'")
