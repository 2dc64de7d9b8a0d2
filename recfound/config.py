"""params.yaml → one validated, typed config.

The file is parsed once, at the edge (the CLI or a Kubeflow component); library functions take
plain typed values. Every mistake a user can make in the file — an unknown key, a wrong type,
a value out of range, a task name that does not exist — raises :class:`ConfigError` whose
message names the key, the value given and what is allowed.
"""

from __future__ import annotations

import itertools
import os
import posixpath
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from recfound.errors import UserInputError

EMBEDDING_TASKS: tuple[str, ...] = ("user2item", "query2item", "item2item")
GENERATIVE_TASKS: tuple[str, ...] = (
    # RecFound's generative subtasks
    "query_rewriting",
    "sequential_recommendation",
    "product_relation_prediction",
    "sentiment_analysis",
    "attribute_value_extraction",
    "product_matching",
    "user_profile",
    "item_profile",
    "answerability_prediction",
    "answer_generation",
    # M6-Rec's task families
    "rating_prediction",
    "ctr_prediction",
    "candidate_ranking",
    "explanation_generation",
    "conversational_rec",
    "zero_shot",
)
ALL_TASKS: tuple[str, ...] = EMBEDDING_TASKS + GENERATIVE_TASKS
SOURCES: tuple[str, ...] = ("ml-100k", "recbole_atomic", "amazon_jsonl")


def _known_task(task: str) -> None:
    """A setting keyed by task names one of :data:`ALL_TASKS`."""
    if task not in ALL_TASKS:
        raise ValueError(f"unknown task {task!r}; allowed: {', '.join(ALL_TASKS)}")


class ConfigError(UserInputError):
    """A value in params.yaml is wrong; the message says which key and what is allowed."""


class _Section(BaseModel):
    # allow_inf_nan=False: ``.nan`` / ``.inf`` in a float setting is refused, naming the key
    # (a check like ``gt=0`` alone lets ``.inf`` through)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Section):
    """Where the interactions come from and how they are filtered."""

    source: Literal["ml-100k", "recbole_atomic", "amazon_jsonl"] = "ml-100k"
    path: str | None = Field(
        default=None,
        description="Folder of the user's data: RecBole atomic files or Amazon JSONL files.",
    )
    dataset_name: str | None = Field(
        default=None,
        description="File stem of RecBole atomic files (NAME.inter, NAME.item, NAME.user).",
    )
    rating_min: float = Field(default=1.0, description="Smallest valid rating of the source.")
    rating_max: float = Field(default=5.0, description="Largest valid rating of the source.")
    rating_threshold: float = Field(
        default=4.0, description="A rating at or above this counts as a like (implicit feedback)."
    )
    timestamps: bool = Field(
        default=True,
        description="The source declares event times (recbole_atomic: a 'timestamp' field is "
        "required); false orders each user's events by file order.",
    )
    min_user_interactions: int = Field(default=5, ge=3, description="k-core: users with fewer go.")
    min_item_interactions: int = Field(default=1, ge=1, description="k-core: items with fewer go.")
    max_users: int | None = Field(
        default=None, ge=10, description="Keep only the first N users (by id) — for tiny runs."
    )
    max_field_chars: int = Field(
        default=1000,
        ge=16,
        description="Longest text field ingest keeps (titles, descriptions, categories, "
        "reviews, user attributes); a longer one is cut to this many characters, ending in '…', "
        "and counted in the validation report. 1000 keeps every MovieLens-100K field whole.",
    )

    @model_validator(mode="after")
    def _path_for_user_sources(self) -> DataConfig:
        if not self.rating_min < self.rating_max:
            raise ValueError(
                f"data.rating_min ({self.rating_min}) must be below data.rating_max "
                f"({self.rating_max})"
            )
        if not self.rating_min <= self.rating_threshold <= self.rating_max:
            raise ValueError(
                f"data.rating_threshold ({self.rating_threshold}) must lie in "
                f"[{self.rating_min}, {self.rating_max}]"
            )
        if self.source != "ml-100k" and not self.path:
            raise ValueError(
                f"data.path is required when data.source is {self.source!r} "
                "(a folder with the source files)"
            )
        return self


