"""``ridestream drift``: a range of ``rides.events`` against each model version's training
reference — per feature PSI and Wasserstein distance, the shifted features first — and the
models' quality on the completed rides of the range, as a self-contained HTML page.

The range is read once, bounded like a replay (no group joined, nothing committed); the features
are built by the same code the services use (:func:`shared.ml.artifacts.build_features`) and
binned with the version's own reference bins (:mod:`shared.ml.reference`).
"""

from __future__ import annotations

import html
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from confluent_kafka import TopicPartition  # noqa: E402

from consumers.report import svg_of  # noqa: E402
from shared.contract.codec import InvalidMessage, read_event, read_events  # noqa: E402
from shared.kafka.clients import make_consumer  # noqa: E402
from shared.kafka.settings import Settings  # noqa: E402
from shared.ml.artifacts import TARGETS, Model  # noqa: E402
from shared.ml.features import PROGRESS_FIELDS, REQUEST_FIELDS, columns_from_events  # noqa: E402
from shared.ml.reference import (  # noqa: E402
    CALENDAR,
    PREDICTION,
    Reference,
    psi,
    read_reference,
    wasserstein,
)

MODERATE, SHIFTED = 0.1, 0.25  # PSI thresholds: below 0.1 stable, 0.1–0.25 moderate, above 0.25 shifted


@dataclass
class FeatureDrift:
    feature: str
    kind: str
    psi: float
    wasserstein: float | None  # numeric only: in training standard deviations
    labels: list[str]
    reference: list[float]  # the training share of each bin
    observed: list[float]  # the range's share of each bin

    @property
    def verdict(self) -> str:
        if self.feature in CALENDAR:
            return "calendar"  # what time the range covers, not a change of traffic
        return "shifted" if self.psi > SHIFTED else "moderate" if self.psi > MODERATE else "stable"


@dataclass
class ModelDriftReport:
    model: str
    version: str
    rows: int
    features: list[FeatureDrift] = field(default_factory=list)  # most shifted first
    trained_mae: float | None = None
    mae: float | None = None  # on the completed rides of the range
    rides: int = 0
    note: str = ""


@dataclass
class DriftReport:
    topic: str
    events: int
    ranges: dict[tuple[str, int], tuple[int, int]]
    models: list[ModelDriftReport]
    generated: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))


def read_range(settings: Settings, ranges: dict[tuple[str, int], tuple[int, int]], timeout: float = 60) -> list[Any]:
    """The valid events of the ranges (bad ones are skipped: the DLQ has them)."""
    remaining = {tp: end for tp, (start, end) in ranges.items() if end > start}
    if not remaining:
        return []
    consumer = make_consumer(settings, f"{settings.namespace}ridestream-drift-{uuid.uuid4().hex[:8]}")
    consumer.assign([TopicPartition(t, p, ranges[(t, p)][0]) for t, p in remaining])
    events: list[Any] = []
    idle_until = None
    try:
        while remaining:
            msgs = consumer.consume(10_000, 0.5)
            values = []
            for msg in msgs:
                tp = (msg.topic(), msg.partition())
                if msg.error() is not None or tp not in remaining or msg.offset() >= remaining[tp]:
                    continue
                values.append(msg.value())
                if msg.offset() + 1 >= remaining[tp]:
                    del remaining[tp]
            if not values:
                idle_until = idle_until or datetime.now().timestamp() + timeout
                if datetime.now().timestamp() > idle_until:
                    break
                continue
            idle_until = None
            batch = read_events(values)
            if batch is None:
                batch = []
                for value in values:
                    try:
                        batch.append(read_event(value))
                    except InvalidMessage:
                        continue
            events.extend(batch)
    finally:
        consumer.close()
    return events


def model_inputs(model: Model, events: list[Any]) -> tuple[dict[str, np.ndarray] | None, np.ndarray]:
    """The columns a model scores in the range (requests; the dynamic model: progress with the
    ride's initial estimate when its request is in the range) and their ride ids."""
    if model.name == "dynamic_duration":
        initial = {e.ride_id: e.initial_duration_min for e in events if e.event_type == "ride_requested"}
        chosen = [e for e in events if e.event_type == "ride_progress"]
        if not chosen:
            return None, np.empty(0)
        cols = columns_from_events(chosen, [f for f in PROGRESS_FIELDS if f != "initial_duration_min"])
        cols["initial_duration_min"] = np.array([initial.get(e.ride_id) for e in chosen], dtype=np.float64)
    else:
        chosen = [e for e in events if e.event_type == "ride_requested"]
        if not chosen:
            return None, np.empty(0)
        cols = columns_from_events(chosen, REQUEST_FIELDS)
    return cols, np.array([e.ride_id for e in chosen])


