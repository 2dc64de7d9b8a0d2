"""The pipeline's train/valid/test split as RecBole atomic files, so RecBole's models can be run on
exactly the data our figures come from.

``build-tasks`` writes every warm interaction with its leave-one-out ``split``
(``data/tasks/interactions.parquet``, in chronological order per user). This module writes it as
RecBole *benchmark files* — RecBole loads them instead of splitting the data itself:

- ``NAME.{train,valid,test}.inter``: user_id, item_id, rating, timestamp (general models: BPR, MF,
  LightGCN …). RecBole's full-ranking evaluation excludes the items a user met in the earlier
  files (train for valid; train + valid for test), which is our default protocol.
- ``NAME.{seq_train,seq_valid,seq_test}.inter``: the same split with each target's history as an
  ``item_id_list`` (sequential models: SASRec, GRU4Rec …). With benchmark files RecBole 1.2 does not
  build sequences itself, so they are written here the way its own augmentation would: every
  training prefix predicts the next training item; the valid target's history is the whole train
  part; the test target's history is train + valid; the latest ``max_history`` items are kept.
- ``NAME.item``: the evaluation catalogue (cold items included, so RecBole ranks the same items).
- ``NAME.user``: user attributes, where the source has them (one row for every user: RecBole drops
  the interactions of users its ``.user`` file lacks).
- ``recbole.yaml`` / ``recbole_sequential.yaml``: the RecBole configs that reproduce the protocol.

Files are tab-separated with typed headers (``user_id:token``); tabs and line breaks inside text are
replaced by spaces. :func:`read_recbole_split` reads the general files back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from recfound import artifacts
from recfound.data import schema as S
from recfound.errors import UserInputError

DEFAULT_NAME = "recfound"
CONFIG_FILE = "recbole.yaml"
SEQUENTIAL_CONFIG_FILE = "recbole_sequential.yaml"
SEQUENTIAL_SUFFIXES = {split: f"seq_{split}" for split in S.SPLITS}
MAX_HISTORY = 50  # RecBole's default MAX_ITEM_LIST_LENGTH
ITEM_LIST_FIELD = "item_id_list"

INTER_HEADER = ("user_id:token", "item_id:token", "rating:float", "timestamp:float")
SEQUENTIAL_HEADER = (
    "user_id:token",
    f"{ITEM_LIST_FIELD}:token_seq",
    "item_id:token",
    "rating:float",
    "timestamp:float",
)
ITEM_HEADER = ("item_id:token", "title:token_seq", "release_year:token", "class:token_seq")
USER_ATTRIBUTE_TYPES = {"age": "token", "gender": "token", "occupation": "token"}

_SPLIT_COLUMNS = ("user_id", "item_id", "rating", "timestamp", "split")
_BREAKS = re.compile(r"[\t\r\n\v\f]+")
_SPACES = re.compile(r"\s+")


class ExportError(UserInputError):
    """The split cannot be exported (missing inputs, an unusable target folder or id)."""


@dataclass(frozen=True)
class RecboleExport:
    """What :func:`export_recbole_split` wrote: the folder, the file names and rows per split."""

    folder: Path
    name: str
    files: tuple[str, ...]
    rows: dict[str, int]


def export_recbole_split(
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    users: pd.DataFrame,
    folder: str | Path,
    *,
    name: str = DEFAULT_NAME,
    max_history: int = MAX_HISTORY,
) -> RecboleExport:
    """Write ``interactions`` (user_id, item_id, rating, timestamp, split; chronological per user)
    as RecBole benchmark files under ``folder``, replacing it as a whole.

    ``items`` is the catalogue (item_id, title, categories ``|``-separated, year); ``users`` the
    normalized users table (user_id and optional age, gender, occupation). RecBole reads
    ``data_path/NAME/NAME.*``, so ``folder`` must be named ``name``; an existing folder is replaced
    only if it holds nothing but a previous export.
    """
    folder = Path(folder)
    _check_target(folder, name)
    split = _checked_split(interactions)
    _check_ids(split, items)
    attributes = [c for c in USER_ATTRIBUTE_TYPES if c in users.columns]

    files: dict[str, str] = {}
    for part in S.SPLITS:
        rows = split[split["split"] == part]
        files[f"{name}.{part}.inter"] = _inter_text(rows)
    for part, text in _sequential_texts(split, max_history).items():
        files[f"{name}.{SEQUENTIAL_SUFFIXES[part]}.inter"] = text
    files[f"{name}.item"] = _item_text(items)
    if attributes:
        files[f"{name}.user"] = _user_text(users, split["user_id"].unique(), attributes)
    data_path = str(folder.resolve().parent)
    files[CONFIG_FILE] = _config_text(name, data_path, attributes, sequential=False)
    files[SEQUENTIAL_CONFIG_FILE] = _config_text(
        name, data_path, attributes, sequential=True, max_history=max_history
    )

    with artifacts.staged_directory(folder) as staging:
        for filename, text in files.items():
            (staging / filename).write_text(text, encoding="utf-8")
    rows = {part: int((split["split"] == part).sum()) for part in S.SPLITS}
    return RecboleExport(folder=folder, name=name, files=tuple(sorted(files)), rows=rows)


def read_recbole_split(folder: str | Path, name: str = DEFAULT_NAME) -> pd.DataFrame:
    """Read ``NAME.{train,valid,test}.inter`` back as user_id, item_id (str), rating (float),
    timestamp (int64) and split, in file order (train, valid, test)."""
    folder = Path(folder)
    frames = []
    for part in S.SPLITS:
        path = folder / f"{name}.{part}.inter"
        if not path.is_file():
            raise ExportError(f"missing {path}: write it with `recfound export-split`")
        frame = pd.read_csv(
            path, sep="\t", dtype=str, keep_default_na=False, quoting=3, encoding="utf-8"
        )
        frame.columns = [c.split(":", 1)[0] for c in frame.columns]
        frames.append(
            pd.DataFrame(
                {
                    "user_id": frame["user_id"].astype(str),
                    "item_id": frame["item_id"].astype(str),
                    "rating": frame["rating"].astype("float64"),
                    "timestamp": frame["timestamp"].astype("float64").astype("int64"),
                    "split": part,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def recbole_text(value: object) -> str:
    """One atomic-file cell: tabs and line breaks become spaces, runs of spaces collapse."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return ""
    return _SPACES.sub(" ", _BREAKS.sub(" ", str(value))).strip()