class TasksConfig(_Section):
    """Which tasks are built and how large they are."""

    enabled: list[str] = Field(default_factory=lambda: list(ALL_TASKS))
    history_length: int = Field(default=10, ge=1, le=200)
    sequence_length: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Items a next-item prompt shows as identifier tokens (behaviour as text).",
    )
    num_candidates: int = Field(default=20, ge=2, le=1000)
    max_train_per_task: int = Field(default=2000, ge=1)
    next_item_train_positions: int = Field(
        default=8,
        ge=1,
        description="Next-item tasks train on each user's last N training interactions (long "
        "histories, like the evaluated targets').",
    )
    max_train_next_item: int = Field(
        default=8000,
        ge=1,
        description="Training records of the next-item tasks (user2item, "
        "sequential_recommendation): one per training interaction, up to this many.",
    )
    max_eval_per_task: int = Field(default=200, ge=1)
    queries_per_train_item: int = Field(
        default=1,
        ge=1,
        le=20,
        description="query2item: distinct search queries written for each training item (its "
        "categories and year phrased differently); validation and test items keep one.",
    )
    cold_item_fraction: float = Field(
        default=0.02,
        ge=0.0,
        lt=0.5,
        description="Share of items held out of every training input for the zero_shot task.",
    )

    item_ids: Literal["atomic", "semantic"] = Field(
        default="atomic",
        description="How items are named in prompts and answers: 'atomic' (one new token per "
        "item, <item_ID>) or 'semantic' (a few tokens per item from residual k-means of "
        "collaborative item vectors, plus a suffix where codes collide; "
        "recfound/data/semantic_ids.py): codebook rows instead of one row per item.",
    )
    semantic_levels: int = Field(
        default=2, ge=1, le=8, description="item_ids: semantic: residual k-means levels."
    )
    semantic_codebook_size: int = Field(
        default=32,
        ge=2,
        le=4096,
        description="item_ids: semantic: centroids (tokens) per level.",
    )

    @field_validator("enabled")
    @classmethod
    def _known_tasks(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in ALL_TASKS]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; allowed: {', '.join(ALL_TASKS)}")
        if not value:
            raise ValueError("at least one task must be enabled")
        if len(set(value)) != len(value):
            raise ValueError("a task is listed twice")
        return value


class BuiltinBackboneConfig(_Section):
    """The small Llama-style backbone built when ``model.backbone`` is ``builtin``."""

    hidden_size: int = Field(default=128, ge=16, le=8192)
    num_layers: int = Field(default=3, ge=1, le=128)
    num_heads: int = Field(default=4, ge=1, le=128)
    intermediate_size: int = Field(default=344, ge=16)
    max_length: int = Field(default=256, ge=16, le=32768, description="Context length in tokens.")
    vocab_size: int = Field(default=4000, ge=300, le=256000, description="BPE vocabulary size.")
    attention_dropout: float = Field(
        default=0.1, ge=0.0, lt=1.0, description="Dropout on attention weights while training."
    )
    share_layers: int = Field(
        default=1,
        ge=1,
        description="ALBERT-style cross-layer sharing: consecutive layers per group of shared "
        "weights (1: no sharing; num_layers: one layer's weights for all).",
    )

    @model_validator(mode="after")
    def _share_at_most_all_layers(self) -> BuiltinBackboneConfig:
        if self.share_layers > self.num_layers:
            raise ValueError(
                f"model.builtin.share_layers ({self.share_layers}) must be at most "
                f"model.builtin.num_layers ({self.num_layers})"
            )
        return self

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> BuiltinBackboneConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"model.builtin.hidden_size ({self.hidden_size}) must be divisible by "
                f"model.builtin.num_heads ({self.num_heads})"
            )
        return self