def actuals(events: list[Any]) -> dict[str, dict[str, float]]:
    """ride_id → the completed ride's targets (duration, tip, cost = total − tip)."""
    out = {}
    for e in events:
        if e.event_type == "ride_completed":
            out[e.ride_id] = {"duration_min": e.duration_min, "tip_amount": e.tip_amount,
                              "cost_amount": e.total_amount - e.tip_amount}
    return out


def measure(model: Model, reference: Reference | None, events: list[Any],
            done: dict[str, dict[str, float]]) -> ModelDriftReport:
    """One model version's drift and quality over the range's events."""
    report = ModelDriftReport(model.name, model.version, 0, trained_mae=(model.metadata.get("metrics") or {}).get("mae"))
    cols, ride_ids = model_inputs(model, events)
    if cols is None:
        report.note = "no events this model scores in the range"
        return report
    captured: list[tuple[np.ndarray, np.ndarray]] = []
    model.observers.append(lambda X, y: captured.append((X, y)))
    try:
        predictions = model.predict_columns(cols)
    finally:
        model.observers.pop()
    X = captured[0][0]
    report.rows = len(X)
    target = TARGETS[model.name]
    if model.name != "dynamic_duration":
        known = np.array([r in done for r in ride_ids])
        if known.any():
            truth = np.array([done[r][target] for r in ride_ids[known]])
            report.mae, report.rides = float(np.mean(np.abs(predictions[known] - truth))), int(known.sum())
    if reference is None:
        report.note = "no reference.json beside the model: `ridestream models reference` computes it"
        return report
    names = list(model.metadata.get("features") or [])
    for feature, bins in reference.features.items():
        values = predictions if feature == PREDICTION else X[:, names.index(feature)] if feature in names else None
        if values is None:
            continue
        counts = np.bincount(bins.index(values), minlength=bins.bins)
        report.features.append(FeatureDrift(feature, bins.kind, psi(bins.fractions, counts), wasserstein(bins, values),
                                            bins.labels(), bins.fractions.tolist(), (counts / counts.sum()).tolist()))
    # the shifted features first; the calendar's last: a range of minutes holds one hour of one day
    report.features.sort(key=lambda f: (f.feature in CALENDAR, -f.psi))
    return report


def build(settings: Settings, models: dict[str, Model], ranges: dict[tuple[str, int], tuple[int, int]]) -> DriftReport:
    events = read_range(settings, ranges)
    done = actuals(events)
    reports = [measure(m, read_reference(m.path), events, done) for m in models.values()]
    topic = next(iter(ranges))[0] if ranges else settings.topics.events
    return DriftReport(topic, len(events), ranges, reports)


# --- HTML ----------------------------------------------------------------------------------------
def _psi_chart(r: ModelDriftReport) -> str:
    feats = [f for f in reversed(r.features) if f.feature not in CALENDAR]  # the calendar's are in the table
    fig, ax = plt.subplots(figsize=(5.2, 0.28 * len(feats) + 1.2))
    colours = ["#dc2626" if f.psi > SHIFTED else "#f59e0b" if f.psi > MODERATE else "#10b981" for f in feats]
    ax.barh([f.feature for f in feats], [f.psi for f in feats], color=colours)
    for x, style in ((MODERATE, ":"), (SHIFTED, "--")):
        ax.axvline(x, color="#6b7280", linestyle=style, linewidth=1)
    ax.set(xlabel="PSI against the training data", title=f"{r.model} {r.version}: drift per feature")
    return svg_of(fig)


def _bins_chart(model: str, f: FeatureDrift) -> str:
    keep = [i for i, (a, b) in enumerate(zip(f.reference, f.observed)) if a > 0 or b > 0]
    x = np.arange(len(keep))
    fig, ax = plt.subplots(figsize=(5.2, 2.8))
    ax.bar(x - 0.2, [f.reference[i] for i in keep], 0.4, label="training", color="#9ca3af")
    ax.bar(x + 0.2, [f.observed[i] for i in keep], 0.4, label="this range", color="#2563eb")
    ax.set_xticks(x, [f.labels[i] for i in keep], rotation=60 if len(keep) > 8 else 30, fontsize=7, ha="right")
    ax.set(ylabel="share of rows", title=f"{model}: {f.feature} (PSI {f.psi:.2f})")
    ax.legend(frameon=False, fontsize=8)
    return svg_of(fig)


