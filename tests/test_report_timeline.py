"""The report's per-query timeline of real DataFusion runs: every (operator, partition) whose
start and end DataFusion recorded has one bar, placed on the query's time axis, in the HTML
(parsed, and in headless Chromium's DOM); the page still loads nothing from the network."""

from __future__ import annotations

import re
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datafusion_otel import attributes as attr
from datafusion_otel.report import NOT_RECORDED, render
from datafusion_otel.store import RunStore
from findings_support import capture

CHROMIUM = "/usr/bin/chromium"


class _Bars(HTMLParser):
    """Collects the timeline bars per query section, and every tag's attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.section: str | None = None
        self.bars: dict[str, dict[str, str]] = {}
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.tags.append((tag, found))
        if tag == "section" and found.get("class") == "query":
            self.section = (found.get("id") or "").rsplit("-", 1)[-1]  # dfotel-<run>-q<n>
        if "data-gantt" in found:
            self.bars[f"{self.section}/{found['data-gantt']}"] = {
                k: v or "" for k, v in found.items()
            }


def _parse(text: str) -> _Bars:
    page = _Bars()
    page.feed(text)
    return page


def _timed(store: Path, run_id: str) -> dict[str, tuple[int, int]]:
    """Section/operator:partition -> (start, end) of every row with both timestamps."""
    rows = RunStore(store).run(run_id).operator_metrics
    queries: list[tuple[object, ...]] = []
    for row in rows:  # query sections are numbered in first-seen order of their executions
        query = (row["span_id"], row["plan_hash"], row["event_time_unix_ms"])
        if query not in queries:
            queries.append(query)
    timed: dict[str, tuple[int, int]] = {}
    for row in rows:
        start, end = row["start_time_unix_ns"], row["end_time_unix_ns"]
        if start is None or end is None:
            continue
        part = "-" if row["partition"] is None else row["partition"]
        query = (row["span_id"], row["plan_hash"], row["event_time_unix_ms"])
        key = f"q{queries.index(query) + 1}/{row['operator_path']}:{part}"
        assert key not in timed  # one row per operator and partition
        timed[key] = (start, end)
    return timed


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    data = tmp_path_factory.mktemp("data")
    store = tmp_path_factory.mktemp("store")
    ids = {name: capture(store, data, name) for name in ("skew", "row_explosion", "clean")}
    return store, ids


@pytest.mark.parametrize("name", ["skew", "row_explosion", "clean"])
def test_every_timed_operator_partition_has_a_bar(
    runs: tuple[Path, dict[str, str]], name: str
) -> None:
    store, ids = runs
    timed = _timed(store, ids[name])
    assert len(timed) >= 3  # DataFusion 55 records start/end per partition
    page = _parse(render(ids[name], store=store))
    assert set(page.bars) == set(timed)
    origin = min(s for s, _e in timed.values())
    width = max(e for _s, e in timed.values()) - origin
    for key, (start, end) in timed.items():
        style = page.bars[key]["style"]
        left, size = (float(v) for v in re.findall(r"([\d.]+)%", style))
        assert size == pytest.approx(max((end - start) / width * 100, 0.15), abs=0.01)
        if size < 99.9:
            assert left == pytest.approx(min((start - origin) / width * 100, 100 - size), abs=0.01)
        assert f"lasts {(end - start) / 1e6:,.2f} ms" in page.bars[key]["title"]
    for tag, attrs in page.tags:  # still nothing loaded from the network
        assert tag not in ("link", "img", "iframe") and not (tag == "script" and "src" in attrs)
        if tag != "a":
            assert not attrs.get("src") and not attrs.get("href")


def test_no_timestamps_means_not_recorded(tmp_path: Path) -> None:
    data, store = tmp_path / "data", tmp_path / "store"
    data.mkdir()
    run_id = capture(store, data, "clean")
    for path in (store / attr.OPERATOR_METRICS_TABLE).rglob("*.parquet"):
        table = pq.read_table(path)
        keep = [c for c in table.column_names if not c.endswith("_time_unix_ns")]
        pq.write_table(table.select(keep), path)  # a store written without the timestamps
    text = render(run_id, store=store)
    assert not _parse(text).bars
    assert f'<h3>Timeline</h3><p><span class="nr">{NOT_RECORDED}</span></p>' in text


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is installed by .ci/run")
def test_bars_in_the_headless_chromium_dom_with_scripts_off(
    runs: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    store, ids = runs
    target = tmp_path / "skew.html"
    target.write_text(render(ids["skew"], store=store), encoding="utf-8")
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-javascript",
         "--disable-background-networking",
         f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", target.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert set(_parse(dom).bars) == set(_timed(store, ids["skew"]))
