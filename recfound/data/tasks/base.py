"""What every task builder shares: the :class:`TaskBuilder` contract and the :class:`TaskContext`.

The context is computed once per build from the normalized tables: cold items are removed, every
user's interactions are put in time order and split by leave-one-out, and per-user timelines are
kept so each builder only *reads* them. Builders never see cold-item interactions except through
``cold_interactions`` (used by ``zero_shot`` for evaluation only).

Two kinds of split are used by builders:

- **user-based** tasks draw targets from the leave-one-out split
  (:meth:`TaskContext.user_examples`): a train example's target and history are the user's train
  interactions; a valid/test example's target is the held-out interaction and its history
  everything before it.
- **item-level** tasks (about items or item pairs, no user) split by a seeded hash of the item or
  pair key (:meth:`TaskContext.item_split`), 80/10/10.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import ClassVar, TypeVar

import numpy as np
import pandas as pd
from numpy.random import Generator
from scipy import sparse

from recfound.config import ConfigError
from recfound.data.schema import (
    SIGNAL_ITEM_CATEGORIES,
    SIGNAL_ITEM_TEXT,
    SPLITS,
    Tables,
    TaskKind,
    TaskRecord,
)
from recfound.data.semantic_ids import collaborative_item_vectors, semantic_codes
from recfound.data.splits import SPLIT_COLUMN, choose_cold_items, split_leave_one_out

_SAFE_ID = re.compile(r"[A-Za-z0-9_.\-]{1,40}")
ITEM_SPLIT_PERCENT = {"train": 80, "valid": 10, "test": 10}
YES_NO = ["yes", "no"]
# A well-formed attribute value: a year, or a list of category names (one to three words each)
_CATEGORY = r"[A-Za-z][\w'&/-]*( [\w'&/-]+){0,2}"
VALUE_FORMAT = rf"\d{{4}}|{_CATEGORY}(, {_CATEGORY})*"

T = TypeVar("T")
# A task record's fields as a builder's hook returns them (``prompt``, ``target`` …)
Fields = Mapping[str, object]


@dataclass(frozen=True)
class ItemInfo:
    """The attributes of one item that prompts are written from."""

    item_id: str
    title: str
    genres: tuple[str, ...]
    year: int | None
    description: str


@dataclass(frozen=True)
class UserTimeline:
    """One user's warm (non-cold) interactions in time order, each item once.

    The first ``num_train`` entries are training interactions; after them come the valid and the
    test interaction (users with fewer than 3 interactions have ``num_train == len(item_ids)``).
    """

    user_id: str
    item_ids: tuple[str, ...]
    ratings: tuple[float, ...]
    num_train: int

    @property
    def train_ids(self) -> tuple[str, ...]:
        return self.item_ids[: self.num_train]


@dataclass(frozen=True)
class UserExample:
    """The interaction at ``position`` of ``timeline`` as a target, with what came before it."""

    timeline: UserTimeline
    position: int
    split: str
    history_length: int
    row: int  # the row of ``TaskContext.interactions`` this target comes from
    sequence_length: int = 50

    @property
    def user_id(self) -> str:
        return self.timeline.user_id

    @property
    def target_id(self) -> str:
        return self.timeline.item_ids[self.position]

    @property
    def rating(self) -> float:
        return self.timeline.ratings[self.position]

    @property
    def _start(self) -> int:
        return max(0, self.position - self.history_length)

    @property
    def history_ids(self) -> list[str]:
        """The last ``history_length`` items before the target, oldest first."""
        return list(self.timeline.item_ids[self._start : self.position])

    @property
    def sequence_ids(self) -> list[str]:
        """The last ``sequence_length`` items before the target, oldest first: the behaviour a
        next-item prompt shows as identifier tokens."""
        return list(
            self.timeline.item_ids[max(0, self.position - self.sequence_length) : self.position]
        )

    @property
    def history_ratings(self) -> list[float]:
        return list(self.timeline.ratings[self._start : self.position])


def reception(mean_rating: float, ctx: TaskContext) -> str:
    """An average rating as words, relative to the source's like threshold."""
    threshold = ctx.rating_threshold
    if mean_rating >= threshold:
        return "highly rated"
    if mean_rating >= threshold - 0.5:
        return "well liked"
    if mean_rating >= threshold - 1.5:
        return "mixed reception"
    return "poorly rated"


