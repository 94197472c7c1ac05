"""The benchmark's PNG plots, from ``report.aggregate``'s per-task rows.

Per task (``write_plots`` writes them all; ``pages.plots`` calls it):

* ``<task>-lr.png`` (``lr_sensitivity_plot``), the picture to read first: the final test
  metric against the learning rate for each grid (mean over seeds, a band of one std over
  seeds, a star at the best rate, log-x), and every entry run without a grid as a horizontal
  line at its mean over seeds: where a default lands on the curve a user would otherwise have
  searched;
* ``<task>.png`` (``curves_figure``): train loss and test metric against epochs and training
  seconds (first seed);
* ``<task>-rates.png``: the lrfree optimizers' effective rate per block over training;
* ``profile.png`` (``profile_plot``): the performance profile across tasks.

Readability: at most a dozen entries are drawn in full, each in its own colour
(``highlights``): the grids (the tuned baseline thickest), AdamW at its fixed default rate,
every peer (cool colours, dotted), ``Auto`` and each lrfree method family's best entry of the
task (warm colours, solid; families in ``method_family``). Every other entry is still drawn,
thin and light grey (``FADED``), and counted in the legend. Each artist carries a ``gid``
(``grid:SPEC``, ``default:SPEC``, ``curve:SPEC``, ``faded:SPEC``; ``off-axis`` for a grid
rate cut off the LR picture's axis) so tests and scripts can find it without reading pixels.

Example::

    >>> from lrfree.bench.report import aggregate
    >>> recs = [{"task": "t", "spec": s, "optimizer": s.partition("@")[0], "family": f,
    ...          "lr": lr, "grid": g, "seed": 0, "final_metric": v, "final_train_loss": 0.1,
    ...          "seconds": 1.0, "diverged": False, "higher_is_better": False,
    ...          "per_epoch": [{"epoch": 1, "time": 1.0, "train_loss": 0.1, "metric": v}]}
    ...         for s, f, lr, g, v in [("adamw@grid", "baseline", 1e-3, True, 0.30),
    ...                                ("adamw@grid", "baseline", 1e-2, True, 0.40),
    ...                                ("auto", "lrfree", None, False, 0.29)]]
    >>> fig = lr_figure(aggregate(recs), "t")
    >>> fig.axes[0].get_ylabel(), fig.axes[0].get_xscale()
    ('final test loss (lower is better)', 'log')
    >>> sorted(a.get_gid() for a in fig.axes[0].lines if a.get_gid())  # 0.40: off the axis
    ['default:auto', 'grid:adamw@grid', 'off-axis']
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .report import aggregate, deficits, profile

__all__ = [
    "FADED",
    "curves_figure",
    "highlights",
    "lr_figure",
    "lr_sensitivity_plot",
    "method_family",
    "profile_plot",
    "rates_figure",
    "write_plots",
]

DPI = 90

# --- families, colours and the highlighted entries ----------------------------------------

_FAMILY_OF = {
    **dict.fromkeys(("sgd-lw", "adamw-lw"), "LW"),
    **dict.fromkeys(("sgd-tlr", "adam-tlr"), "TLR"),
    **dict.fromkeys(("adalip", "rmslip", "adamlip", "adalip-u", "rmslip-u", "adamlip-u"), "AdaLip"),
    "adler": "ADLER",
    **dict.fromkeys(
        ("sgd-hd", "sgdn-hd", "adam-hd", "sgd-camhd", "sgdn-camhd", "adam-camhd"), "HD/CAM-HD"
    ),
    "auto": "Auto",
}
# lrfree families in warm colours, peers in cool ones, baselines black and greys: no colour
# is used twice among the highlighted entries of a plot
_FAMILY_COLORS = {
    "Auto": "#9e0142",
    "LW": "#d62728",
    "TLR": "#ff7f0e",
    "AdaLip": "#8c564b",
    "ADLER": "#e377c2",
    "HD/CAM-HD": "#bcbd22",
    "lrfree": "#f46d43",
}
_PEER_COLORS = {
    "prodigy": "#1f77b4",
    "dadapt-adam": "#17becf",
    "schedulefree-adamw": "#2ca02c",
    "dog": "#9467bd",
    "ldog": "#393b79",
    "prodigy-sf": "#01665e",
}
_MORE_PEER_COLORS = ("#6baed6", "#74c476", "#08519c", "#756bb1", "#3182bd", "#31a354")
_GRID_STYLE = {"adamw@grid": ("black", "o"), "sgd-m@grid": ("#8c8c8c", "s")}
_MORE_GRID_COLORS = ("#3b3b3b", "#6e6e6e", "#a5a5a5")
_FIXED_RATE_COLORS = ("#5e5e5e", "#7a6a58", "#4a5a6a")  # baselines at a fixed rate (AdamW)

FADED: dict[str, Any] = {"color": "#c4c4c4", "lw": 0.8, "alpha": 0.8, "zorder": 1}
"""The style of the entries not highlighted: thin, light grey, below the others."""


def method_family(spec: str, family: str = "lrfree") -> str:
    """The method family a spec belongs to, for colours and for picking each family's best
    entry in the plots: ``LW``, ``TLR``, ``AdaLip``, ``ADLER``, ``HD/CAM-HD`` or ``Auto`` for
    lrfree specs (a ``NAME[k=v]`` or ``NAME@...`` spec belongs to ``NAME``'s family; an
    lrfree optimizer of none of them: ``lrfree``), else the record family (``baseline``,
    ``peer``).

    Example::

        >>> method_family("sgd-lw[update_every=1,beta_t=0.0]@grid"), method_family("rmslip-u")
        ('LW', 'AdaLip')
        >>> method_family("prodigy", "peer"), method_family("sgdn-camhd[form='additive']")
        ('peer', 'HD/CAM-HD')
    """
    if family != "lrfree":
        return family
    from .optimizers import split_spec

    return _FAMILY_OF.get(split_spec(spec)[0].partition("[")[0], "lrfree")


def _score(row: dict[str, Any], higher: bool) -> float:
    """Larger is better; a non-finite mean is the worst."""
    v = row["acc_mean"]
    if not math.isfinite(v):
        return -math.inf
    return v if higher else -v


def _family_bests(t: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per lrfree method family, its best row of the task (by mean final metric)."""
    best: dict[str, dict[str, Any]] = {}
    higher = t["higher_is_better"]
    for r in t["rows"]:
        if r["family"] != "lrfree":
            continue
        fam = method_family(r["spec"])
        if fam not in best or _score(r, higher) > _score(best[fam], higher):
            best[fam] = r
    return dict(sorted(best.items(), key=lambda kv: list(_FAMILY_COLORS).index(kv[0])))


