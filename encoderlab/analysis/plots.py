"""Matplotlib for the analysis figures: a headless pyplot and a figure as PNG bytes.

Imported lazily by the modules that draw (report, tradeoff, ranking), so reading tables never
pays for matplotlib."""

from __future__ import annotations

import io


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (works without a display)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def png(fig) -> bytes:
    """The figure as PNG bytes (110 dpi, tight box); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    return buf.getvalue()