def rater_word(mean_rating: float, ctx: TaskContext) -> str:
    """How a user rates, from their mean rating relative to the source's like threshold."""
    threshold = ctx.rating_threshold
    if mean_rating >= threshold - 0.2:
        return "a generous rater"
    if mean_rating >= threshold - 1.0:
        return "a moderate rater"
    return "a strict rater"


def stable_hash(text: str) -> int:
    """A 64-bit hash that, unlike ``hash()``, is the same in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def format_rating(value: float) -> str:
    """``4.0`` → ``"4"``, ``3.5`` → ``"3.5"``: ratings as a model should write them."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass
class TaskContext:
    """Everything a builder reads, computed once per build (see the module docstring)."""

    tables: Tables
    interactions: pd.DataFrame
    cold_items: frozenset[str]
    cold_interactions: pd.DataFrame
    items: dict[str, ItemInfo]
    timelines: dict[str, UserTimeline]
    item_pool: np.ndarray
    seed: int
    history_length: int
    sequence_length: int
    num_candidates: int
    max_train_per_task: int
    max_eval_per_task: int
    max_train_next_item: int
    category_word: str
    item_noun: str
    item_tokens: dict[str, str]
    _flat_user: np.ndarray
    _flat_position: np.ndarray
    _flat_from_end: np.ndarray  # 0 for a user's last interaction (test), 1 valid, 2 last train…
    next_item_train_positions: int = 8
    queries_per_train_item: int = 1

    @classmethod
    def from_tables(
        cls,
        tables: Tables,
        *,
        seed: int,
        history_length: int,
        num_candidates: int,
        max_train_per_task: int,
        max_eval_per_task: int,
        cold_item_fraction: float,
        sequence_length: int = 50,
        max_train_next_item: int = 8000,
        next_item_train_positions: int = 8,
        queries_per_train_item: int = 1,
        identifiers: str = "atomic",
        semantic_levels: int = 2,
        semantic_codebook_size: int = 32,
    ) -> TaskContext:
        """Remove cold items, deduplicate, split by leave-one-out and index per-user timelines.

        Interactions with items missing from the items table are dropped (no text to show). A user
        who met the same item twice keeps only the later interaction, so a held-out item can never
        also sit in that user's training history.
        """
        items = _item_infos(tables.items)
        raw = tables.interactions
        raw = raw[raw["item_id"].isin(items.keys())].reset_index(drop=True)
        cold = frozenset(choose_cold_items(raw, cold_item_fraction, seed))
        is_cold = raw["item_id"].isin(cold)
        warm = raw[~is_cold]
        warm = (
            warm.sort_values("timestamp", kind="mergesort")
            .drop_duplicates(["user_id", "item_id"], keep="last")
            .sort_index()
        )
        split = split_leave_one_out(warm)
        position = split.groupby("user_id", sort=False).cumcount().to_numpy()

        users = split["user_id"].to_numpy()
        item_ids = split["item_id"].to_numpy()
        ratings = split["rating"].to_numpy(dtype=float)
        is_train = split[SPLIT_COLUMN].to_numpy() == "train"
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else []
        ends = np.r_[starts[1:], len(users)] if len(users) else []
        timelines = {}
        for start, end in zip(starts, ends, strict=True):
            timelines[str(users[start])] = UserTimeline(
                user_id=str(users[start]),
                item_ids=tuple(str(i) for i in item_ids[start:end]),
                ratings=tuple(float(r) for r in ratings[start:end]),
                num_train=int(is_train[start:end].sum()),
            )
        cold_interactions = raw[is_cold & raw["user_id"].isin(timelines.keys())]
        pool = np.array(sorted(i for i in items if i not in cold), dtype=object)
        if num_candidates > len(pool):
            raise ConfigError(
                f"tasks.num_candidates is {num_candidates}, but the catalogue has only "
                f"{len(pool)} items to draw candidates from (after filtering and holding out "
                f"cold items); set tasks.num_candidates to at most {len(pool)}"
            )
        # Words for prompts: MovieLens items are movies with genres; other sources are generic.
        category_word = "categories" if tables.info.name == "amazon_jsonl" else "genres"
        item_noun = item_noun_of(tables.info.name)
        train = split.loc[split[SPLIT_COLUMN] == "train"]
        train_items = sorted(train["item_id"].astype(str).unique())
        if identifiers == "semantic":
            item_tokens = semantic_item_tokens(
                train, train_items, semantic_levels, semantic_codebook_size, seed
            )
        else:
            item_tokens = item_identifier_tokens(train_items)
        return cls(
            tables=tables,
            interactions=split,
            cold_items=cold,
            cold_interactions=cold_interactions.reset_index(drop=True),
            items=items,
            timelines=timelines,
            item_pool=pool,
            seed=seed,
            history_length=history_length,
            sequence_length=sequence_length,
            num_candidates=num_candidates,
            max_train_per_task=max_train_per_task,
            max_eval_per_task=max_eval_per_task,
            max_train_next_item=max_train_next_item,
            category_word=category_word,
            item_noun=item_noun,
            item_tokens=item_tokens,
            _flat_user=users,
            _flat_position=position,
            _flat_from_end=split.groupby("user_id", sort=False)
            .cumcount(ascending=False)
            .to_numpy(),
            next_item_train_positions=next_item_train_positions,
            queries_per_train_item=queries_per_train_item,
        )

    # --- randomness and caps -------------------------------------------------------------

    def rng(self, task: str) -> np.random.Generator:
        """A generator of its own per task, so adding a task never changes another's data."""
        return np.random.default_rng([self.seed, zlib.crc32(task.encode("utf-8"))])

    def cap_for(self, split: str) -> int:
        return self.max_train_per_task if split == "train" else self.max_eval_per_task

    def cap_records(self, records: list[TaskRecord], rng: np.random.Generator) -> list[TaskRecord]:
        """Keep at most ``cap_for(split)`` records per split (seeded), in their original order."""
        kept: list[TaskRecord] = []
        for split in SPLITS:
            in_split = [r for r in records if r.split == split]
            kept.extend(self.subsample(in_split, self.cap_for(split), rng))
        return kept

    @staticmethod
    def subsample(values: Sequence[T], cap: int, rng: np.random.Generator) -> list[T]:
        """A seeded subset of at most ``cap`` values, in their original order."""
        if len(values) <= cap:
            return list(values)
        chosen = np.sort(rng.choice(len(values), size=cap, replace=False))
        return [values[i] for i in chosen]

    def item_split(self, key: str) -> str:
        """train/valid/test (80/10/10) by a seeded hash of an item or pair key."""
        bucket = stable_hash(f"{self.seed}|{key}") % 100
        if bucket < ITEM_SPLIT_PERCENT["train"]:
            return "train"
        if bucket < ITEM_SPLIT_PERCENT["train"] + ITEM_SPLIT_PERCENT["valid"]:
            return "valid"
        return "test"

    # --- users ---------------------------------------------------------------------------

    @property
    def rating_threshold(self) -> float:
        return self.tables.info.rating_threshold

    def user_examples(
        self,
        rng: np.random.Generator,
        split: str,
        *,
        min_history: int = 1,
        where: np.ndarray | None = None,
        every_user: bool = False,
    ) -> list[UserExample]:
        """A seeded sample (at most ``cap_for(split)``) of leave-one-out targets in ``split``.

        ``where`` is an optional boolean mask aligned with ``self.interactions`` rows (e.g. only
        liked interactions). Train targets are train interactions with at least ``min_history``
        earlier ones; valid/test targets are the users' held-out interactions. ``every_user``
        keeps every valid/test target (no cap): full-ranking tasks are evaluated on every user,
        as the standard protocol asks, and cost one forward pass per user; their train targets
        are each user's last ``next_item_train_positions`` training interactions (long
        histories, like the held-out targets'), capped at ``max_train_next_item``.
        """
        mask = (self.interactions[SPLIT_COLUMN].to_numpy() == split) & (
            self._flat_position >= min_history
        )
        if every_user and split == "train":
            mask &= self._flat_from_end <= self.next_item_train_positions + 1
        if where is not None:
            mask &= where
        rows = np.flatnonzero(mask)
        cap = self.cap_for(split)
        if every_user:
            cap = self.max_train_next_item if split == "train" else len(rows)
        if len(rows) > cap:
            rows = np.sort(rng.choice(rows, size=cap, replace=False))
        return [
            UserExample(
                timeline=self.timelines[str(self._flat_user[row])],
                position=int(self._flat_position[row]),
                split=split,
                history_length=self.history_length,
                row=int(row),
                sequence_length=self.sequence_length,
            )
            for row in rows
        ]

    def liked_mask(self) -> np.ndarray:
        """Rows of ``self.interactions`` rated at or above the source's like threshold."""
        return self.interactions["rating"].to_numpy(dtype=float) >= self.rating_threshold

    @property
    def train_interactions(self) -> pd.DataFrame:
        """Warm train interactions only: the one safe basis for item statistics."""
        return self.interactions[self.interactions[SPLIT_COLUMN] == "train"]

    @cached_property
    def co_liked_counts(self) -> sparse.csr_matrix:
        """Item × item counts of users who liked both (rating ≥ threshold), indexed like
        ``item_pool``, from *train* interactions only so no held-out interaction shapes a pair."""
        train = self.train_interactions
        liked = train[train["rating"].to_numpy(dtype=float) >= self.rating_threshold]
        columns = liked["item_id"].map(self.item_positions).to_numpy()
        rows = liked["user_id"].factorize()[0]
        users_by_items = sparse.csr_matrix(
            (np.ones(len(rows), dtype=np.int32), (rows, columns)),
            shape=(rows.max() + 1 if len(rows) else 0, len(self.item_pool)),
        )
        counts = (users_by_items.T @ users_by_items).tocsr()
        counts.setdiag(0)
        counts.eliminate_zeros()
        return counts

    @cached_property
    def item_positions(self) -> dict[str, int]:
        """Each item of ``item_pool`` → its position there."""
        return {item: n for n, item in enumerate(self.item_pool)}

    @cached_property
    def _rating_sums(self) -> tuple[dict, dict, dict]:
        """Training ratings summed and counted per user and per item, and each (user, item)'s."""
        train = self.train_interactions
        users = train["user_id"].astype(str).to_numpy()
        items = train["item_id"].astype(str).to_numpy()
        ratings = train["rating"].to_numpy(dtype=float)
        per_user: dict[str, list[float]] = {}
        per_item: dict[str, list[float]] = {}
        for user, item, rating in zip(users, items, ratings, strict=True):
            per_user.setdefault(user, [0.0, 0])
            per_item.setdefault(item, [0.0, 0])
            per_user[user][0] += rating
            per_user[user][1] += 1
            per_item[item][0] += rating
            per_item[item][1] += 1
        pairs = dict(zip(zip(users, items, strict=True), ratings, strict=True))
        return per_user, per_item, pairs

    def rating_stats(self, key: str, user_id: str, item_id: str, of: str) -> tuple[float, int]:
        """Mean training rating and count of a user (``of="user"``, key = user id) or an item
        (``of="item"``, key = item id), leaving out the (``user_id``, ``item_id``) interaction when
        it is a training one: a train record's own rating never shows in its prompt."""
        per_user, per_item, pairs = self._rating_sums
        total, count = (per_user if of == "user" else per_item).get(key, (0.0, 0))
        own = pairs.get((user_id, item_id))
        if own is not None:
            total, count = total - own, count - 1
        return (total / count if count else float("nan")), count

    def rated_prompt_intro(
        self,
        user_id: str,
        target_id: str,
        history_ids: Sequence[str],
        history_ratings: Sequence[float],
    ) -> str:
        """``"A user whose average rating is 3.6/5 rated: <history with ratings>"``: the rated
        history of rating-type prompts, with the user's mean training rating (without the
        target's)."""
        mean, count = self.rating_stats(user_id, user_id, target_id, of="user")
        top = format_rating(self.tables.info.rating_max)
        history = self.history_text(history_ids, history_ratings)
        if not count:
            return f"A user rated: {history}"
        return (
            f"A user whose average rating is {mean:.1f}/{top} ({rater_word(mean, self)}) "
            f"rated: {history}"
        )

    def rated_intro(self, example: UserExample) -> str:
        """:meth:`rated_prompt_intro` of a leave-one-out example."""
        return self.rated_prompt_intro(
            example.user_id, example.target_id, example.history_ids, example.history_ratings
        )

    def item_rating_note(self, item_id: str, user_id: str) -> str:
        """``"well liked: average rating 3.9/5 from 444 users"`` of an item's training ratings (the
        user's own rating of it left out; the word as item profiles say it), or ``"no ratings
        yet"``."""
        mean, count = self.rating_stats(item_id, user_id, item_id, of="item")
        if not count:
            return "no ratings yet"
        top = format_rating(self.tables.info.rating_max)
        return f"{reception(mean, self)}: average rating {mean:.1f}/{top} from {count} users"

    def sample_negatives(
        self, rng: np.random.Generator, exclude: set[str] | frozenset[str], count: int
    ) -> list[str]:
        """``count`` distinct warm items not in ``exclude`` (fewer only if the pool runs out)."""
        chosen: list[str] = []
        taken = set(exclude)
        if len(self.item_pool) - len(taken) < 4 * count:  # small pool: enumerate what is left
            left = [i for i in self.item_pool if i not in taken]
            return [left[i] for i in rng.permutation(len(left))[:count]]
        while len(chosen) < count:
            for item in rng.choice(self.item_pool, size=2 * count):
                if item not in taken:
                    chosen.append(str(item))
                    taken.add(item)
                    if len(chosen) == count:
                        break
        return chosen

    def candidates_for(
        self, rng: np.random.Generator, example: UserExample, count: int
    ) -> dict[str, list[str]]:
        """A record's ``candidate_ids``: ``count`` item ids in seeded order, the target plus
        negatives the user never met; and its ``candidates``: their answers (identifier first).

        Negatives exclude every item of the user's timeline, so a train record never shows the
        user's valid or test items.
        """
        negatives = self.sample_negatives(rng, set(example.timeline.item_ids), count - 1)
        ids = [example.target_id, *negatives]
        candidate_ids = [ids[i] for i in rng.permutation(len(ids))]
        return {
            "candidate_ids": candidate_ids,
            "candidates": [self.item_answer(i) for i in candidate_ids],
        }

    # --- text ----------------------------------------------------------------------------

    def item_title(self, item_id: str) -> str:
        """``"Toy Story (1995)"``: the title, with the year where the source has one."""
        item = self.items[item_id]
        return f"{item.title} ({item.year})" if item.year is not None else item.title

    def item_ref(self, item_id: str) -> str:
        """``"<item_1> Toy Story (1995)"``: the identifier token next to the title (the title alone
        for an item without one: cold, or never in a training interaction)."""
        token = self.item_tokens.get(item_id)
        return f"{token} {self.item_title(item_id)}" if token else self.item_title(item_id)

    def item_answer(self, item_id: str) -> str:
        """The answer of a next-item task: the identifier token alone (the title for an item
        without one). One token to predict is the catalogue ranking itself; a title after it
        added about eight answer tokens whose loss pulled the adapter away from ranking
        (sequential_recommendation trained alone: validation Recall@10 0.181 with titles, 0.224
        without, from 0.210 before training)."""
        return self.item_tokens.get(item_id) or self.item_title(item_id)

    def sequence_text(self, item_ids: Sequence[str]) -> str:
        """Behaviour as text: the items' identifier tokens, space-separated, oldest first (items
        without an identifier are left out; the model knows them only by title)."""
        return " ".join(self.item_tokens[i] for i in item_ids if i in self.item_tokens)

    def item_text(self, item_id: str, identifier: bool = True) -> str:
        """``"<item_1> Toy Story (1995) — genres: Animation, Children's, Comedy"`` (+
        description); ``identifier=False`` leaves the identifier token out, as a cold item has
        none."""
        item = self.items[item_id]
        parts = [self.item_ref(item_id) if identifier else self.item_title(item_id)]
        if item.genres:
            parts.append(f"{self.category_word}: {', '.join(item.genres)}")
        if item.description:
            parts.append(item.description[:300])
        return " — ".join(parts)

    def history_text(self, item_ids: Sequence[str], ratings: Sequence[float] | None = None) -> str:
        """Items (identifier and title) as a ``; ``-joined list, with ``: 4/5`` ratings when
        given."""
        if ratings is None:
            return "; ".join(self.item_ref(i) for i in item_ids)
        top = format_rating(self.tables.info.rating_max)
        return "; ".join(
            f"{self.item_ref(i)}: {format_rating(r)}/{top}"
            for i, r in zip(item_ids, ratings, strict=True)
        )