class TMoLEParams(_Section):
    """Task-wise Mixture of Low-rank Experts: expert groups, rank and gating.

    The adapter's own settings; :class:`~recfound.model.tmole.TMoLEConfig` adds the task list and
    the targeted layers to them. Experts are ordered
    ``[embedding-only | shared | generative-only]``.
    """

    rank: int = Field(default=8, ge=1, le=1024)
    """Rank r of each expert (each expert adds ``r * (in + out)`` weights per layer)."""
    alpha: float = Field(default=16.0, gt=0)
    """LoRA alpha: the low-rank update is scaled by ``alpha / rank``."""
    num_embedding_experts: int = Field(default=2, ge=0, le=64)
    """Experts only embedding tasks route to."""
    num_shared_experts: int = Field(default=2, ge=0, le=64)
    """Experts every task may route to (may be 0)."""
    num_generative_experts: int = Field(default=2, ge=0, le=64)
    """Experts only generative tasks route to."""
    task_embedding_dim: int = Field(default=32, ge=1, le=4096)
    """Width of the learned per-task vector that every layer's router reads."""
    top_k: int | None = Field(default=None, ge=1)
    """Keep only the ``top_k`` largest router logits per task (``None``: all usable experts)."""
    gate_temperature: float = Field(default=1.0, gt=0)
    """Router logits are divided by this before the softmax (lower = sharper gates)."""
    dropout: float = Field(default=0.0, ge=0, lt=1)
    """Dropout on the adapter's input (training only), like peft's ``lora_dropout``."""

    @model_validator(mode="after")
    def _each_kind_has_experts(self) -> TMoLEParams:
        if self.num_embedding_experts + self.num_shared_experts == 0:
            raise ValueError(
                "embedding tasks have no expert: set num_embedding_experts or "
                "num_shared_experts above 0"
            )
        if self.num_generative_experts + self.num_shared_experts == 0:
            raise ValueError(
                "generative tasks have no expert: set num_generative_experts or "
                "num_shared_experts above 0"
            )
        return self


class LoRAParams(_Section):
    """Plain LoRA through peft: the ablation baseline."""

    rank: int = Field(default=16, ge=1, le=4096)
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)


class OptionParams(_Section):
    """M6-Rec's option tuning: per-task trainable options on a frozen backbone.

    The adapter's own settings; :class:`~recfound.model.option.OptionConfig` adds the task list.
    """

    prompt_length: int = Field(default=6, ge=1, le=512, description="Options per task.")
    """P: option vectors per task in front of every sequence."""
    deep: bool = Field(default=False, description="Options at every decoder layer's input.")
    """Re-insert a layer's own options at the input of every decoder layer (P-tuning v2)."""
    adapter_rank: int = Field(
        default=0, ge=0, le=1024, description="Rank of per-task small adapters (0: none)."
    )
    """Rank r of the per-task low-rank adapters (0: options only)."""
    adapter_alpha: float = Field(default=2.0, gt=0)
    """The adapters' update is scaled by ``adapter_alpha / adapter_rank``."""
    adapter_modules: list[str] = Field(default_factory=lambda: ["down_proj"], min_length=1)
    """Name suffixes of the ``nn.Linear`` layers that get adapters (when ``adapter_rank > 0``)."""


class ModelConfig(_Section):
    """Backbone, adapter and the embedding / generation heads."""

    backbone: str = Field(
        default="builtin",
        description="'builtin' or the path of a local Hugging Face causal-LM checkpoint directory.",
    )
    builtin: BuiltinBackboneConfig = Field(default_factory=BuiltinBackboneConfig)
    adapter: Literal["tmole", "lora", "option"] = "tmole"
    target_modules: list[str] = Field(
        default_factory=lambda: ["auto"],
        min_length=1,
        description="'auto' (the backbone family's projections: recfound/model/families.py; "
        "the builtin Llama's q/k/v/o/gate/up/down_proj) or the name suffixes of the layers to "
        "adapt.",
    )
    tmole: TMoLEParams = Field(default_factory=TMoLEParams)
    lora: LoRAParams = Field(default_factory=LoRAParams)
    option: OptionParams = Field(default_factory=OptionParams)
    pooling: Literal["mean", "last"] = "mean"
    embedding_attention: Literal["bidirectional", "causal"] = "bidirectional"
    infonce_temperature: float = Field(default=0.05, gt=0, le=10)
    max_length: int = Field(default=256, ge=16, description="Longest prompt+answer in tokens.")

    @field_validator("target_modules", mode="before")
    @classmethod
    def _auto_alone(cls, value: object) -> object:
        """``target_modules: auto`` (a bare string) is the list ``["auto"]``."""
        return [value] if value == "auto" else value