def _peer_colors(rows: list[dict[str, Any]]) -> dict[str, str]:
    """A cool colour per peer spec: the known peers' own, others from a spare list."""
    out: dict[str, str] = {}
    spare = iter(_MORE_PEER_COLORS)
    for spec in sorted(r["spec"] for r in rows if r["family"] == "peer"):
        color = _PEER_COLORS.get(spec.partition("[")[0].partition("@")[0])
        if color is None or color in out.values():
            color = next(spare, None) or _hsv(len(out))
        out[spec] = color
    return out


def _hsv(i: int) -> str:
    """A further distinct cool colour (the spare lists ran out): blue-green hues."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(0.35 + (0.29 * i) % 0.35, 0.8, 0.55 + 0.1 * (i % 3))
    return f"#{round(255 * r):02x}{round(255 * g):02x}{round(255 * b):02x}"


def highlights(t: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The entries of one task (``aggregate(records)[task]``) drawn in full, in drawing
    order, each with its ``color``, line style ``ls``, width ``lw`` and ``tag``:

    * every grid (dashed; ``adamw@grid`` black, ``sgd-m@grid`` grey), the tuned baseline
      (the best grid) tagged ``tuned baseline`` and thickest; with no grid, the best
      baseline is the ``tuned baseline``;
    * the baselines at a fixed rate (AdamW at its default 1e-3; dash-dot, dark grey),
      tagged ``fixed rate``;
    * every peer (dotted, cool colours), tagged ``peer``;
    * ``Auto`` and each lrfree method family's best entry (solid, warm colours), tagged
      ``Auto`` / ``best <family>``.

    No two of them share a colour. Every other entry (the lrfree entries that are not their
    family's best) is drawn ``FADED``.

    Example::

        >>> t = {"higher_is_better": True, "tuned": "adamw@grid", "rows": [
        ...     {"spec": "adamw@grid", "family": "baseline", "grid": True, "acc_mean": 80.0},
        ...     {"spec": "sgd-lw", "family": "lrfree", "grid": False, "acc_mean": 79.0},
        ...     {"spec": "adamw-lw", "family": "lrfree", "grid": False, "acc_mean": 75.0},
        ...     {"spec": "prodigy", "family": "peer", "grid": False, "acc_mean": 78.0}]}
        >>> {s: h["tag"] for s, h in highlights(t).items()}
        {'adamw@grid': 'tuned baseline', 'prodigy': 'peer', 'sgd-lw': 'best LW'}
        >>> [h["color"] for h in highlights(t).values()]
        ['black', '#1f77b4', '#d62728']
    """
    higher = t["higher_is_better"]
    out: dict[str, dict[str, Any]] = {}
    tuned = t.get("tuned")
    if tuned is None:
        base = [r for r in t["rows"] if r["family"] == "baseline"]
        tuned = max(base, key=lambda r: _score(r, higher))["spec"] if base else None
    grid_spare = iter(_MORE_GRID_COLORS)
    for r in sorted((r for r in t["rows"] if r.get("grid")), key=lambda r: r["spec"]):
        color = _GRID_STYLE.get(r["spec"], (None,))[0] or next(grid_spare, None) or _hsv(9)
        out[r["spec"]] = {"color": color, "ls": "--", "lw": 1.6, "tag": "grid"}
    fixed_spare = iter(_FIXED_RATE_COLORS)
    for r in t["rows"]:
        if r["family"] == "baseline" and not r.get("grid"):
            color = next(fixed_spare, None) or _hsv(len(out))
            out[r["spec"]] = {"color": color, "ls": "-.", "lw": 1.6, "tag": "fixed rate"}
    if tuned is not None:
        style = out.setdefault(tuned, {"color": "black", "ls": "--"})
        style.update(lw=2.4, tag="tuned baseline")
    for spec, color in _peer_colors(t["rows"]).items():
        out[spec] = {"color": color, "ls": ":", "lw": 1.8, "tag": "peer"}
    for fam, r in _family_bests(t).items():
        tag = "Auto" if fam == "Auto" else f"best {fam}"
        lw = 2.6 if fam == "Auto" else 1.8
        out[r["spec"]] = {"color": _FAMILY_COLORS[fam], "ls": "-", "lw": lw, "tag": tag}
    return out