def _check_target(folder: Path, name: str) -> None:
    if not name or _BREAKS.search(name) or "/" in name or name.startswith("."):
        raise ExportError(f"--name {name!r} is not a usable dataset name")
    if folder.name != name:
        raise ExportError(
            f"RecBole reads DATA_PATH/{name}/{name}.*, so the folder must be named {name!r}, not "
            f"{folder.name!r}: use {folder / name} (or pass --name {folder.name})"
        )
    if folder.exists():
        if not folder.is_dir():
            raise ExportError(f"{folder} exists and is not a folder")
        ours = {CONFIG_FILE, SEQUENTIAL_CONFIG_FILE}
        foreign = [
            p.name
            for p in folder.iterdir()
            if not (p.is_file() and (p.name in ours or p.name.startswith(f"{name}.")))
        ]
        if foreign:
            raise ExportError(
                f"{folder} holds files that are not a RecBole export ({', '.join(sorted(foreign))}"
                "); the export replaces the whole folder, so choose an empty or new one"
            )


def _checked_split(interactions: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in _SPLIT_COLUMNS if c not in interactions.columns]
    if missing:
        raise ExportError(
            f"the split interactions lack column(s) {missing}: rebuild them with "
            "`recfound build-tasks`"
        )
    unknown = sorted(set(interactions["split"]) - set(S.SPLITS))
    if unknown:
        raise ExportError(f"unknown split value(s) {unknown}; expected {list(S.SPLITS)}")
    split = interactions[list(_SPLIT_COLUMNS)].reset_index(drop=True)
    return split.assign(user_id=split["user_id"].astype(str), item_id=split["item_id"].astype(str))


def _check_ids(split: pd.DataFrame, items: pd.DataFrame) -> None:
    for column, values in (("user_id", split["user_id"]), ("item_id", items["item_id"])):
        bad = values[values.astype(str).str.contains(r"[\s]", regex=True)]
        if len(bad):
            raise ExportError(
                f"{column} {bad.iloc[0]!r} contains whitespace; RecBole tokens cannot"
            )
    unknown = set(split["item_id"]) - set(items["item_id"].astype(str))
    if unknown:
        raise ExportError(
            f"{len(unknown)} interaction item(s) are not in the catalogue (e.g. "
            f"{sorted(unknown)[0]!r}); RecBole would drop their interactions: rebuild with "
            "`recfound build-tasks`"
        )


