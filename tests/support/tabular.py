"""A messy CSV as real exports are, for the one-reader tests (unit and flow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mlops.core.data import generate_churn

MARKERS = ["", "NA", "?", " ? ", "   ", "N/A", "null"]


def messy_csv(path: Path, rows: int = 1500, seed: int = 5, delimiter: str = ",") -> Path:
    """Churn rows written as real exports are: blanks, NA spellings, '?' and whitespace in numeric and text
    columns (never in the target)."""
    df = generate_churn(rows, seed=seed).astype({"age": object, "total_charges": object, "usage_gb": object,
                                                  "payment_method": object, "region": object, "plan": object})
    rng = np.random.default_rng(seed)
    for col in ["age", "total_charges", "usage_gb", "payment_method", "region", "plan"]:
        hit = rng.uniform(size=rows) < 0.06
        df.loc[hit, col] = rng.choice(MARKERS, int(hit.sum()))
    df.to_csv(path, index=False, sep=delimiter)
    text = path.read_text()
    assert "?" in text and ",NA," in text.replace(delimiter, ",") and " ? " in text  # it is messy
    return path
