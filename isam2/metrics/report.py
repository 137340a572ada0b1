"""Tables of metrics in the paper's layout: percent with one decimal, one row per method."""

from __future__ import annotations

import re

MAIN_COLUMNS = (("mIoU", "miou"), ("WIoU", "fwiou"), ("mBIoU", "mbiou"))


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _grid(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body)])


def format_table(rows: dict[str, dict], class_names: list[str] | None = None) -> str:
    """The paper's columns (mIoU, WIoU, mBIoU, mVC8, mVC16, ...) in percent, one row per method name.

    With `class_names`, a per-class IoU table follows (classes with an IoU for at least one method).
    Missing values (None) print as "-".
    """
    lengths = sorted(
        {int(m.group(1)) for r in rows.values() for k in r if (m := re.fullmatch(r"mvc(\d+)", k))}
    )
    columns = [*MAIN_COLUMNS, *((f"mVC{n}", f"mvc{n}") for n in lengths)]
    body = [[name, *(_pct(r.get(key)) for _, key in columns)] for name, r in rows.items()]
    text = _grid(["Method", *(title for title, _ in columns)], body)
    if class_names is not None:
        per_class = {name: r.get("per_class_iou") or [] for name, r in rows.items()}
        lines = []
        for i, cname in enumerate(class_names):
            values = [v[i] if i < len(v) else None for v in per_class.values()]
            if any(v is not None for v in values):
                lines.append([f"{i} {cname}", *map(_pct, values)])
        text += "\n\nPer-class IoU (%)\n" + _grid(["Class", *rows], lines)
    return text