class PretrainConfig(_Section):
    """Causal-LM pretraining of the backbone on the corpus text and users' behaviour."""

    steps: int = Field(default=300, ge=1)
    batch_size: int = Field(default=16, ge=1)
    seq_len: int = Field(default=128, ge=8)
    learning_rate: float = Field(default=2e-3, gt=0, lt=1)
    warmup_steps: int = Field(default=30, ge=0)
    weight_decay: float = Field(default=0.01, ge=0)
    heldout_fraction: float = Field(default=0.05, gt=0, lt=0.5)
    eval_every: int = Field(default=50, ge=1)
    max_corpus_texts: int = Field(default=50000, ge=100)
    task_answers: bool = Field(
        default=True,
        description="Pretraining text holds each train prompt followed by its answer (false: "
        "the prompt alone).",
    )
    behaviour_fraction: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Share of each batch drawn from behaviour sequences (the rest is text).",
    )
    window_stride: int = Field(
        default=5,
        ge=1,
        description="Items between the starts of two behaviour windows of one user (a small "
        "stride shows every item with many different contexts).",
    )
    keep_best: bool = Field(
        default=True,
        description="Keep the weights with the best next-item NDCG@10 on validation users "
        "(early stopping; the test split is never looked at).",
    )
    trainable: Literal["auto", "identifiers", "adapter", "full"] = Field(
        default="auto",
        description="What pretraining trains: 'identifiers' (the item-identifier embedding rows "
        "only, backbone frozen), 'adapter' (those rows and a LoRA of rank adapter_rank, merged "
        "afterwards) or 'full' (every weight); 'auto': full for the builtin backbone, "
        "identifiers for a user's checkpoint.",
    )
    adapter_rank: int = Field(default=16, ge=1, description="LoRA rank of trainable: adapter.")
    gradient_checkpointing: bool = Field(
        default=False,
        description="Recompute each layer's activations in the backward pass (less memory, "
        "about a third more compute).",
    )
    bf16: bool = Field(
        default=True, description="bf16 autocast and fused AdamW on GPUs; ignored on CPUs."
    )


class S2SchedConfig(_Section):
    """Constants of S2Sched (see recfound/train/s2sched.py)."""

    warmup_steps: int = Field(default=20, ge=0, description="Steps before the first reweighting.")
    update_every: int = Field(default=10, ge=1, description="k: steps between reweightings.")
    window: int = Field(default=4, ge=2, description="Validation reports per slope fit.")
    slope_history: int = Field(default=5, ge=1, description="Slopes kept for ACS and DF.")
    tau: float = Field(default=5.0, gt=0, description="Temperature of the divergence factor.")
    floor: float = Field(default=0.02, ge=0, lt=0.5, description="Smallest task probability.")
    ema: float = Field(default=0.5, ge=0, lt=1, description="Weight of the previous weights.")


class TrainConfig(_Section):
    """Multi-task adapter training."""

    steps: int = Field(default=200, ge=1)
    batch_size: int = Field(default=16, ge=1, description="Generative samples per step.")
    embedding_batch_size: int = Field(
        default=32, ge=0, description="Embedding samples per step, in blocks of one task each."
    )
    samples_per_task: int = Field(
        default=16, ge=2, description="Samples per embedding block (in-batch negatives)."
    )
    catalogue_negatives: int = Field(
        default=64,
        ge=0,
        description="Random catalogue items embedded as extra negatives of each embedding block.",
    )
    negatives_grad: bool = Field(
        default=False,
        description="Backpropagate through the catalogue negatives (false: they are embedded "
        "with the current weights but without gradients, about a third of their cost).",
    )
    answer_loss: Literal["token", "sample"] = Field(
        default="token",
        description="How the generative answers' cross-entropy is averaged: token: over every "
        "answer token of the step (a 48-token profile weighs 24 times a yes/no label); sample: "
        "each sample's mean over its own answer tokens, averaged over the step's samples.",
    )
    closed_set_weight: float = Field(
        default=1.0,
        ge=0,
        description="Weight of the softmax over each closed-set sample's candidates (labels, "
        "listed items) added to the answer-token loss.",
    )
    length_groups: int = Field(
        default=3,
        ge=1,
        le=16,
        description="Forward passes a step's generative batch is split into, rows of similar "
        "length together, each cut to its longest row: the same loss with less work on "
        "padding (1: one padded pass).",
    )
    grad_accum: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0, lt=1)
    warmup_steps: int = Field(default=20, ge=0)
    weight_decay: float = Field(default=0.0, ge=0)
    eval_every: int = Field(default=20, ge=1)
    val_batch_size: int = Field(default=16, ge=2)
    checkpoint_every: int = Field(default=50, ge=1)
    strategy: Literal["s2sched", "uniform", "proportional"] = "s2sched"
    s2sched: S2SchedConfig = Field(default_factory=S2SchedConfig)
    task_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Task -> multiplier of its share of its group's samples (S2Sched and "
        "proportional: its share of the data; uniform: its equal share); unnamed tasks 1.",
    )
    bf16: bool = Field(
        default=True, description="bf16 autocast on GPUs (mixed precision); ignored on CPUs."
    )
    bf16_weights: bool = Field(
        default=False,
        description="Keep the frozen backbone's weights in bf16 on GPUs (half their memory and "
        "no per-step cast); the trained adapter and its AdamW state stay fp32. Ignored on CPUs.",
    )
    compile: bool = Field(
        default=False,
        description="torch.compile the forward module (the decoder and its adapters): faster "
        "steps on GPUs after a warm-up that compiles each new batch shape.",
    )

    @field_validator("task_weights")
    @classmethod
    def _weights_of_known_tasks(cls, value: dict[str, float]) -> dict[str, float]:
        for task, weight in value.items():
            _known_task(task)
            if weight <= 0:  # inf and nan never get here (allow_inf_nan=False)
                raise ValueError(f"{task}'s weight must be a positive number, got {weight}")
        return value

    @model_validator(mode="after")
    def _blocks_fill_the_batch(self) -> TrainConfig:
        if self.embedding_batch_size % self.samples_per_task:
            raise ValueError(
                f"train.embedding_batch_size ({self.embedding_batch_size}) must be a multiple of "
                f"train.samples_per_task ({self.samples_per_task})"
            )
        return self