def _quality_chart(models: list[ModelDriftReport]) -> str:
    rated = [m for m in models if m.mae is not None and m.trained_mae]
    fig, ax = plt.subplots(figsize=(5.2, 2.8))
    x = np.arange(len(rated))
    ax.bar(x - 0.2, [m.trained_mae for m in rated], 0.4, label="trained (held-out trips)", color="#9ca3af")
    ax.bar(x + 0.2, [m.mae for m in rated], 0.4, label="this range", color="#0f766e")
    ax.bar(x, [m.trained_mae * 1.2 for m in rated], 0.8, fill=False, edgecolor="#dc2626", linestyle="--",
           label="alert: trained × 1.2")
    ax.set_xticks(x, [m.model for m in rated])
    ax.set(ylabel="mean absolute error", title="quality on the range's completed rides")
    ax.legend(frameon=False, fontsize=8)
    return svg_of(fig)


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def render(report: DriftReport) -> str:
    """The report as one HTML page: inline SVG, no scripts, no external resources."""
    e = html.escape
    quality_rows = "".join(
        f"<tr><td>{e(m.model)}</td><td>{e(m.version)}</td><td>{m.rides:,}</td><td>{_fmt(m.trained_mae)}</td>"
        f"<td>{_fmt(m.mae)}</td><td class='{'bad' if m.mae and m.trained_mae and m.mae > 1.2 * m.trained_mae else ''}'>"
        f"{_fmt(m.mae / m.trained_mae if m.mae is not None and m.trained_mae else None, 2)}</td></tr>"
        for m in report.models)
    rated = any(m.mae is not None and m.trained_mae for m in report.models)
    quality = (f"<section id='quality'><h2>Quality</h2><p>MAE of each version on the completed rides of the range "
               f"(request and completion both in it) against its MAE on held-out trips at training; the alert "
               f"fires online above 1.2×.</p><table><thead><tr><th>model</th><th>version</th><th>rides</th>"
               f"<th>trained MAE</th><th>MAE here</th><th>ratio</th></tr></thead><tbody>{quality_rows}</tbody>"
               f"</table>{_quality_chart(report.models) if rated else '<p>No completed rides in the range.</p>'}"
               f"</section>")
    sections = []
    for m in report.models:
        if not m.features:
            sections.append(f"<section><h3>{e(m.model)} {e(m.version)}</h3><p>{e(m.note)}</p></section>")
            continue
        rows = "".join(
            f"<tr><td>{e(f.feature)}{' <small>(calendar)</small>' if f.feature in CALENDAR else ''}</td>"
            f"<td>{f.kind}</td><td>{f.psi:.3f}</td><td>{_fmt(f.wasserstein)}</td>"
            f"<td class='{f.verdict}'>{f.verdict}</td></tr>" for f in m.features)
        top = [f for f in m.features if f.feature not in CALENDAR][:2]
        charts = _psi_chart(m) + "".join(_bins_chart(m.model, f) for f in top)
        sections.append(
            f"<section><h3>{e(m.model)} {e(m.version)} <small>({m.rows:,} rows)</small></h3>"
            f"<div class='charts'>{charts}</div><table><thead><tr><th>feature</th><th>kind</th><th>PSI</th>"
            f"<th>Wasserstein (σ)</th><th>verdict</th></tr></thead><tbody>{rows}</tbody></table></section>")
    parts = ", ".join(f"{p}: {s}–{t}" for (_, p), (s, t) in sorted(report.ranges.items()))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ridestream drift — {e(report.topic)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #111827; }}
h2 {{ margin-top: 2rem; }} h3 small {{ color: #6b7280; font-weight: normal; }}
table {{ border-collapse: collapse; margin: 1rem 0; }}
th, td {{ border: 1px solid #d1d5db; padding: 0.3rem 0.7rem; text-align: right; }}
th {{ background: #f3f4f6; }} td:first-child, td:nth-child(2) {{ text-align: left; }}
.shifted, .bad {{ background: #fee2e2; color: #991b1b; }} .moderate {{ background: #fef3c7; }}
.stable {{ color: #047857; }} .calendar {{ color: #6b7280; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1rem; }} .charts svg {{ max-width: 34rem; height: auto; }}
footer {{ color: #6b7280; margin-top: 2rem; font-size: 0.9em; }}
</style></head>
<body><h1>ridestream drift</h1>
<p>{report.events:,} events of <b>{e(report.topic)}</b> (partition: offsets {e(parts) or 'none'}) against each model
version's training data. PSI below {MODERATE} is stable, {MODERATE}–{SHIFTED} moderate, above {SHIFTED} a shift;
Wasserstein is in standard deviations of the training values. Calendar features (hour, weekday) drift with the
range's own span.</p>
{quality}
<section id='drift'><h2>Drift</h2>{''.join(sections)}</section>
<footer>Generated {report.generated} by <code>ridestream drift</code>.</footer></body></html>
"""