def _table(header: tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return repr(float(value)) if float(value) != int(value) else str(int(value))


def _inter_text(rows: pd.DataFrame) -> str:
    return _table(
        INTER_HEADER,
        [
            [u, i, _number(r), str(int(t))]
            for u, i, r, t in zip(
                rows["user_id"], rows["item_id"], rows["rating"], rows["timestamp"], strict=True
            )
        ],
    )


def _sequential_texts(split: pd.DataFrame, max_history: int) -> dict[str, str]:
    """Per split, one row per target with the user's preceding items (RecBole's augmentation)."""
    rows: dict[str, list[list[str]]] = {part: [] for part in S.SPLITS}
    order = {part: rank for rank, part in enumerate(S.SPLITS)}
    ranked = split.assign(_rank=split["split"].map(order), _row=range(len(split)))
    ranked = ranked.sort_values(["user_id", "_rank", "_row"], kind="mergesort")
    for user, group in ranked.groupby("user_id", sort=False):
        seen: list[str] = []
        for item, rating, timestamp, part in zip(
            group["item_id"], group["rating"], group["timestamp"], group["split"], strict=True
        ):
            if seen:
                history = " ".join(seen[-max_history:])
                rows[part].append([str(user), history, item, _number(rating), str(int(timestamp))])
            seen.append(item)
    return {part: _table(SEQUENTIAL_HEADER, part_rows) for part, part_rows in rows.items()}


def _item_text(items: pd.DataFrame) -> str:
    def categories(value: object) -> str:
        parts = recbole_text(value).split("|")
        return " ".join(p.strip().replace(" ", "_") for p in parts if p.strip())

    def year(value: object) -> str:
        return "" if value is None or pd.isna(value) else str(int(value))

    frame = items.reset_index(drop=True)
    empty = pd.Series("", index=frame.index, dtype=object)
    return _table(
        ITEM_HEADER,
        [
            [str(i), recbole_text(t), year(y), categories(c)]
            for i, t, y, c in zip(
                frame["item_id"],
                frame.get("title", empty),
                frame.get("year", pd.Series(pd.NA, index=frame.index)),
                frame.get("categories", empty),
                strict=True,
            )
        ],
    )


def _user_text(users: pd.DataFrame, user_ids: object, attributes: list[str]) -> str:
    known = users.assign(user_id=users["user_id"].astype(str)).drop_duplicates("user_id")
    table = pd.DataFrame({"user_id": list(user_ids)}).merge(known, on="user_id", how="left")

    def cell(value: object) -> str:
        text = recbole_text(value)
        return text.replace(" ", "_")  # a token: one value

    header = ("user_id:token", *(f"{c}:{USER_ATTRIBUTE_TYPES[c]}" for c in attributes))
    return _table(
        header,
        [[str(row["user_id"]), *(cell(row[c]) for c in attributes)] for _, row in table.iterrows()],
    )


def _config_text(
    name: str,
    data_path: str,
    attributes: list[str],
    *,
    sequential: bool,
    max_history: int = MAX_HISTORY,
) -> str:
    config: dict = {
        "data_path": data_path,
        "dataset": name,
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "RATING_FIELD": "rating",
        "TIME_FIELD": "timestamp",
        "load_col": {
            "inter": ["user_id", "item_id", "rating", "timestamp"],
            "item": ["item_id", "title", "release_year", "class"],
        },
        # every interaction of the split is kept: no k-core filtering, no rating threshold
        "user_inter_num_interval": "[0,inf)",
        "item_inter_num_interval": "[0,inf)",
        "val_interval": None,
        "eval_args": {"group_by": "user", "order": "TO", "mode": "full"},
        "metrics": ["Recall", "NDCG", "MRR"],
        "topk": [5, 10, 20],
        "valid_metric": "NDCG@10",
    }
    if attributes:
        config["load_col"]["user"] = ["user_id", *attributes]
    if sequential:
        config["benchmark_filename"] = [SEQUENTIAL_SUFFIXES[s] for s in S.SPLITS]
        config["load_col"]["inter"] = ["user_id", ITEM_LIST_FIELD, "item_id", "timestamp"]
        config["alias_of_item_id"] = [ITEM_LIST_FIELD]
        config["MAX_ITEM_LIST_LENGTH"] = max_history
        config["train_neg_sample_args"] = None  # cross-entropy over all items (SASRec, GRU4Rec)
        config["loss_type"] = "CE"
        intro = (
            "# RecBole config for sequential models (SASRec, GRU4Rec …) on RecFound's split.\n"
            "# Each row of NAME.seq_*.inter is a target with its preceding items (item_id_list);\n"
            "# the test target's history is train + valid. RecBole does not exclude the\n"
            "# history from the ranking for sequential models: compare with our unmasked figures.\n"
        )
    else:
        config["benchmark_filename"] = list(S.SPLITS)
        intro = (
            "# RecBole config for general models (BPR, LightGCN …) on RecFound's split.\n"
            "# Full ranking over the catalogue; the items a user met before the target are\n"
            "# excluded (train for valid, train + valid for test): our default protocol.\n"
            "# For a CE-trained model add `train_neg_sample_args: ~`.\n"
        )
    return intro + yaml.safe_dump(config, sort_keys=False, default_flow_style=None)


def load_split_inputs(
    tasks_dir: str | Path, interim_dir: str | Path
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read ``(interactions with split, catalogue items with metadata, users)`` from what
    ``build-tasks`` (``tasks_dir``) and ``ingest`` (``interim_dir``) wrote."""
    from recfound.data.ingest import read_tables

    tasks_dir = Path(tasks_dir)
    paths = {name: tasks_dir / f"{name}.parquet" for name in ("interactions", "items")}
    for path in paths.values():
        if not path.is_file():
            raise ExportError(
                f"missing {path}: run `recfound build-tasks` first (it writes the split)"
            )
    interactions = pd.read_parquet(paths["interactions"])
    catalogue = pd.read_parquet(paths["items"], columns=["item_id"])
    tables = read_tables(interim_dir)
    metadata = tables.items.assign(item_id=tables.items["item_id"].astype(str))
    items = (
        catalogue.assign(item_id=catalogue["item_id"].astype(str))
        .merge(metadata.drop_duplicates("item_id"), on="item_id", how="left")
        .reset_index(drop=True)
    )
    return interactions, items, tables.users