def item_identifier_tokens(item_ids: Sequence[str]) -> dict[str, str]:
    """One new vocabulary token per item: ``<item_ID>`` (``<item_#N>`` for an id with characters
    a token should not hold). Only items of training interactions get one (the caller's choice),
    so identifiers never leak which items are held out."""
    return {
        item_id: f"<item_{item_id}>" if _SAFE_ID.fullmatch(item_id) else f"<item_#{n}>"
        for n, item_id in enumerate(item_ids)
    }


def semantic_item_tokens(
    train: pd.DataFrame, item_ids: Sequence[str], levels: int, codebook_size: int, seed: int
) -> dict[str, str]:
    """Each item's semantic identifier (``<item_a3><item_b17><item_s0>``): residual k-means
    codes of its collaborative vector from the training interactions ``train``, made unique by a
    suffix (:mod:`recfound.data.semantic_ids`)."""
    if not item_ids:
        return {}
    vectors = collaborative_item_vectors(train, item_ids, seed=seed)
    codes = semantic_codes(vectors, levels=levels, codebook_size=codebook_size, seed=seed)
    return {item: codes.identifier(n) for n, item in enumerate(item_ids)}


def identifier_vocabulary(item_tokens: dict[str, str]) -> list[str]:
    """The distinct vocabulary tokens of the identifiers, in first-seen order: one per item for
    atomic identifiers, the codebooks' tokens for semantic ones."""
    return list(
        dict.fromkeys(t for text in item_tokens.values() for t in IDENTIFIER_TOKEN.findall(text))
    )


