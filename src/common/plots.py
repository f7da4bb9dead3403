"""Figures written to files (curves.png, roc.png, the per-frame plots of predict)."""
from types import ModuleType


def pyplot() -> ModuleType:
    """matplotlib.pyplot on its file-only Agg backend (no display needed), imported on the first figure."""
    import matplotlib  # noqa: PLC0415 (only the commands that draw a figure load matplotlib)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt
