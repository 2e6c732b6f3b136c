"""The report's figures, drawn with matplotlib's file-only backend and returned as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # no display: figures are only written
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def curves(panels: list[tuple[str, dict[str, list[tuple[float, float]]]]], xlabel: str = "step") -> bytes:
    """One panel per (title, {label: [(x, y), ...]}), side by side."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels):
        for label, points in lines.items():
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, label=label, marker="." if len(points) < 30 else None)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))  # whole numbers, few enough not to overlap
        if len(lines) > 1:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return png(fig)


def scatter(points: dict[str, tuple[float, float]], xlabel: str, ylabel: str, title: str) -> bytes:
    """Labelled points, e.g. one per model version (paper Fig. 11)."""
    fig, ax = plt.subplots(figsize=(5, 4))
    labels_at: dict[tuple[float, float], list[str]] = {}  # versions that did not move share one label
    for label, (x, y) in points.items():
        labels_at.setdefault((x, y), []).append(label)
    for (x, y), labels in labels_at.items():
        ax.scatter([x], [y])
        ax.annotate(", ".join(labels), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(5))  # close values would print their ticks on top of each other
    ax.margins(x=0.25, y=0.15)  # room inside the axes for the labels of the outermost points
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return png(fig)


def quantile_boxes(distributions: dict[str, dict], title: str) -> bytes:
    """Box plots from stored quantiles (p10/p25/p50/p75/p90 as whiskers and box), one per label."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    stats = [{"label": label, "whislo": q["p10"], "q1": q["p25"], "med": q["p50"], "q3": q["p75"], "whishi": q["p90"],
              "mean": q["mean"], "fliers": []} for label, q in distributions.items() if q]
    if stats:
        ax.bxp(stats, showmeans=True, orientation="horizontal")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return png(fig)
