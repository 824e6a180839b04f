"""Figures of ``approute simulate`` and ``simulate --replay`` results (``--plot``).

``plot_figure(result)`` draws the load of each node over time, one panel per
strategy (or per config of a replay), with a panel of the room figures when
the result has rooms; ``plot(result, path)`` writes it as a PNG.  Needs
matplotlib, imported only when a figure is drawn.
"""

from __future__ import annotations

from typing import Any, Dict, List

#: Okabe-Ito: eight colours told apart with the common colour-vision
#: deficiencies; past eight nodes the line style changes as well.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
LINE_STYLES = ["-", "--", "-.", ":"]
#: what each workload event says on the plot
EVENT_WORDS = {"join": "joins", "fail": "fails", "recover": "recovers", "drain": "drained",
               "enable": "enabled", "disable": "disabled", "leave": "leaves", "remove": "removed"}


def node_style(i: int) -> Dict[str, Any]:
    """Colour and line style of the i-th node of a plot."""
    return {"color": PALETTE[i % len(PALETTE)],
            "linestyle": LINE_STYLES[(i // len(PALETTE)) % len(LINE_STYLES)]}


def plot(result: Dict[str, Any], path: str) -> None:
    """Writes plot_figure(result) as a PNG."""
    import matplotlib.pyplot as plt
    fig = plot_figure(result)
    try:
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)


def plot_figure(result: Dict[str, Any]) -> Any:
    """Load per node over time, one panel per strategy: each node in a
    colour-blind safe colour (and line style past eight), its size (limit x
    speed) as a thin dotted line of the same colour while it is in the
    pool, the workload's events as marked vertical lines, and one legend
    under the panels."""
    from .simulate import SimulationError, _f  # at call time: simulate imports this module

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError as e:
        raise SimulationError("plots need matplotlib (pip install matplotlib): %s" % e) from e
    rs = result["results"]
    rooms = any(r.get("rooms") for r in rs)
    panels = len(rs) + (1 if rooms else 0)
    limits = result.get("node_limits") or {}
    events = result.get("events") or []
    all_ids: List[str] = []
    for r in rs:
        all_ids += [n for n in r["node_ids"] if n not in all_ids]
    styles = {nid: node_style(i) for i, nid in enumerate(all_ids)}
    fig, axes = plt.subplots(panels, 1, figsize=(11, 2.9 * panels + 1.2), squeeze=False)
    if rooms:  # the last panel: the rooms' figures side by side
        ax = axes[-1, 0]
        what = [("split_rooms", "split rooms"), ("participants_refused", "refused (room's node)"),
                ("new_rooms_refused", "new rooms refused")]
        width = 0.8 / len(what)
        for i, (k, label) in enumerate(what):
            xs = [j + (i - (len(what) - 1) / 2.0) * width for j in range(len(rs))]
            bars = ax.bar(xs, [r[k] for r in rs], width, label=label, color=PALETTE[i],
                          hatch=["", "//", ".."][i])
            ax.bar_label(bars, fontsize=8)
        ax.set_xticks(range(len(rs)))
        ax.set_xticklabels([r["label"] for r in rs], fontsize=8)
        ax.set_ylabel("rooms / participants")
        ax.set_title("rooms: split (must be 0 for strict keys), participants refused, new rooms refused",
                     fontsize=10)
        ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=len(what), frameon=False)
        ax.grid(True, axis="y", alpha=0.3)
    for ax, r in zip(axes[:len(rs), 0], rs):
        t = r["sample_t"]
        for nid, series in zip(r["node_ids"], r["samples"]):
            ys = [float("nan") if v < 0 else v for v in series]
            if not any(v == v for v in ys):
                continue
            st = styles[nid]
            ax.plot(t, ys, linewidth=1.3, label=nid, **st)
            if nid in limits:  # its size while it is in the pool
                cap = [limits[nid] if v == v else float("nan") for v in ys]
                ax.plot(t, cap, linewidth=0.8, color=st["color"], linestyle=":", alpha=0.7,
                        label="_size " + nid)  # "_": not a legend entry of its own
        for ev in events:
            ax.axvline(ev["at"], color="0.35", linewidth=0.8, linestyle="--", alpha=0.8)
            ax.annotate("%s %s" % (ev["node"], EVENT_WORDS.get(ev["action"], ev["action"])),
                        xy=(ev["at"], 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2),
                        textcoords="offset points", fontsize=7, color="0.15", rotation=90,
                        va="top", ha="left",
                        bbox={"boxstyle": "square,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
        figures = "max %d, p99 %s, bounces %d, rejected %d, dropped %d" % (
            r["max_sessions"], _f(r["p99_sessions"], 0), r["bounces"], r["rejected"], r.get("dropped", 0))
        if r.get("rooms"):
            figures += "; split rooms %d, refused in room %d, new rooms refused %d" % (
                r["split_rooms"], r["participants_refused"], r["new_rooms_refused"])
        title = "%s — %s" % (r["label"], figures)
        if len(title) > 110:  # a second line rather than a title running off the figure
            title = "%s\n%s" % (r["label"], figures)
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_ylabel("sessions")
        ax.set_xlim(t[0] if t else 0, t[-1] if t else 1)
        ax.grid(True, alpha=0.3)
    axes[len(rs) - 1, 0].set_xlabel(
        "seconds since the first call" if result.get("replay") else "simulated seconds")
    handles = [Line2D([], [], linewidth=1.8, **styles[n]) for n in all_ids]
    labels = list(all_ids)
    if limits:
        handles.append(Line2D([], [], color="0.3", linestyle=":", linewidth=1.0))
        labels.append("size (limit x speed)")
    if events:
        handles.append(Line2D([], [], color="0.35", linestyle="--", linewidth=0.8))
        labels.append("pool event")
    ncol = min(len(labels), 6)
    rows = -(-len(labels) // ncol)
    legend_in = 0.28 * rows + 0.15  # inches under the panels
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 0.0), handlelength=2.6, columnspacing=1.6)
    fig.tight_layout(rect=(0, legend_in / fig.get_figheight(), 1, 1))
    return fig