class MergeConfig(_Section):
    """Merge of the kept training checkpoints, with an Optuna study over method and coefficients."""

    checkpoints: list[Literal["best_generative", "best_embedding", "last"]] = Field(
        default_factory=lambda: ["best_generative", "best_embedding", "last"],
        min_length=2,
        description="Training checkpoints to merge (SLERP uses the first two).",
    )
    methods: list[Literal["linear", "slerp", "ties"]] = Field(
        default_factory=lambda: ["linear", "slerp", "ties"], min_length=1
    )
    trials: int = Field(default=12, ge=1, description="Optuna trials (TPE sampler, seeded).")
    max_per_task: int = Field(
        default=32,
        ge=4,
        description="Validation records per task in each slice: the merge is selected on one "
        "and reported on the other.",
    )
    density_min: float = Field(default=0.2, gt=0, le=1, description="Lowest TIES density tried.")

    @field_validator("checkpoints", "methods")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError(f"entries must be unique, got {values}")
        return values


class SASRecConfig(_Section):
    """SASRec, the sequential baseline (full softmax CE, early stopping on validation NDCG)."""

    hidden_size: int = Field(default=64, ge=8, le=1024)
    num_layers: int = Field(default=2, ge=1, le=12)
    num_heads: int = Field(default=2, ge=1, le=16)
    inner_size: int = Field(default=256, ge=8, le=8192, description="Feed-forward width.")
    max_len: int = Field(default=50, ge=2, le=1000, description="Most recent items read.")
    dropout: float = Field(default=0.2, ge=0, lt=1)
    learning_rate: float = Field(default=2e-3, gt=0, lt=1)
    batch_size: int = Field(default=128, ge=1)
    max_epochs: int = Field(default=200, ge=1)
    patience: int = Field(
        default=10, ge=1, description="Epochs without a better validation NDCG before stopping."
    )
    valid_k: int = Field(default=10, ge=1, description="K of the validation NDCG@K / Recall@K.")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> SASRecConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"baselines.sasrec.hidden_size ({self.hidden_size}) must be divisible by "
                f"baselines.sasrec.num_heads ({self.num_heads})"
            )
        return self


class BiasedMFConfig(_Section):
    """Biased matrix factorisation, the rating baseline (early stopping on validation RMSE)."""

    factors: int = Field(default=32, ge=1, le=1024)
    l2: float = Field(default=0.1, ge=0, le=10, description="L2 penalty on biases and factors.")
    learning_rate: float = Field(default=0.005, gt=0, lt=1)
    batch_size: int = Field(default=1024, ge=1)
    max_epochs: int = Field(default=100, ge=1)
    patience: int = Field(
        default=5, ge=1, description="Epochs without a lower validation RMSE before stopping."
    )