# One identifier token: an atomic one is a whole identifier, a semantic one is a code position.
IDENTIFIER_TOKEN = re.compile(r"<item_[^<>\s]+>")


def item_noun_of(source: str) -> str:
    """The word prompts use for an item of ``source`` (MovieLens items are movies)."""
    return "movie" if source == "ml-100k" else "item"


def _item_infos(items: pd.DataFrame) -> dict[str, ItemInfo]:
    infos: dict[str, ItemInfo] = {}
    for item_id, title, description, categories, year in items[
        ["item_id", "title", "description", "categories", "year"]
    ].itertuples(index=False, name=None):
        title = "" if pd.isna(title) else str(title).strip()
        if not title:
            continue  # an item without a title cannot be shown in any prompt
        genres = tuple(g for g in str(categories or "").split("|") if g and g != "nan")
        infos[str(item_id)] = ItemInfo(
            item_id=str(item_id),
            title=title,
            genres=genres,
            year=None if pd.isna(year) else int(year),
            description="" if pd.isna(description) else str(description).strip(),
        )
    return infos


class TaskBuilder(ABC):
    """One task: its name, kind, the source signals it needs, and how its records are made.

    ``derived`` is one sentence saying how the task is made from the source's real signals where
    the source lacks the task's natural signal (e.g. no search queries on ml-100k); it is empty
    when the task uses its natural signal. ``eval_only`` tasks (zero_shot) have no train records by
    design and are not skipped for that.
    """

    name: ClassVar[str]
    kind: ClassVar[TaskKind]
    needs: ClassVar[frozenset[str]]
    derived: ClassVar[str] = ""
    eval_only: ClassVar[bool] = False
    # An eval-only task has no adapter task of its own: the model answers it with this one's.
    answered_as: ClassVar[str] = ""
    # Text tasks: a regular expression a well-formed answer matches as a whole (its template or
    # answer type); evaluation reports the share of generated answers that do. Empty: no check.
    answer_format: ClassVar[str] = ""

    @abstractmethod
    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        """Records for all three splits, already capped (see :meth:`TaskContext.cap_records`)."""

    def record(self, split: str, prompt: str, target: str, **fields: object) -> TaskRecord:
        """A :class:`TaskRecord` of this task (name and kind filled in)."""
        return TaskRecord(
            task=self.name, kind=self.kind, split=split, prompt=prompt, target=target, **fields
        )


