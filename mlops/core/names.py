"""Names derived from user-given names, in one place so every caller gets the same key for the same model."""

from __future__ import annotations

import hashlib
import re


def slug(name: str) -> str:
    """A name as a Prefect artifact key or folder part: lowercase letters, digits and dashes ("model" if empty)."""
    return "".join(ch if ch.isalnum() else "-" for ch in name.lower()).strip("-") or "model"


def artifact_key(model_name: str, what: str) -> str:
    """The Prefect artifact key for one kind of artifact about a model, e.g. `churn-drift-summary`."""
    return f"{slug(model_name)}-{slug(what)}"


RUN_NAME_PROSE = 40  # characters of a reason's words kept in a run name (file names come on top)
RUN_NAME_FILE = 80  # characters of one file name kept in a run name
_DIGEST = 6  # hex characters of the whole text's digest added when words were left out


def run_name_part(text: object, limit: int = RUN_NAME_PROSE, empty: str = "run") -> str:
    """Free text (a run's reason, a model name) as a run-name part: lowercase words joined by dashes, a path cut
    to its file name (`data arrived: /in/b 7.csv` -> `data-arrived-b-7.csv`); `empty` when nothing is left.

    Names stay distinguishable: file names are kept whole however long the words before them are, the other
    words are cut at a word boundary after `limit` characters, and when words were left out a short digest of
    the whole text follows, so two long reasons that differ only at their end still get different names."""
    kept: list[str] = []
    prose = 0  # characters of the kept words that are not file names, dashes between them included
    cut = False
    for word in str(text).split():
        is_file = "/" in word or re.search(r"\w\.[A-Za-z][A-Za-z0-9]{0,7}\W*$", word) is not None
        token = re.sub(r"[^a-z0-9.]+", "-", word.rsplit("/", 1)[-1].lower()).strip("-.")
        if not token:
            continue
        if is_file:
            if len(token) > RUN_NAME_FILE:
                token, cut = token[:RUN_NAME_FILE].rstrip("-."), True
            kept.append(token)
            continue
        if cut:
            continue
        grown = prose + len(token) + (1 if prose else 0)
        if grown > limit:
            if not prose:  # one word longer than the limit: its head
                kept.append(token[:limit].rstrip("-."))
            cut = True
            continue
        kept.append(token)
        prose = grown
    out = "-".join(t for t in kept if t)
    if cut:
        digest = hashlib.sha256(str(text).encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST]
        out = f"{out}-{digest}" if out else digest
    return out or empty