class BaselinesConfig(_Section):
    """The learned baselines, trained once per data version (stage `baselines`)."""

    threads: int = Field(
        default=1,
        ge=1,
        le=256,
        description="CPU threads of torch while training (small models: 1 is fastest on a "
        "shared machine).",
    )
    sasrec: SASRecConfig = Field(default_factory=SASRecConfig)
    mf: BiasedMFConfig = Field(default_factory=BiasedMFConfig)


class EvaluateConfig(_Section):
    """Test-split evaluation of the merged model and the baselines."""

    max_per_task: int = Field(
        default=200,
        ge=1,
        description="Test records per task that needs generation or per-candidate scoring "
        "(full-ranking tasks are evaluated on every record).",
    )
    ks: list[int] = Field(default_factory=lambda: [1, 5, 10, 20], min_length=1)
    max_new_tokens: int = Field(
        default=64,
        ge=1,
        le=256,
        description="Cap on generated tokens; each task generates as many as its longest "
        "training answers need (95th percentile).",
    )
    batch_size: int = Field(default=32, ge=1)
    fusion: dict[str, str] = Field(
        default_factory=dict,
        description="Full-ranking tasks ranked by two signals fused (z-scores added): a "
        "retrieval task → 'bm25' (hybrid retrieval), a next-item task → an embedding task "
        "(identifier log-probabilities + that task's embedding of the same user). The single "
        "path is reported beside the fused one.",
    )

    @field_validator("fusion")
    @classmethod
    def _fusable(cls, value: dict[str, str]) -> dict[str, str]:
        for task, partner in value.items():
            _known_task(task)
            if partner != "bm25" and partner not in EMBEDDING_TASKS:
                raise ValueError(
                    f"{task} is fused with {partner!r}; allowed: bm25 (retrieval tasks) or an "
                    f"embedding task ({', '.join(EMBEDDING_TASKS)})"
                )
        return value

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, values: list[int]) -> list[int]:
        if any(k < 1 for k in values):
            raise ValueError(f"every K must be >= 1, got {values}")
        return sorted(set(values))


class RegistryConfig(_Section):
    """MLflow model registry: the registered name and the promotion gates."""

    model_name: str = Field(default="recfound", min_length=1)

    @field_validator("model_name")
    @classmethod
    def _registrable_name(cls, value: str) -> str:
        """The name the MLflow registry accepts (its own check, ``_validate_model_name``, runs only
        when the first version is created, after evaluate): no ``/`` or ``:``, and a name that
        stays itself as a file path (no ``..``, ``./``, ``//``, leading or trailing ``/``)."""
        if not value.strip():
            raise ValueError("the registered model's name must not be blank")
        bad = [c for c in ("/", ":") if c in value]
        if bad:
            raise ValueError(
                f"an MLflow registered model name cannot contain {' or '.join(map(repr, bad))}; "
                "use e.g. 'team-recfound' or 'team_recfound'"
            )
        normal = posixpath.normpath(value)
        if normal != value or normal == "." or normal.startswith(".."):
            raise ValueError(
                "an MLflow registered model name must not change when read as a file path "
                f"(this one reads as {normal!r}); use letters, digits, '-', '_' or '.'"
            )
        return value

    primary_metric: Literal["mean_score", "embedding_score", "generative_score"] = Field(
        default="mean_score", description="Overall score (from reports/metrics.json) to beat."
    )
    max_regression: float = Field(
        default=0.02, ge=0, le=1, description="Largest allowed drop of any task's score."
    )
    min_improvement: float = Field(
        default=0.0, ge=0, description="The primary metric must beat the champion by this much."
    )


