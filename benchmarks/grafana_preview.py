"""The Grafana dashboard's panels, drawn from a real scrape of a run (Grafana cannot run here).

Grafana is not on PyPI nor in Debian's archive, so this draws what
``examples/grafana_dashboard.json`` shows, with matplotlib: it runs an engine with a
``PrometheusConsumer`` against the mock server in its own process (3 keys, a limit set 1.5 x
too high so that some 429s come back, 5 % faults, lognormal latency, every other answer
streamed), scrapes ``/metrics`` over
HTTP every second, and evaluates each panel's own PromQL (the few forms the dashboard uses:
``rate``, ``sum by``, ``histogram_quantile``) over those scrapes. Rates use a 15 s window
instead of the dashboard's 1 m, since the run lasts about a minute.

    python -m benchmarks.grafana_preview [--quick] [--n 3000]   # docs/img/grafana_dashboard.png
"""

from __future__ import annotations

import bisect
import collections
import json
import math
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import trio_llm
from trio_llm.testing import MockServerConfig, MockServerProcess

from ._charts import _pyplot
from ._harness import parse_options

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "examples" / "grafana_dashboard.json"
IMAGE = ROOT / "docs" / "img" / "grafana_dashboard.png"
KEYS = ("preview-key-aaaa1111", "preview-key-bbbb2222", "preview-key-cccc3333")
SERVER_RPM = 1200.0
WINDOW_S = 15.0

Labels = frozenset[tuple[str, str]]
Scrape = dict[tuple[str, Labels], float]