def _short(spec: str, n: int = 44) -> str:
    return spec if len(spec) <= n else spec[: n - 1] + "\u2026"


def _spread(ys: list[float], gap: float, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    """Move sorted label positions (axes fractions) apart by at least ``gap``, within
    [lo, hi], keeping their order.

    Example::

        >>> [round(y, 2) for y in _spread([0.5, 0.5, 0.51], 0.1)]
        [0.5, 0.6, 0.7]
    """
    out = list(ys)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + gap)
    if out and out[-1] > hi:  # pushed past the top: push back down
        out[-1] = hi
        for i in range(len(out) - 2, -1, -1):
            out[i] = min(out[i], out[i + 1] - gap)
    if out and out[0] < lo:  # too many labels: squeeze evenly
        step = (hi - lo) / max(len(out) - 1, 1)
        out = [lo + i * step for i in range(len(out))]
    return out


def _figure(figsize: tuple[float, float]) -> Any:
    """A matplotlib ``Figure`` on its own Agg canvas (no pyplot: nothing global to close)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _metric_label(higher: bool) -> str:
    return (
        "final test accuracy % (higher is better)"
        if higher
        else "final test loss (lower is better)"
    )


# --- the learning-rate picture ------------------------------------------------------------


def lr_figure(agg: dict[str, Any], task: str) -> Any | None:
    """The LR-sensitivity picture of one task as a matplotlib ``Figure`` (``None`` when the
    task is unknown or has no grid): the final test metric vs learning rate (log scale) for
    each grid entry (mean over seeds, band: +- std over seeds, a star at its best rate, an
    x at the bottom for a rate whose runs diverged), and every entry run without a grid as a
    horizontal line at its mean over seeds (a fixed-rate baseline also as a diamond at its
    rate). The ``highlights`` are drawn in full and labelled at the right margin with their
    mean; the other entries thin and light grey (``FADED``). The y axis says whether higher
    or lower is better; a loss axis spanning more than a factor 20 is logarithmic. When the
    default lines and the grids' best rates span less than half the range of all values,
    the axis shows them only: a grid rate worse than all of them is cut off, marked by a
    triangle and its value at the axis edge (and counted in a note below the legend).
    """
    t = agg.get(task)
    if t is None:
        return None
    grids = [r for r in t["rows"] if r["grid"]]
    if not grids:
        return None
    from matplotlib.lines import Line2D

    higher = t["higher_is_better"]
    fmt = ".1f" if higher else ".4g"
    hl = highlights(t)
    fig = _figure((12, 6.5))
    fig.subplots_adjust(left=0.07, right=0.68, top=0.9, bottom=0.24)
    ax = fig.add_subplot()
    finite: list[float] = []
    focus: list[float] = []  # the default lines and each grid's best: always on the axis
    points: list[tuple[float, float, str]] = []  # the grids' (rate, mean, colour)
    xs_all: list[float] = []
    handles: list[Any] = []
    for r in sorted(grids, key=lambda r: r["spec"]):
        style = hl[r["spec"]]
        color, marker = style["color"], _GRID_STYLE.get(r["spec"], (None, "D"))[1]
        pts = [p for p in r["by_lr"] if p["lr"] is not None]
        xs = [p["lr"] for p in pts]
        xs_all += xs
        ms = [p["mean"] if math.isfinite(p["mean"]) else float("nan") for p in pts]
        sd = [p["std"] if math.isfinite(p["std"]) else 0.0 for p in pts]
        ax.fill_between(
            xs, [m - s for m, s in zip(ms, sd)], [m + s for m, s in zip(ms, sd)],
            color=color, alpha=0.13, lw=0, gid=f"band:{r['spec']}",
        )  # fmt: skip
        seeds = sorted({p["seeds"] for p in pts})
        n = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]}"
        tuned = " (tuned baseline)" if style["tag"] == "tuned baseline" else ""
        (h,) = ax.plot(
            xs, ms, color=color, marker=marker, lw=2.4 if tuned else 1.8, ms=5, zorder=4,
            gid=f"grid:{r['spec']}",
            label=f"{r['spec']}{tuned}: mean ± std over {n} seed{'s' * (n != '1')}",
        )  # fmt: skip
        handles.append(h)
        if math.isfinite(r["acc_mean"]):
            ax.plot([r["lr"]], [r["acc_mean"]], marker="*", ms=14, color=color, zorder=5)
            focus.append(r["acc_mean"])
        points += [(x, m, color) for x, m in zip(xs, ms) if math.isfinite(m)]
        finite += [m + s for m, s in zip(ms, sd) if math.isfinite(m)]
        finite += [m - s for m, s in zip(ms, sd) if math.isfinite(m)]
        bad = [p["lr"] for p in pts if not math.isfinite(p["mean"])]
        if bad:  # a diverged rate (infinite loss): an x at the worse edge
            edge = 0.02 if higher else 0.98
            ax.plot(
                bad, [edge] * len(bad), ls="", marker="x", ms=9, mew=2, color=color,
                transform=ax.get_xaxis_transform(), clip_on=False, zorder=5,
            )  # fmt: skip
            for x in bad:
                ax.annotate(
                    "diverged", (x, edge), xycoords=ax.get_xaxis_transform(),
                    xytext=(0, -12 if not higher else 8), textcoords="offset points",
                    ha="center", fontsize=7, color=color,
                )  # fmt: skip
    lines = [r for r in t["rows"] if not r["grid"]]
    labelled: list[tuple[float, str, str]] = []  # (y, text, colour)
    not_drawn, n_faded = [], 0
    for r in lines:
        v = r["acc_mean"]
        if not math.isfinite(v):
            not_drawn.append(r["spec"])
            continue
        finite.append(v)
        focus.append(v)
        style = hl.get(r["spec"])
        if style is None:
            ax.axhline(v, **FADED, gid=f"faded:{r['spec']}")
            n_faded += 1
            continue
        color = style["color"]
        ax.axhline(v, color=color, ls=style["ls"], lw=style["lw"], zorder=3,
                   gid=f"default:{r['spec']}")  # fmt: skip
        at = f" (lr {r['lr']:g})" if r["lr"] is not None else ""
        labelled.append((v, f"{_short(r['spec'])}{at}  {v:{fmt}}", color))
        if r["lr"] is not None:  # a fixed rate: mark it
            ax.plot([r["lr"]], [v], marker="D", ms=7, color=color, zorder=5)
            xs_all.append(r["lr"])
    ax.set_xscale("log")
    if xs_all:
        ax.set_xlim(min(xs_all) / 1.6, max(xs_all) * 1.6)
    if finite:
        lo, hi = min(finite), max(finite)
        # grid rates far worse than every default and every grid's best squeeze the lines
        # that matter into a strip: cut them off the axis (a triangle and their value at
        # the edge) when the rest spans less than half the range
        flo, fhi = (min(focus), hi) if higher else (lo, max(focus))
        cut = bool(focus) and (fhi - flo) < 0.5 * (hi - lo)
        if cut:
            lo, hi = flo, fhi
        if not higher and lo > 0 and hi / lo > 20:
            ax.set_yscale("log")
            ax.set_ylim(lo / 1.2, hi * 1.2)
        else:
            pad = 0.08 * (hi - lo) or 0.05 * abs(hi) or 1.0
            ax.set_ylim(lo - pad, hi + pad)
        y0, y1 = ax.get_ylim()
        off = [(x, m, c) for x, m, c in points if not y0 <= m <= y1]
        for x, m, c in off:
            edge = 0.0 if m < y0 else 1.0
            ax.plot([x], [edge], ls="", marker="v" if edge == 0.0 else "^", ms=8, color=c,
                    transform=ax.get_xaxis_transform(), clip_on=False, zorder=5,
                    gid="off-axis")  # fmt: skip
            ax.annotate(
                f"{m:{fmt}}", (x, edge), xycoords=ax.get_xaxis_transform(),
                xytext=(0, 9 if edge == 0.0 else -11), textcoords="offset points",
                ha="center", fontsize=7, color=c,
            )  # fmt: skip
    ax.set(xlabel="learning rate (log scale)", ylabel=_metric_label(higher))
    ax.grid(True, which="major", alpha=0.3)
    ax.set_title(
        f"{task}: where each default lands on the learning-rate curves\n"
        f"(final test {'accuracy' if higher else 'loss'}; horizontal lines: entries run at "
        "their defaults, mean over seeds)",
        fontsize=10,
    )
    # right-margin labels, moved apart so they do not overlap, joined to their lines
    if labelled:
        fig.canvas.draw()
        to_axes = ax.transAxes.inverted()
        pts_ = sorted(
            (to_axes.transform(ax.transData.transform((1.0, y)))[1], text, c)
            for y, text, c in labelled
        )
        ys = _spread([p[0] for p in pts_], gap=0.034, lo=-0.02, hi=1.02)
        for (y0, text, c), y1 in zip(pts_, ys):
            ax.annotate(
                text, xy=(1.0, y0), xycoords="axes fraction", xytext=(1.05, y1),
                textcoords="axes fraction", va="center", fontsize=7.5, color=c,
                arrowprops={"arrowstyle": "-", "color": c, "lw": 0.6, "alpha": 0.7},
                annotation_clip=False,
            )  # fmt: skip
    tags = {hl[r["spec"]]["tag"] for r in lines if r["spec"] in hl}
    handles.append(
        Line2D([], [], marker="*", ls="", ms=12, color="black", label="best rate of a grid")
    )
    if "fixed rate" in tags:
        handles.append(
            Line2D([], [], color=_FIXED_RATE_COLORS[0], ls="-.", lw=1.6, marker="D", ms=5,
                   label="baseline at a fixed rate (◆ at that rate)")
        )  # fmt: skip
    if "Auto" in tags:
        handles.append(
            Line2D([], [], color=_FAMILY_COLORS["Auto"], lw=2.6, label="Auto at its defaults")
        )
    if any(tag.startswith("best ") for tag in tags):
        handles.append(
            Line2D([], [], color=_FAMILY_COLORS["LW"], lw=1.8,
                   label="lrfree at its defaults: each family's best (solid, warm colours)")
        )  # fmt: skip
    if "peer" in tags:
        handles.append(
            Line2D([], [], color=_PEER_COLORS["prodigy"], ls=":", lw=1.8,
                   label="peers at their defaults (dotted, cool colours)")
        )  # fmt: skip
    if n_faded:
        handles.append(
            Line2D([], [], **{**FADED, "zorder": None},
                   label=f"{n_faded} other lrfree entries at their defaults (grey, unlabelled)")
        )  # fmt: skip
    ax.legend(
        handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.11), ncol=2, fontsize=8,
        frameon=False,
    )  # fmt: skip
    notes = []
    if finite and off:
        notes.append(
            f"{len(off)} grid rate(s) off the axis ({'below' if higher else 'above'} it: "
            "a triangle at the edge, with the value)"
        )
    if not_drawn:
        notes.append("not finite (diverged), not drawn: " + ", ".join(not_drawn))
    if notes:
        fig.text(0.07, 0.015, "; ".join(notes), fontsize=7, color="#b2182b")
    return fig


def lr_sensitivity_plot(
    data: dict[str, Any] | list[dict[str, Any]], task: str, path: Path
) -> Path | None:
    """Write ``lr_figure`` of ``task`` to the PNG ``path`` and return it; ``data`` is
    ``report.aggregate``'s output or the run records. ``None`` (nothing written) when the
    task is unknown or has no grid."""
    agg = aggregate(data) if isinstance(data, list) else data
    fig = lr_figure(agg, task)
    if fig is None:
        return None
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    return Path(path)


# --- training curves, effective rates, the performance profile ----------------------------


def curves_figure(t: dict[str, Any], task: str) -> Any:
    """One task's training curves as a ``Figure``: train loss and test metric against
    epochs and training seconds (first seed of each entry). The ``highlights`` are drawn in
    full, each in its own colour and named in the legend; every other entry thin, light grey
    and counted in the legend (``FADED``)."""
    from matplotlib.lines import Line2D

    hl = highlights(t)
    fig = _figure((16, 9))
    axes = fig.subplots(2, 2)
    faded = 0
    # the faded entries first (below), the highlighted ones on top, in the legend's order
    rows = [r for r in t["rows"] if r["spec"] not in hl]
    rows += sorted(
        (r for r in t["rows"] if r["spec"] in hl), key=lambda r: list(hl).index(r["spec"])
    )
    for r in rows:
        rec = r["curves"][0]  # first seed
        ep = [e["epoch"] for e in rec["per_epoch"]]
        tm = [e.get("cpu_time", e["time"]) for e in rec["per_epoch"]]
        loss = [e["train_loss"] for e in rec["per_epoch"]]
        metric = [e["metric"] for e in rec["per_epoch"]]
        style = hl.get(r["spec"])
        if style is None:
            kw: dict[str, Any] = {**FADED, "gid": f"faded:{r['spec']}"}
            faded += 1
        else:
            lr = "" if r["lr"] is None else f" ({r['lr']:g})"
            kw = {
                "color": style["color"],
                "ls": style["ls"],
                "lw": style["lw"],
                "zorder": 3,
                "gid": f"curve:{r['spec']}",
                "label": f"{style['tag']}: {_short(r['spec'], 48)}{lr}",
                "marker": "." if len(ep) < 12 else None,
            }
        for ax, x, y in zip(axes.flat, (ep, tm, ep, tm), (loss, loss, metric, metric)):
            ax.plot(x, y, **kw)
            kw.pop("label", None)  # one legend entry per curve
    higher = t["higher_is_better"]
    ylabel = "test accuracy % (higher is better)" if higher else "test loss (lower is better)"
    for ax, xl, yl in zip(
        axes.flat, ("epoch", "training seconds") * 2, ("train loss", "train loss", ylabel, ylabel)
    ):
        ax.set(xlabel=xl, ylabel=yl)
        ax.grid(True, alpha=0.25)
    for ax in axes[0]:
        if all(e["train_loss"] > 0 for r in t["rows"] for e in r["curves"][0]["per_epoch"]):
            ax.set_yscale("log")
    fig.suptitle(
        f"{task} (first seed): the grids, AdamW at its default, the peers, Auto and each "
        "lrfree family's best entry; the others thin and grey"
    )
    handles, _ = axes[0, 0].get_legend_handles_labels()
    if faded:
        handles.append(
            Line2D([], [], **{**FADED, "zorder": None}, label=f"{faded} other entries (grey)")
        )
    axes[0, 1].legend(handles=handles, fontsize=7.5, loc="center left",
                      bbox_to_anchor=(1.02, 0.0))  # fmt: skip
    fig.tight_layout()
    return fig


def rates_figure(t: dict[str, Any], task: str) -> Any | None:
    """The lrfree entries' effective learning rate per block over training (first seed; at
    most 12 blocks each), one panel per entry; ``None`` when no entry recorded rates."""
    adaptive = [r for r in t["rows"] if r["family"] == "lrfree" and r["curves"][0].get("rates")]
    if not adaptive:
        return None
    cols = min(4, len(adaptive))
    nrows = -(-len(adaptive) // cols)
    fig = _figure((4.2 * cols, 3.2 * nrows))
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax in axes.flat[len(adaptive) :]:
        ax.axis("off")
    for ax, r in zip(axes.flat, adaptive):
        rec = r["curves"][0]  # first seed
        n_blocks = len(rec["rates"][0])
        if rec.get("rate_trace"):  # read-outs during training, x in epochs
            spe = max(rec.get("steps_per_epoch", 1), 1)
            xs = [p["step"] / spe for p in rec["rate_trace"]]
            ys_all = [p["rates"] for p in rec["rate_trace"]]
        else:  # older records: the end of each epoch only
            xs = list(range(1, len(rec["rates"]) + 1))
            ys_all = rec["rates"]
        for block in list(ys_all[0])[:12]:
            ys = [e.get(block, float("nan")) for e in ys_all]
            ax.plot(xs, ys, marker="." if len(xs) < 12 else None, label=block)
        more = f" (12 of {n_blocks} blocks)" if n_blocks > 12 else ""
        ax.set(title=r["spec"] + more, xlabel="epoch", ylabel="effective lr")
        if all(v > 0 for e in ys_all for v in e.values()):
            ax.set_yscale("log")
        ax.legend(fontsize=5)
    fig.suptitle(f"{task}: effective learning rate per block over training")
    fig.tight_layout()
    return fig


def profile_plot(agg: dict[str, Any], path: Path, tau_max: float | None = None) -> Path | None:
    """The performance profile (``report.profile``) as a PNG: the fraction of tasks within
    tau of the best entry vs tau; ``None`` (nothing written) without a finite result.

    Drawn in full, each in its own colour: the baselines (dashed), the peers (dotted),
    ``Auto`` and, per lrfree method family, the entry with the largest area under its
    profile (solid); the other entries thin and grey (``FADED``), counted in the legend."""
    defs = deficits(agg)
    if not defs:
        return None
    finite = [d for per in defs.values() for d in per.values() if math.isfinite(d)]
    top = tau_max or 1.05 * max(min(max(finite, default=1.0), 50.0), 2.0)
    taus = sorted({0.0, top, *[d for d in finite if d <= top]})
    taus = sorted(set(taus) | {top * k / 200 for k in range(201)})
    rho = profile(agg, taus)
    fam = {r["spec"]: r["family"] for t in agg.values() for r in t["rows"]}
    grid = {r["spec"] for t in agg.values() for r in t["rows"] if r["grid"]}
    # one pseudo-task whose "metric" is the profile's area: highlights picks each family's best
    pseudo = {
        "higher_is_better": True,
        "tuned": None,
        "rows": [
            {"spec": s, "family": fam.get(s, ""), "grid": s in grid, "acc_mean": sum(rho[s])}
            for s in rho
        ],
    }
    hl = highlights(pseudo)
    hl.update({s: {**hl[s], "lw": 1.6, "tag": "grid"} for s in grid if s in hl})
    fig = _figure((10, 6))
    ax = fig.add_subplot()
    order = sorted(rho, key=lambda s: (s in hl, list(hl).index(s) if s in hl else 0))
    n_faded = 0
    for spec in order:
        style = hl.get(spec)
        if style is None:
            ax.step(taus, rho[spec], where="post", **FADED, gid=f"faded:{spec}")
            n_faded += 1
        else:
            best = style["tag"].startswith("best")
            ax.step(taus, rho[spec], where="post", color=style["color"], ls=style["ls"],
                    lw=style["lw"], zorder=3, gid=f"curve:{spec}",
                    label=f"{spec} ({style['tag']})" if best else spec)  # fmt: skip
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set(
        xlabel="tau: accuracy points (loss tasks: % of loss) below the task's best",
        ylabel="fraction of tasks within tau of the best",
        xlim=(0, top),
        ylim=(-0.02, 1.02),
        title=f"Performance profile over {len(agg)} task(s)",
    )
    handles, _ = ax.get_legend_handles_labels()
    if n_faded:
        from matplotlib.lines import Line2D

        handles.append(
            Line2D([], [], **{**FADED, "zorder": None},
                   label=f"{n_faded} other lrfree entries (grey)")
        )  # fmt: skip
    ax.legend(handles=handles, fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return Path(path)


def write_plots(agg: dict[str, Any], out: Path) -> list[Path]:
    """Every plot of ``agg`` into the folder ``out``, per task in the order the results page
    shows them: ``<task>-lr.png`` (tasks with a grid), ``<task>.png``, ``<task>-rates.png``
    (tasks with an lrfree entry that recorded rates); then ``profile.png``. Returns the paths
    written."""
    out = Path(out)
    written = []
    for task, t in agg.items():
        lr_png = lr_sensitivity_plot(agg, task, out / f"{task}-lr.png")
        if lr_png is not None:
            written.append(lr_png)
        path = out / f"{task}.png"
        curves_figure(t, task).savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)
        written.append(path)
        fig = rates_figure(t, task)
        if fig is not None:
            path = out / f"{task}-rates.png"
            fig.savefig(path, dpi=DPI)
            written.append(path)
    prof = profile_plot(agg, out / "profile.png")
    if prof is not None:
        written.append(prof)
    return written