class ServingConfig(_Section):
    """The registered model's serving: folded weights and request limits (beyond: HTTP 400)."""

    folded: bool = Field(
        default=True,
        description="Answer each task with its folded weights (false: through the adapter).",
    )
    max_rows: int = Field(default=64, ge=1, description="Rows in one request.")
    max_input_chars: int = Field(
        default=4000, ge=1, description="Characters of one row's input, and of one candidate."
    )
    max_candidates: int = Field(default=100, ge=1, description="Candidates of one row.")
    max_new_tokens: int = Field(
        default=128, ge=1, description="Largest max_new_tokens a request may ask for."
    )
    max_request_chars: int = Field(
        default=1_000_000,
        ge=1,
        description="Total work of one request: characters the model reads (each row's input "
        "once per candidate, or once without candidates, plus the candidates).",
    )
    max_k: int = Field(default=100, ge=1, description="Largest k a recommend request may ask for.")
    default_k: int = Field(default=10, ge=1, description="k of a recommend request without one.")
    max_history: int = Field(
        default=2000, ge=1, description="Items in a recommend request's history, and in exclude."
    )
    recommend_path: Literal["generative", "embedding", "fused"] = Field(
        default="generative", description="Path of a recommend request that names none."
    )
    fuse_depth: int = Field(
        default=200, ge=1, description="Items of each path that reciprocal-rank fusion reads."
    )
    index_kind: Literal["auto", "flat", "ivf"] = Field(
        default="auto",
        description="Catalogue ANN index: auto = exact (flat) below index_exact_below items, "
        "IVF above.",
    )
    index_exact_below: int = Field(default=50_000, ge=1)
    index_nprobe: int = Field(default=32, ge=1, description="IVF lists scanned per query.")

    @model_validator(mode="after")
    def _default_k_within_max(self) -> ServingConfig:
        if self.default_k > self.max_k:
            raise ValueError(
                f"serving.default_k ({self.default_k}) must be at most serving.max_k ({self.max_k})"
            )
        return self


class RecommendConfig(_Section):
    """The batch ``recommend`` stage: every user's top-k, written to paths.recommendations."""

    k: int = Field(default=10, ge=1, le=1000, description="Items per user.")
    paths: list[Literal["generative", "embedding", "fused"]] = Field(
        default_factory=lambda: ["generative", "embedding", "fused"],
        description="Paths whose lists are written (each user gets one list per path).",
    )
    batch_size: int = Field(default=64, ge=1, description="Users per model call.")


class TrackingConfig(_Section):
    """MLflow: the embedded default store unless MLFLOW_TRACKING_URI points elsewhere."""

    tracking_uri: str = "sqlite:///mlflow.db"
    artifact_location: str = "mlartifacts"
    experiment: str = "recfound"


class PathsConfig(_Section):
    """Where each stage writes (relative to the working directory)."""

    interim: str = "data/interim"
    tasks: str = "data/tasks"
    backbone: str = "models/backbone"
    train: str = "models/train"
    merged: str = "models/merged"
    baselines: str = "models/baselines"
    reports: str = "reports"
    recommendations: str = "data/recommendations"

    @model_validator(mode="after")
    def _no_overlap(self) -> PathsConfig:
        """Two stages never write into the same folder: a path equal to or inside another is
        refused (``paths.tasks: data/interim`` would make build-tasks replace ingest's tables)."""
        resolved = {
            name: Path(os.path.normpath(Path(value).expanduser().absolute()))
            for name, value in self.model_dump().items()
        }
        for (a, path_a), (b, path_b) in itertools.combinations(resolved.items(), 2):
            if path_a == path_b:
                raise ValueError(
                    f"paths.{a} and paths.{b} are the same folder ({getattr(self, a)!r}); each "
                    "stage needs a folder of its own"
                )
            inner, outer = (a, b) if path_a.is_relative_to(path_b) else (b, a)
            if resolved[inner].is_relative_to(resolved[outer]):
                raise ValueError(
                    f"paths.{inner} ({getattr(self, inner)!r}) lies inside paths.{outer} "
                    f"({getattr(self, outer)!r}); a stage replacing one would destroy the other. "
                    "Give each a folder of its own"
                )
        return self


SEED_MAX = 2**32 - 1  # numpy's seeds are 32-bit


class AblationConfig(_Section):
    """The ablation table (`recfound ablate`, outside the default pipeline)."""

    extra_seeds: list[int] = Field(
        default_factory=lambda: [1, 2],
        description="Seeds the full method (train + merge) and without_all are trained again "
        "with, beside the main seed: the table gives the spread across seeds.",
    )

    @field_validator("extra_seeds")
    @classmethod
    def _distinct(cls, values: list[int]) -> list[int]:
        if len(set(values)) != len(values) or any(v < 0 for v in values):
            raise ValueError(f"seeds must be distinct non-negative integers, got {values}")
        return values


_CPU_AMOUNT = r"^([0-9]*[.])?[0-9]+m?$"
_MEMORY_AMOUNT = r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"