def scrape(url: str) -> Scrape:
    """One ``GET /metrics``, parsed: (sample name, labels) -> value."""
    text = httpx.get(url, timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Series:
    """Scrapes over time, and the PromQL forms the dashboard uses evaluated on them."""

    def __init__(self, scrapes: list[tuple[float, Scrape]]) -> None:
        self.times = [t for t, _ in scrapes]
        self.scrapes = [s for _, s in scrapes]

    def _at(self, index: int, name: str) -> dict[Labels, float]:
        return {labels: v for (n, labels), v in self.scrapes[index].items() if n == name}

    def rate(self, index: int, name: str, window: float) -> dict[Labels, float]:
        then = bisect.bisect_left(self.times, self.times[index] - window)
        span = self.times[index] - self.times[then]
        if span <= 0:
            return {}
        old, new = self._at(then, name), self._at(index, name)
        return {labels: (v - old.get(labels, 0.0)) / span for labels, v in new.items()}

    def gauge(self, index: int, name: str) -> dict[Labels, float]:
        return self._at(index, name)


def _sum_by(values: dict[Labels, float], label: str | None) -> dict[str, float]:
    out: collections.Counter[str] = collections.Counter()
    for labels, v in values.items():
        out[dict(labels).get(label, "") if label else ""] += v
    return dict(out)


def _quantile(q: float, buckets: dict[str, float]) -> float:
    """Prometheus' histogram_quantile: linear within the bucket the rank falls in."""
    pairs = sorted((math.inf if le == "+Inf" else float(le), v) for le, v in buckets.items())
    if not pairs or pairs[-1][1] <= 0:
        return math.nan
    rank = q * pairs[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in pairs:
        if count >= rank:
            if upper == math.inf:
                return lower
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return math.nan


_FORMS: list[tuple[re.Pattern[str], Callable[..., Callable[[Series, int], dict[str, float]]]]] = [
    (
        re.compile(r"histogram_quantile\(([\d.]+), sum by \(le\) \(rate\((\w+)\[\w+\]\)\)\)"),
        lambda q, name: (
            lambda s, i: {"": _quantile(float(q), _sum_by(s.rate(i, name, WINDOW_S), "le"))}
        ),
    ),
    (
        re.compile(r"sum by \((\w+)\) \(rate\((\w+)\[\w+\]\)\)"),
        lambda label, name: lambda s, i: _sum_by(s.rate(i, name, WINDOW_S), label),
    ),
    (
        re.compile(r"sum\(rate\((\w+)\[\w+\]\)\)"),
        lambda name: lambda s, i: _sum_by(s.rate(i, name, WINDOW_S), None),
    ),
    (
        re.compile(r"sum by \((\w+)\) \((\w+)\)"),
        lambda label, name: lambda s, i: _sum_by(s.gauge(i, name), label),
    ),
    (re.compile(r"sum\((\w+)\)"), lambda name: lambda s, i: _sum_by(s.gauge(i, name), None)),
]


def evaluator(expr: str) -> Callable[[Series, int], dict[str, float]]:
    """The query as a function of (scrapes, index) -> {label value: number}."""
    for pattern, build in _FORMS:
        match = pattern.fullmatch(expr)
        if match:
            return build(*match.groups())
    raise ValueError(f"the preview does not evaluate {expr!r}")


async def run_engine(base_url: str, registry: CollectorRegistry, n: int) -> list[Any]:
    engine = trio_llm.Engine(
        provider=trio_llm.OpenAICompatible(base_url=base_url, model="mock-gpt"),
        keys=list(KEYS),
        limits=trio_llm.Limits(rpm=SERVER_RPM * 1.5),
        concurrency=64,
        consumers=[trio_llm.PrometheusConsumer(registry)],
        prices=trio_llm.PriceTable(
            {"mock-gpt": trio_llm.ModelPrice(input_per_m=0.15, output_per_m=0.6)}
        ),
    )
    # Every other request streamed, so that the time-to-first-token panel has data too.
    return await engine.map(
        [
            {
                "messages": [{"role": "user", "content": f"What is {i}+{i % 7}?"}],
                "stream": i % 2 == 0,
            }
            for i in range(n)
        ]
    )


def draw(series: Series, dashboard: dict[str, Any], started: float, path: Path) -> None:
    plt = _pyplot()
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    figure = plt.figure(figsize=(16, rows * 0.4), facecolor="#111217")
    grid = figure.add_gridspec(
        rows, 24, hspace=0.6, wspace=2.0, left=0.04, right=0.99, top=0.94, bottom=0.04
    )
    figure.suptitle(
        "trio-llm dashboard (examples/grafana_dashboard.json): its panels drawn with matplotlib "
        "from real /metrics scrapes of a run against the mock server, not a Grafana screenshot",
        color="#ccccdc",
        fontsize=11,
    )
    xs = [t - started for t in series.times]
    palette = ["#73bf69", "#f2cc0c", "#5794f2", "#ff780a", "#b877d9", "#f2495c", "#8ab8ff"]
    for panel in panels:
        g = panel["gridPos"]
        # The panel's last grid row is left for its ticks and the next panel's title.
        ax = figure.add_subplot(grid[g["y"] : g["y"] + g["h"] - 2, g["x"] : g["x"] + g["w"]])
        ax.set_facecolor("#181b1f")
        for side in ax.spines.values():
            side.set_color("#2c3235")
        ax.tick_params(colors="#9fa7b3", labelsize=7)
        ax.set_title(panel["title"], color="#ccccdc", fontsize=9, loc="left")
        drawn = 0
        for target in panel["targets"]:
            evaluate = evaluator(target["expr"])
            lines: dict[str, list[float]] = collections.defaultdict(lambda: [math.nan] * len(xs))
            for i in range(len(xs)):
                for label, v in evaluate(series, i).items():
                    lines[label][i] = v
            for label, ys in sorted(lines.items()):
                if all(math.isnan(y) or y == 0 for y in ys):
                    continue
                name = target["legendFormat"].replace("{{", "").replace("}}", "")
                name = label if "{{" in target["legendFormat"] else name
                ax.plot(xs, ys, color=palette[drawn % len(palette)], linewidth=1.2, label=name)
                drawn += 1
        ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
        if drawn:
            ax.legend(fontsize=6, facecolor="#181b1f", edgecolor="#2c3235", labelcolor="#ccccdc")
        else:
            ax.text(0.5, 0.5, "No data", color="#9fa7b3", ha="center", transform=ax.transAxes)
        ax.set_xlabel("s", color="#9fa7b3", fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90, facecolor=figure.get_facecolor())
    plt.close(figure)


def main() -> None:
    options = parse_options(__doc__.splitlines()[0], runs=1)
    n = options.n or (800 if options.quick else 3000)
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:  # every query must be one the preview can evaluate
        for target in panel["targets"]:
            evaluator(target["expr"])
    registry = CollectorRegistry()
    host, port = trio_llm.serve_metrics(0, "127.0.0.1", registry=registry)
    url = f"http://{host}:{port}/metrics"
    config = MockServerConfig(
        keys=KEYS, rpm=SERVER_RPM, latency=0.4, latency_sigma=0.6, error_rate=0.05, seed=1
    )
    scrapes: list[tuple[float, Scrape]] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            scrapes.append((time.monotonic(), scrape(url)))
            stop.wait(1.0)

    with MockServerProcess(config) as mock:
        started = time.monotonic()
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        results = trio.run(run_engine, mock.base_url, registry, n)
        time.sleep(WINDOW_S)  # the rates run down to 0 after the end, as on a live dashboard
        stop.set()
        poller.join()
    final = scrapes[-1][1]
    counted = sum(v for (name, _), v in final.items() if name == "trio_llm_requests_total")
    assert counted == len(results), (counted, len(results))
    draw(Series(scrapes), dashboard, started, IMAGE)
    ok = sum(r.ok for r in results)
    print(f"{len(results)} results ({ok} ok), {len(scrapes)} scrapes; wrote {IMAGE}")


if __name__ == "__main__":
    main()
