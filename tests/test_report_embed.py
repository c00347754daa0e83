"""The run profile of a query that failed while executing (its SQL and plans are shown) and
the notebook form of the profile (a fragment whose CSS and ids cannot leak into the page)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from datafusion import SessionContext

from datafusion_otel import DiagnosticsCollector, tracked_run
from datafusion_otel.bridge import sql_to_datafusion
from datafusion_otel.compile_options import ALL_ARTIFACTS, DataFusionCompileOptions
from datafusion_otel.report import NOT_CAPTURED, NOT_RECORDED, render
from datafusion_otel.store import ParquetSink, RunStore

SCOPE = ".dfotel-profile"
FAILING = "SELECT CAST(column1 AS INT) + 1 FROM t WHERE column1 <> 'secret-literal'"


class _Tags(HTMLParser):
    """Collects start tags, the visible text and the stylesheet text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.style: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in = tag

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        (self.style if self._in == "style" else self.text).append(data)

    def ids(self) -> set[str]:
        return {str(a["id"]) for _t, a in self.tags if a.get("id")}


def _parse(text: str) -> _Tags:
    page = _Tags()
    page.feed(text)
    return page


def _context() -> SessionContext:
    ctx = SessionContext()
    ctx.sql("CREATE TABLE t AS VALUES ('1'), ('x'), ('3')").collect()
    return ctx


def _run(ctx: SessionContext, sql: str, sink: object, label: str) -> object:
    with tracked_run(label=label, sink=sink) as run:  # type: ignore[arg-type]
        sql_to_datafusion(sql, ctx=ctx, options=DataFusionCompileOptions()).to_arrow_table()
    return run


def test_failed_query_shows_its_stored_sql_and_plans(tmp_path: Path) -> None:
    """A query failing at execution leaves plan artifacts and no operator metrics: the page
    still shows its (sanitized) SQL, plans and artifact errors, figures "not recorded"."""
    ctx = _context()
    with ParquetSink(tmp_path / "store") as sink:
        with pytest.raises(Exception, match="Cast error"):
            with tracked_run(label="exec-fail", sink=sink) as run:
                sql_to_datafusion(
                    FAILING, ctx=ctx, options=DataFusionCompileOptions(artifacts=ALL_ARTIFACTS)
                ).collect()
    store = RunStore(tmp_path / "store")
    details = store.run(run.run_id)
    assert details.run["status"] == "failed"
    assert len(details.operator_metrics) == 0
    (artifact,) = list(details.plan_artifacts)
    text = render(run.run_id, store=store)
    page = _parse(text)
    visible = "".join(page.text)
    assert artifact["sql"] and artifact["sql"] in visible  # as stored (sanitized)
    assert "secret-literal" not in artifact["sql"]
    for name in ("logical_plan", "optimized_plan", "physical_plan"):
        assert artifact[name] and artifact[name].strip() in visible, name
    errors = json.loads(artifact["artifact_errors"])
    assert errors
    for key, message in errors.items():
        assert key in visible and message in visible
    assert f"Operator metrics: {NOT_RECORDED}" in visible
    assert len(re.findall(r'<section class="query"', text)) == 1


def _style_selectors(css: str) -> list[str]:
    selectors = []
    for rule in css.split("}"):
        if rule.strip():
            selectors += [s.strip() for s in rule.split("{", 1)[0].split(",")]
    return selectors


def test_notebook_profile_is_a_scoped_fragment() -> None:
    """``_repr_html_`` gives a fragment: no document tags, every CSS rule under the wrapper's
    class, element ids prefixed per run (two runs' profiles share none)."""
    ctx = _context()
    sink = DiagnosticsCollector()
    runs = [_run(ctx, "SELECT column1 FROM t WHERE column1 > '1'", sink, f"<i>nb{i}</i>")
            for i in (1, 2)]  # fmt: skip
    fragments = [run._repr_html_() for run in runs]  # type: ignore[attr-defined]
    ids = []
    for run, text in zip(runs, fragments, strict=True):
        assert text is not None
        assert not re.search(r"<!DOCTYPE|<html|<body|<head", text, re.I)
        page = _parse(text)
        tag, attrs = page.tags[0]
        wrapper = f"dfotel-{run.run_id}"  # type: ignore[attr-defined]
        assert (tag, attrs.get("class"), attrs.get("id")) == ("div", "dfotel-profile", wrapper)
        assert text.endswith("</div>")
        css = "".join(page.style)
        selectors = _style_selectors(css)
        assert selectors and all(s == SCOPE or s.startswith(SCOPE + " ") for s in selectors)
        assert all(i == wrapper or i.startswith(wrapper + "-") for i in page.ids())
        assert any(i.startswith(wrapper + "-q") for i in page.ids())  # the query sections
        assert f"'{wrapper}'" in text  # the script finds its own wrapper
        assert "document.querySelectorAll" not in text  # and nothing outside it
        assert "&lt;i&gt;nb" in text
        ids.append(page.ids())
    assert not ids[0] & ids[1]


def test_sql_help_lists_every_store_table(capsys: pytest.CaptureFixture[str]) -> None:
    """``datafusion-otel sql --help`` names every table the store registers (findings too)."""
    from datafusion_otel.cli import main
    from datafusion_otel.store.run_store import STORE_TABLES

    assert main(["sql", "--help"]) == 0
    listed = " ".join(capsys.readouterr().out.split()).split("tables: ", 1)[1]
    for name in (*STORE_TABLES, "artifacts"):
        assert re.search(rf"\b{name}\b", listed), name


def test_a_plan_text_outside_the_capture_set_is_said_not_captured(tmp_path: Path) -> None:
    """The default set leaves the optimized plan out (it re-runs the optimizer): the profile
    says it was not captured, rather than showing an empty block."""
    ctx = SessionContext()
    ctx.sql("CREATE TABLE t AS VALUES ('1'), ('2')").collect()
    with ParquetSink(tmp_path / "store") as sink, tracked_run(label="default", sink=sink) as run:
        sql_to_datafusion("SELECT column1 FROM t", ctx=ctx).collect()
    store = RunStore(tmp_path / "store")
    (artifact,) = list(store.run(run.run_id).plan_artifacts)
    assert artifact["optimized_plan"] is None and artifact["physical_plan"]
    visible = "".join(_parse(render(run.run_id, store=store)).text)
    assert NOT_CAPTURED in visible
    assert artifact["physical_plan"].strip() in visible