class ClusterConfig(_Section):
    """What the Kubeflow pipeline's steps request from the cluster (the pipeline's resource
    parameters default to these; ``dvc repro`` ignores them)."""

    gpu_type: str = Field(
        default="nvidia.com/gpu",
        min_length=1,
        description="Accelerator type of the train step: the extended resource the GPU device "
        "plugin exposes.",
    )
    train_gpus: int = Field(
        default=1, ge=1, description="GPUs of the train pod (accelerate: one process per GPU)."
    )
    train_cpu: str = Field(default="8", pattern=_CPU_AMOUNT, description="CPU of the train pod.")
    train_memory: str = Field(
        default="32G", pattern=_MEMORY_AMOUNT, description="Memory of the train pod."
    )
    step_cpu: str = Field(default="2", pattern=_CPU_AMOUNT, description="CPU of each other step.")
    step_memory: str = Field(
        default="8G", pattern=_MEMORY_AMOUNT, description="Memory of each other step."
    )


class Config(_Section):
    """The whole of params.yaml."""

    seed: int = Field(default=42, ge=0, le=SEED_MAX, description="Seed of every random choice.")
    data: DataConfig = Field(default_factory=DataConfig)
    tasks: TasksConfig = Field(default_factory=TasksConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    serving: ServingConfig = Field(default_factory=ServingConfig)
    recommend: RecommendConfig = Field(default_factory=RecommendConfig)
    ablation: AblationConfig = Field(default_factory=AblationConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    paths: PathsConfig = Field(default_factory=PathsConfig)

    @model_validator(mode="after")
    def _weights_of_enabled_tasks(self) -> Config:
        idle = [t for t in self.train.task_weights if t not in self.tasks.enabled]
        if idle:
            raise ValueError(
                f"train.task_weights names {', '.join(idle)}, which tasks.enabled does not list"
            )
        return self


def dotted(settings: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings → ``{"model.tmole.rank": 8, ...}``: every leaf under its dotted key."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(dotted(value, name))
        else:
            out[name] = value
    return out


def describe_error(error: dict[str, Any]) -> str:
    """One line for one pydantic error: the key, the value given and what is allowed."""
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key (value {error['input']!r}); check the spelling"
    if kind == "literal_error":
        allowed = error.get("ctx", {}).get("expected", "")
        return f"{key}: {error['input']!r} is not allowed; allowed: {allowed}"
    message = error["msg"].removeprefix("Value error, ")
    if isinstance(error["input"], dict):  # a whole section: the message names the keys
        return f"{key}: {message}"
    return f"{key}: {message} (got {error['input']!r})"


def parse_config(raw: dict[str, Any] | None, origin: str = "params.yaml") -> Config:
    """Validate a mapping (as loaded from YAML) into a :class:`Config`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{origin}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        lines = [describe_error(e) for e in exc.errors()]
        known = _known_keys_hint(lines)
        raise ConfigError(f"{origin} is invalid:\n  - " + "\n  - ".join(lines) + known) from None


def _known_keys_hint(lines: list[str]) -> str:
    if not any("unknown key" in line for line in lines):
        return ""
    sections = {
        name: sorted(field.annotation.model_fields)  # type: ignore[union-attr]
        for name, field in Config.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
    }
    known = "; ".join(f"{s}: {', '.join(keys)}" for s, keys in sections.items())
    return f"\nKnown keys — top level: {', '.join(Config.model_fields)}; {known}"


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read and validate params.yaml; a missing or unparsable file is a :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if raw is None:
        raise ConfigError(
            f"{path} is empty; it must name every section (copy the repository's params.yaml, "
            "whose values are the defaults)"
        )
    if isinstance(raw, dict):
        require_sections(raw, origin=str(path))
    return parse_config(raw, origin=str(path))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (plain
    YAML keeps the last value silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} on line {line} (first given on line {seen[key]}); "
                    "keep one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def require_sections(raw: dict[str, Any], origin: str = "params.yaml") -> None:
    """A params file names every section: a missing one is an error, not silent defaults.

    (:func:`parse_config` alone accepts partial mappings, e.g. pipeline overrides.)
    """
    missing = [
        name
        for name, field in Config.model_fields.items()
        if isinstance(field.annotation, type)
        and issubclass(field.annotation, BaseModel)
        and name not in raw
    ]
    if missing:
        raise ConfigError(
            f"{origin} lacks section(s) {', '.join(missing)}; every section must be present "
            "(copy it from the repository's params.yaml, whose values are the defaults)"
        )