class UserTaskBuilder(TaskBuilder):
    """A task with one record per leave-one-out example of a user (a *user-based* split, see the
    module docstring). The loop over splits and the cap (in :meth:`TaskContext.user_examples`) live
    here; a task writes one example's record in :meth:`example_fields`."""

    # the fewest earlier interactions a train target needs; every_user: full-ranking tasks
    # evaluated on every user (see :meth:`TaskContext.user_examples`)
    min_history: ClassVar[int] = 1
    every_user: ClassVar[bool] = False

    def examples_where(self, ctx: TaskContext) -> np.ndarray | None:
        """A mask over ``ctx.interactions`` rows a target may come from (None: every row)."""
        return None

    @abstractmethod
    def example_fields(self, ctx: TaskContext, example: UserExample, rng: Generator) -> Fields:
        """The record's fields for one example; ``user_id`` and ``item_id`` (the target) are
        filled in."""

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        where = self.examples_where(ctx)
        records = []
        for split in SPLITS:
            examples = ctx.user_examples(
                rng, split, min_history=self.min_history, where=where, every_user=self.every_user
            )
            for example in examples:
                fields = self.example_fields(ctx, example, rng)
                records.append(
                    self.record(split, user_id=example.user_id, item_id=example.target_id, **fields)
                )
        return records


class ItemTaskBuilder(TaskBuilder):
    """A task with at most one record per item of ``ctx.item_pool`` (an *item-level* split by a
    seeded hash of the item, see the module docstring). The loop and the cap live here; a task
    writes one item's record in :meth:`item_fields`."""

    @abstractmethod
    def item_fields(self, ctx: TaskContext, item: ItemInfo, rng: Generator) -> Fields | None:
        """The record's fields for one item (``item_id`` included), or None when the item makes
        no record."""

    def build(self, ctx: TaskContext) -> list[TaskRecord]:
        rng = ctx.rng(self.name)
        records = []
        for item_id in ctx.item_pool:
            fields = self.item_fields(ctx, ctx.items[item_id], rng)
            if fields is not None:
                records.append(self.record(ctx.item_split(f"item:{item_id}"), **fields))
        return ctx.cap_records(records, rng)


class ItemAttributeTaskBuilder(ItemTaskBuilder):
    """An item-level task made from one item's own text and categories (no user, no
    interaction): questions, queries and listings written from its real attributes."""

    needs = frozenset({SIGNAL_ITEM_TEXT, SIGNAL_ITEM_CATEGORIES})
