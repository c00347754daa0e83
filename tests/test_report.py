"""The offline HTML run profile of real DataFusion runs: every operator and finding is in
the page (parsed, and in the DOM of a real headless Chromium), nothing is loaded from the
network, store texts are escaped, and values an older store lacks show as "not recorded"."""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datafusion_otel import attributes as attr
from datafusion_otel.cli import main
from datafusion_otel.findings import run_findings
from datafusion_otel.report import NOT_RECORDED, render
from datafusion_otel.store import RunStore
from findings_support import capture

CHROMIUM = "/usr/bin/chromium"
MARKUP = "<img src=x onerror=alert(1)>"


class _Page(HTMLParser):
    """Collects tags with attributes, operator paths and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    @property
    def paths(self) -> set[str]:
        return {str(a["data-path"]) for _t, a in self.tags if "data-path" in a}


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    data = tmp_path_factory.mktemp("data")
    store = tmp_path_factory.mktemp("store")
    ids = {name: capture(store, data, name) for name in ("skew", "spill", "poor_pruning")}
    ids["markup"] = capture(store, data, "row_explosion", label=MARKUP)
    return store, ids


def _expected(store: Path, run_id: str) -> tuple[set[tuple[str, str]], list[str]]:
    details = RunStore(store).run(run_id)
    operators = {(r["operator_path"], r["operator_name"]) for r in details.operator_metrics}
    messages = [f["message"] for f in run_findings(RunStore(store), run_id)]
    return operators, messages


def _no_remote_loads(page: _Page) -> None:
    for tag, attrs in page.tags:
        for name in ("src", "href"):
            value = (attrs.get(name) or "").lower()
            if tag != "a":
                assert not value, (tag, attrs)  # nothing is loaded: no src/href at all
            assert not value.startswith("//")
        assert not (tag == "link" or (tag == "script" and "src" in attrs)), (tag, attrs)


class TestParsed:
    """The page parsed with html.parser holds every operator and finding."""

    @pytest.mark.parametrize("name", ["skew", "spill", "poor_pruning", "markup"])
    def test_every_operator_and_finding(self, runs: tuple[Path, dict[str, str]], name: str) -> None:
        store, ids = runs
        text = render(ids[name], store=store)
        page = _parse(text)
        operators, messages = _expected(store, ids[name])
        assert messages  # each of these runs has findings
        assert page.paths == {path for path, _name in operators}
        visible = "".join(page.text)
        for _path, op_name in operators:
            assert op_name in visible
        for message in messages:
            assert message in visible
        _no_remote_loads(page)
        assert "<script>" in text and "<style>" in text  # inline only

    def test_spilled_bytes_and_pruning_shown(self, runs: tuple[Path, dict[str, str]]) -> None:
        store, ids = runs
        for name, column, label in (
            ("spill", "spilled_bytes", "spilled bytes"),
            ("poor_pruning", "pruning_row_groups_total", "row groups matched/total"),
        ):
            rows = RunStore(store).run(ids[name]).operator_metrics
            assert any((r.get(column) or 0) > 0 for r in rows), column
            visible = "".join(_parse(render(ids[name], store=store)).text)
            shown = re.findall(rf"{label} ([0-9,]+)", visible)
            assert shown and any(v.split(",")[0] != "0" for v in shown), (label, shown)

    def test_markup_label_is_text(self, runs: tuple[Path, dict[str, str]]) -> None:
        store, ids = runs
        text = render(ids["markup"], store=RunStore(store))
        page = _parse(text)
        assert not [t for t, _a in page.tags if t == "img"]
        assert MARKUP in "".join(page.text)
        assert "&lt;img src=x onerror=alert(1)&gt;" in text

    def test_trace_link(self, runs: tuple[Path, dict[str, str]]) -> None:
        store, ids = runs
        text = render(ids["spill"], store=store, trace_url_template="http://127.0.0.1/t/{run_id}")
        links = [a["href"] for t, a in _parse(text).tags if t == "a"]
        assert links == [f"http://127.0.0.1/t/{ids['spill']}"]
        assert "<a " not in render(
            ids["spill"], store=store, trace_url_template="javascript:{run_id}"
        )


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by .ci/run")
def test_in_headless_chromium(runs: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """The DOM Chromium builds from the file holds every operator; markup stays text."""
    store, ids = runs
    for name in ("skew", "markup"):
        target = tmp_path / f"{name}.html"
        assert main(["report", "--store", str(store), ids[name], "-o", str(target)]) == 0
        dom = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
             "--dump-dom", target.as_uri()],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        page = _parse(dom)
        operators, messages = _expected(store, ids[name])
        assert page.paths == {path for path, _name in operators}
        visible = "".join(page.text)
        for message in messages:
            assert message in visible
        if name == "markup":
            assert not [t for t, _a in page.tags if t == "img"]
            assert MARKUP in visible


def test_older_store_shows_not_recorded(tmp_path: Path) -> None:
    """Operator-metrics files without the newer columns: the page says "not recorded"."""
    data = tmp_path / "data"
    data.mkdir()
    store = tmp_path / "store"
    run_id = capture(store, data, "poor_pruning", label="older")
    for path in (store / attr.OPERATOR_METRICS_TABLE).rglob("*.parquet"):
        table = pq.read_table(path)
        keep = [c for c in table.column_names if c not in ("spill_count", "spilled_bytes")
                and not c.startswith("pruning_")]  # fmt: skip
        pq.write_table(table.select(keep), path)
    text = render(run_id, store=store)
    visible = "".join(_parse(text).text)
    assert f"spills {NOT_RECORDED}" in visible and f"spilled bytes {NOT_RECORDED}" in visible
    assert f"row groups matched/total {NOT_RECORDED}" in visible  # the Parquet scan
    assert f"pages matched/total {NOT_RECORDED}" in visible
    # the metrics pruning and spill findings need are gone: no such finding, never a guess (a
    # timing-based finding such as slow_operator may still appear on a loaded machine)
    findings = text.split("Findings (", 1)[1].split('class="query"', 1)[0]
    assert "poor_pruning" not in findings and ">spill<" not in findings, findings


def test_report_command_writes_one_file(
    runs: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    store, ids = runs
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--store", str(store), ids["spill"][:12]]) == 0
    written = Path(capsys.readouterr().out.strip())
    assert written.name == f"run-{ids['spill'][:12]}.html"
    assert (tmp_path / written).read_text(encoding="utf-8") == render(ids["spill"], store=store)


def test_finished_run_displays_its_profile_in_a_notebook(tmp_path: Path) -> None:
    """``DataFusionRun._repr_html_``: the profile from the run's own sink (collector, store)."""
    from datafusion_otel import DiagnosticsCollector, tracked_run
    from datafusion_otel.store import ParquetSink

    data = tmp_path / "data"
    data.mkdir()
    sink = DiagnosticsCollector()
    capture(sink, data, "row_explosion", label="notebook")
    rows = sink.events_snapshot()[attr.OPERATOR_METRICS_TABLE]
    with tracked_run(label="open", sink=sink) as running:
        assert running._repr_html_() is None  # still running
    runs = sink.events_snapshot()[attr.RUNS_TABLE]
    assert runs[0]["label"] == "notebook"
    from datafusion_otel.runs import DataFusionRun

    finished = DataFusionRun(**{k: v for k, v in runs[0].items() if k in ("run_id", "label",
                             "start_time_unix_ms", "end_time_unix_ms", "status")})  # fmt: skip
    finished._sink = sink
    page = _parse(finished._repr_html_() or "")
    assert page.paths == {r["operator_path"] for r in rows} and page.paths
    assert "row_explosion" in "".join(page.text)
    with ParquetSink(tmp_path / "store") as store_sink:
        with tracked_run(label="stored", sink=store_sink) as run:
            pass
        assert "stored" in "".join(_parse(run._repr_html_() or "").text)
