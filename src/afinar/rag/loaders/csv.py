"""CSV (.csv, .tsv): one paragraph per row, ``"column: value; column: value"``.

The first row is the header. The delimiter is sniffed among comma, semicolon, tab and pipe (tab
for .tsv). Empty cells are left out of a row's text; cells beyond the header are named
``column N``; blank rows are skipped.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from afinar.rag.document import Document, DocumentBuilder
from afinar.rag.loaders.base import LoadOptions, normalize_spaces, read_text, register


@register(".csv", ".tsv")
def load_csv(path: Path, options: LoadOptions) -> Document:
    raw = read_text(path, options)
    if path.suffix.lower() == ".tsv":
        dialect: type[csv.Dialect] | csv.Dialect = csv.excel_tab
    else:
        try:
            dialect = csv.Sniffer().sniff(raw[:16384], delimiters=",;\t|")
        except csv.Error:
            dialect = csv.excel
    reader = csv.reader(io.StringIO(raw, newline=""), dialect)
    header: list[str] | None = None
    builder = DocumentBuilder(str(path))
    rows = 0
    for cells in reader:
        if not any(c.strip() for c in cells):
            continue
        if header is None:
            header = [normalize_spaces(c) for c in cells]
            continue
        rows += 1
        names = header + [f"column {i + 1}" for i in range(len(header), len(cells))]
        parts = [f"{name or f'column {i + 1}'}: {normalize_spaces(value)}"
                 for i, (name, value) in enumerate(zip(names, cells)) if value.strip()]
        builder.add("paragraph", "; ".join(parts))
    return builder.build(metadata={"rows": rows, "columns": header or []})
