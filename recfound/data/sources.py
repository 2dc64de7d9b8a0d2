"""Sources → normalized tables (see :mod:`recfound.data.schema`).

Three sources:

- ``ml-100k``: MovieLens-100K as shipped inside the installed ``recbole`` wheel
  (``recbole/dataset_example/ml-100k``), found with :mod:`importlib.resources`; nothing is
  downloaded.
- ``recbole_atomic``: any folder of RecBole atomic files ``NAME.inter`` / ``NAME.item`` /
  ``NAME.user`` (tab-separated, header ``field:type``).
- ``amazon_jsonl``: a folder with ``reviews.jsonl`` (user_id, parent_asin, rating, title, text,
  timestamp) and ``meta.jsonl`` (parent_asin, title, description, categories) in the Amazon Reviews
  2023 layout.

Parsing is strict (a truncated or unreadable file is an :class:`IngestError` naming the file and
line); semantic checks (ratings in range, known items, unique ids) belong to the validate stage, so
loaders keep what they read as it is.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pandas as pd

from recfound.data import schema as S
from recfound.errors import UserInputError


class IngestError(UserInputError):
    """A source file is missing, unreadable or malformed; the message names the file."""


# RecBole field names we understand, in order of preference.
_TITLE_FIELDS = ("movie_title", "title", "item_name", "name")
_YEAR_FIELDS = ("release_year", "year")
_CATEGORY_FIELDS = ("class", "genre", "genres", "categories", "category")
_DESCRIPTION_FIELDS = ("description", "desc", "overview")


def _read_atomic(path: Path) -> pd.DataFrame:
    """Read one RecBole atomic file; headers like ``rating:float`` become ``rating``."""
    if not path.is_file():
        raise IngestError(f"missing source file: {path}")
    try:
        with path.open(encoding="utf-8") as handle:
            lines = handle.readlines()
    except UnicodeDecodeError as exc:
        raise IngestError(
            f"{path} is not readable UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    if lines and not lines[-1].endswith("\n"):
        raise IngestError(
            f"{path}: line {len(lines)} has no line end: the file looks truncated (cut off "
            "mid-line); restore the complete file, or end its last line with a newline if it is "
            "complete"
        )
    header = lines[0].rstrip("\n").split("\t") if lines else []
    rows = [line.rstrip("\n").split("\t") for line in lines[1:] if line.strip()]
    names = [h.split(":", 1)[0] for h in header]
    if len(names) < 2 or any(not n for n in names):
        raise IngestError(f"{path}: first line must be a RecBole header like 'user_id:token\\t…'")
    bad = [i + 2 for i, row in enumerate(rows) if len(row) != len(names)]
    if bad:
        raise IngestError(
            f"{path}: line(s) {bad[:5]} have a different number of fields than the header "
            f"({len(names)}); the file looks truncated or corrupted"
        )
    return pd.DataFrame(rows, columns=names)


def _first(frame: pd.DataFrame, candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if c in frame.columns), None)


def _to_number(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    broken = values.isna() & frame[column].astype(str).str.strip().ne("")
    if broken.any():
        line = int(broken.to_numpy().nonzero()[0][0]) + 2
        raise IngestError(
            f"{path}: column {column!r} has a non-numeric value "
            f"{frame[column][broken].iloc[0]!r} at line {line}"
        )
    return values


# Unix seconds a timestamp may hold: what int64 stores (year ±292 billion); beyond is no time.
_TIMESTAMP_LIMIT = 2.0**63 - 1


def _require_times(timestamp: pd.Series, path: Path, lines: list[int]) -> None:
    """Every timestamp is a finite number of seconds (``inf``, ``nan`` or ``1e300`` is not): an
    :class:`IngestError` naming the file, line and value otherwise (``lines[i]``: row ``i``'s)."""
    bad = ~(timestamp.abs() < _TIMESTAMP_LIMIT)  # NaN compares False: bad too
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise IngestError(
            f"{path}: line {lines[row]}: timestamp is {float(timestamp.iloc[row])!r}, not a time; "
            f"expected Unix seconds (a finite integer). {int(bad.sum())} row(s) are like this: "
            "fix or remove them in the source file"
        )


def _require_ids(raw: pd.DataFrame, columns: tuple[str, ...], path: Path) -> None:
    """Every row names its ids: an empty id is an error, not a row to drop."""
    for column in columns:
        if column not in raw.columns:
            raise IngestError(f"{path}: required field {column!r} is missing from the header")
        empty = raw[column].isna() | raw[column].astype(str).str.strip().eq("")
        if empty.any():
            line = int(empty.to_numpy().nonzero()[0][0]) + 2
            raise IngestError(
                f"{path}: empty {column} at line {line}; every row needs a non-empty {column}"
            )


def _normalize_interactions(raw: pd.DataFrame, path: Path, timestamps: bool) -> pd.DataFrame:
    _require_ids(raw, ("user_id", "item_id"), path)
    rating = _to_number(raw, "rating", path) if "rating" in raw.columns else 1.0
    if "timestamp" in raw.columns:
        timestamp = _to_number(raw, "timestamp", path)
        if timestamp.isna().any():
            line = int(timestamp.isna().to_numpy().nonzero()[0][0]) + 2
            raise IngestError(f"{path}: empty timestamp at line {line}")
        _require_times(timestamp, path, [i + 2 for i in range(len(raw))])
    elif timestamps:
        raise IngestError(
            f"{path}: the header has no 'timestamp' field, but data.timestamps is true (the "
            "source declares event times); restore the field, or set data.timestamps: false to "
            "order each user's events by file order"
        )
    else:  # no time, as declared: keep file order as the order of events
        timestamp = pd.Series(range(len(raw)), dtype="float64")
    return pd.DataFrame(
        {
            "user_id": raw["user_id"].astype(str),
            "item_id": raw["item_id"].astype(str),
            "rating": pd.Series(rating, index=raw.index, dtype="float64"),
            "timestamp": timestamp.astype("int64"),
            "review_title": raw.get("review_title", pd.Series(None, index=raw.index, dtype=object)),
            "review_text": raw.get("review_text", pd.Series(None, index=raw.index, dtype=object)),
        }
    )


def _normalize_items(raw: pd.DataFrame, path: Path) -> pd.DataFrame:
    _require_ids(raw, ("item_id",), path)
    title = _first(raw, _TITLE_FIELDS)
    year = _first(raw, _YEAR_FIELDS)
    categories = _first(raw, _CATEGORY_FIELDS)
    description = _first(raw, _DESCRIPTION_FIELDS)
    empty = pd.Series("", index=raw.index, dtype=object)
    return pd.DataFrame(
        {
            "item_id": raw["item_id"].astype(str),
            "title": (raw[title] if title else empty).astype(str).str.strip(),
            "description": (raw[description] if description else empty).astype(str),
            # token_seq fields are space-separated in RecBole; we store '|'-separated categories.
            "categories": (raw[categories] if categories else empty)
            .astype(str)
            .str.split()
            .str.join("|"),
            "year": pd.to_numeric(raw[year], errors="coerce").astype("Int64")
            if year
            else pd.Series(pd.NA, index=raw.index, dtype="Int64"),
        }
    )


def _normalize_users(
    raw: pd.DataFrame | None, user_ids: pd.Series, path: Path | None = None
) -> pd.DataFrame:
    if raw is None:
        return pd.DataFrame({"user_id": sorted(user_ids.astype(str).unique())})
    _require_ids(raw, ("user_id",), path or Path("users"))
    users = pd.DataFrame({"user_id": raw["user_id"].astype(str)})
    if "age" in raw.columns:
        users["age"] = pd.to_numeric(raw["age"], errors="coerce").astype("Int64")
    for column in ("gender", "occupation"):
        if column in raw.columns:
            users[column] = raw[column].astype(str)
    return users


def _atomic_signals(items: pd.DataFrame, users: pd.DataFrame, raw_inter: pd.DataFrame) -> list:
    signals = [S.SIGNAL_INTERACTIONS]
    if "timestamp" in raw_inter.columns:
        signals.append(S.SIGNAL_TIMESTAMPS)
    if "rating" in raw_inter.columns:
        signals.append(S.SIGNAL_RATINGS)
    if items["title"].ne("").any():
        signals.append(S.SIGNAL_ITEM_TEXT)
    if items["categories"].ne("").any():
        signals.append(S.SIGNAL_ITEM_CATEGORIES)
    if any(c in users.columns for c in S.USER_ATTRIBUTE_COLUMNS):
        signals.append(S.SIGNAL_USER_ATTRIBUTES)
    if "review_text" in raw_inter.columns:
        signals.append(S.SIGNAL_REVIEW_TEXT)
    return signals


def load_recbole_atomic(
    folder: str | Path,
    name: str,
    *,
    source_name: str = "recbole_atomic",
    rating_range: tuple[float, float] = (1.0, 5.0),
    rating_threshold: float = 4.0,
    timestamps: bool = True,
) -> S.Tables:
    """Load ``NAME.inter`` (required), ``NAME.item`` (required) and ``NAME.user`` (optional).

    ``timestamps``: the source declares event times, so ``NAME.inter`` must have a ``timestamp``
    field; without it, each user's events keep file order.
    """
    folder = Path(folder)
    inter_path, item_path, user_path = (
        folder / f"{name}.{ext}" for ext in ("inter", "item", "user")
    )
    raw_inter = _read_atomic(inter_path)
    raw_items = _read_atomic(item_path)
    raw_users = _read_atomic(user_path) if user_path.is_file() else None
    interactions = _normalize_interactions(raw_inter, inter_path, timestamps)
    items = _normalize_items(raw_items, item_path)
    users = _normalize_users(raw_users, interactions["user_id"], user_path)
    info = S.SourceInfo(
        name=source_name,
        rating_min=rating_range[0],
        rating_max=rating_range[1],
        rating_threshold=rating_threshold,
        signals=tuple(_atomic_signals(items, users, raw_inter)),
    )
    return S.Tables(interactions=interactions, items=items, users=users, info=info)


def ml100k_folder() -> Path:
    """The MovieLens-100K folder inside the installed recbole package."""
    try:
        root = resources.files("recbole") / "dataset_example" / "ml-100k"
    except ModuleNotFoundError:
        raise IngestError(
            "data.source 'ml-100k' needs the recbole package (the carrier of the MovieLens-100K "
            "files): run `make setup`, or `pip install --no-deps recbole==1.2.1`"
        ) from None
    path = Path(str(root))
    if not (path / "ml-100k.inter").is_file():
        raise IngestError(f"recbole is installed but {path}/ml-100k.inter is missing")
    return path


def load_ml100k(rating_threshold: float = 4.0) -> S.Tables:
    """MovieLens-100K: 100,000 ratings (1–5) of 1,682 movies by 943 users, 1997–1998."""
    return load_recbole_atomic(
        ml100k_folder(),
        "ml-100k",
        source_name="ml-100k",
        rating_range=(1.0, 5.0),
        rating_threshold=rating_threshold,
    )


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """``(line number, record)`` of every non-blank line; each line must be one JSON object."""
    if not path.is_file():
        raise IngestError(f"missing source file: {path}")
    records = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise IngestError(
                        f"{path}: line {number} is not valid JSON ({exc.msg}); "
                        "the file looks truncated or corrupted"
                    ) from None
                if not isinstance(record, dict):
                    raise IngestError(
                        f"{path}: line {number} is a JSON {type(record).__name__}, not an object"
                    )
                records.append((number, record))
    except UnicodeDecodeError as exc:
        raise IngestError(f"{path} is not readable UTF-8 text ({exc.reason})") from None
    return records


def _number(value: object, path: Path, line: int, field: str) -> float:
    """A JSON number (or numeric string) of one record; anything else names file and line."""
    if not isinstance(value, bool):
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            pass
    raise IngestError(f"{path}: line {line}: {field} is {value!r}; expected a number")


def _identifier(value: object, path: Path, line: int, field: str) -> str:
    """A non-empty id (JSON string or integer) of one record."""
    if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
        return str(value)
    raise IngestError(f"{path}: line {line}: {field} is {value!r}; expected a non-empty string id")


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(_text(v) for v in value).strip()
    return str(value).strip()


def load_amazon_jsonl(
    folder: str | Path,
    *,
    rating_range: tuple[float, float] = (1.0, 5.0),
    rating_threshold: float = 4.0,
) -> S.Tables:
    """Amazon Reviews 2023 layout: ``reviews.jsonl`` + ``meta.jsonl`` in ``folder``."""
    folder = Path(folder)
    reviews_path, meta_path = folder / "reviews.jsonl", folder / "meta.jsonl"
    reviews = _read_jsonl(reviews_path)
    meta = _read_jsonl(meta_path)
    required = ("user_id", "parent_asin", "rating", "timestamp")
    for line, review in reviews:
        missing = [k for k in required if k not in review]
        if missing:
            raise IngestError(f"{reviews_path}: line {line} lacks field(s) {missing}")
    timestamps = pd.Series(
        [_number(r["timestamp"], reviews_path, n, "timestamp") for n, r in reviews],
        dtype="float64",
    )
    _require_times(timestamps, reviews_path, [n for n, _ in reviews])
    if len(timestamps) and timestamps.median() > 1e11:  # Amazon 2023 stores milliseconds
        timestamps = timestamps // 1000
    interactions = pd.DataFrame(
        {
            "user_id": [_identifier(r["user_id"], reviews_path, n, "user_id") for n, r in reviews],
            "item_id": [
                _identifier(r["parent_asin"], reviews_path, n, "parent_asin") for n, r in reviews
            ],
            "rating": pd.Series(
                [_number(r["rating"], reviews_path, n, "rating") for n, r in reviews],
                dtype="float64",
            ),
            "timestamp": timestamps.astype("int64"),
            "review_title": [_text(r.get("title")) for _, r in reviews],
            "review_text": [_text(r.get("text")) for _, r in reviews],
        }
    )
    for line, record in meta:
        if "parent_asin" not in record:
            raise IngestError(f"{meta_path}: line {line} lacks field 'parent_asin'")
    meta = [
        (n, {**m, "parent_asin": _identifier(m["parent_asin"], meta_path, n, "parent_asin")})
        for n, m in meta
    ]
    items = pd.DataFrame(
        {
            "item_id": [str(m["parent_asin"]) for _, m in meta],
            "title": [_text(m.get("title")) for _, m in meta],
            "description": [_text(m.get("description")) for _, m in meta],
            "categories": ["|".join(_text(c) for c in m.get("categories") or []) for _, m in meta],
            "year": pd.Series([pd.NA] * len(meta), dtype="Int64"),
        }
    )
    users = _normalize_users(None, interactions["user_id"])
    signals = [
        S.SIGNAL_INTERACTIONS,
        S.SIGNAL_TIMESTAMPS,
        S.SIGNAL_RATINGS,
        S.SIGNAL_ITEM_TEXT,
        S.SIGNAL_REVIEW_TEXT,
    ]
    if items["categories"].ne("").any():
        signals.append(S.SIGNAL_ITEM_CATEGORIES)
    info = S.SourceInfo(
        name="amazon_jsonl",
        rating_min=rating_range[0],
        rating_max=rating_range[1],
        rating_threshold=rating_threshold,
        signals=tuple(signals),
    )
    return S.Tables(interactions=interactions, items=items, users=users, info=info)


def k_core(interactions: pd.DataFrame, min_user: int, min_item: int) -> pd.DataFrame:
    """Drop users and items with too few interactions, repeating until both bounds hold."""
    frame = interactions
    while True:
        user_counts = frame["user_id"].map(frame["user_id"].value_counts())
        item_counts = frame["item_id"].map(frame["item_id"].value_counts())
        keep = (user_counts >= min_user) & (item_counts >= min_item)
        if keep.all():
            return frame.reset_index(drop=True)
        frame = frame[keep]
