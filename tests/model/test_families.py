"""Every supported Hugging Face family, from a tiny random checkpoint written with save_pretrained.

Per family (fast, every family): item identifiers added, TMoLE / LoRA / option tuning placed on
the family's own projections (``target_modules: auto``: GPT-2's Conv1D, Phi-3's and GPT-NeoX's
fused projections), one training step moves only the adapter, each adapter's folded model equals
the unfolded one, and late interaction / early exit / the device export either reproduce the
model (Llama, Mistral, Qwen2, Qwen3) or refuse by name.

The whole chain (pretrain with identifiers → train TMoLE → merge → evaluate → register → one
served request per kind, the served folded model equal to the unfolded one → late interaction,
early exit and the device export on the merged model, or their named refusal) runs for every
family (``slow``); the data stages run once for the module, so a family costs its model stages.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch

from recfound.config import LoRAParams, OptionParams, load_config
from recfound.inference.decoder import DecoderSteps, UnsupportedModelError
from recfound.inference.early_exit import intermediate_layers
from recfound.inference.late_interaction import LateInteractionScorer
from recfound.model.backbone import add_item_tokens, load_backbone, train_bpe_tokenizer
from recfound.model.build import AdapterSpec, build_rec_model
from recfound.model.families import FAMILIES as FAMILY_TABLE
from recfound.model.families import layer_by_layer_families, resolve_target_modules
from recfound.model.folded import fold_rec_model
from recfound.model.tmole import TMoLELinear
from tests.conftest import write_ml100k_slice, write_tiny_params
from tests.model.tiny_families import FAMILIES, tiny_checkpoint
from tests.train import tiny

ITEMS = ["<item_1>", "<item_2>", "<item_3>"]


@pytest.fixture(scope="module")
def tasks():
    return tiny.tiny_tasks(n_train=40, n_valid=6)


@pytest.fixture(scope="module")
def tokenizer(tasks):
    texts = [str(t) for task in tasks for t in pd.concat([task.train.prompt, task.train.target])]
    return train_bpe_tokenizer(texts, 500)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {family: tiny_checkpoint(family, tokenizer, root / family) for family in FAMILIES}


def _adapters(base) -> dict[str, AdapterSpec]:
    targets = resolve_target_modules(base, ["auto"])
    return {
        "tmole": AdapterSpec(tiny.ADAPTER.settings, ("auto",)),
        "lora": AdapterSpec(LoRAParams(rank=4, alpha=8.0), ("auto",)),
        "option": AdapterSpec(
            OptionParams(prompt_length=2, adapter_rank=2, adapter_modules=targets)
        ),
    }


def _close(a, b) -> None:
    a, b = torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32)
    scale = float(b.abs().max()) or 1.0
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5 * max(scale, 1.0))


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("kind", ["tmole", "lora", "option"])
def test_family_adapter_trains_and_folds(family, kind, checkpoints, tasks) -> None:
    base, tok = load_backbone(checkpoints[family])
    assert base.config.model_type == family
    add_item_tokens(base, tok, ITEMS)
    spec = _adapters(base)[kind]
    rec = build_rec_model(
        base, tok, spec, {t.name: t.kind for t in tasks}, seed=0, max_length=48, pooling="last"
    )
    if kind == "tmole":  # the family's every projection is wrapped, Conv1D and fused ones too
        wrapped = {
            n.rpartition(".")[2] for n, m in rec.model.named_modules() if isinstance(m, TMoLELinear)
        }
        assert wrapped == set(FAMILY_TABLE[family].target_modules)

    frozen = {n: p.clone() for n, p in rec.model.named_parameters() if not p.requires_grad}
    trainable = [p for p in rec.model.parameters() if p.requires_grad]
    before = [p.clone() for p in trainable]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    batch = tok(list(tasks[0].train.prompt[:4]), return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    with rec.adapter.task("genre"):
        loss = rec.model(**batch, labels=labels).loss
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(p, b) for p, b in zip(trainable, before, strict=True))
    assert all(torch.equal(p, frozen[n]) for n, p in rec.model.named_parameters() if n in frozen)

    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an adapter well away from zero, so folding has something to fold
        for p in trainable:
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    prompts = list(tasks[0].valid.prompt[:3])
    candidates = [["Comedy", "Drama, Action", ITEMS[0]]] * 3
    texts = list(tasks[2].valid.prompt[:3])
    for task, check in (("genre", "score"), ("match", "embed")):
        folded = fold_rec_model(rec, task)
        if check == "score":
            _close(folded.score(prompts, candidates, task), rec.score(prompts, candidates, task))
        else:
            _close(folded.embed(texts, task), rec.embed(texts, task))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_layer_by_layer_runs_the_family_or_refuses_by_name(family, checkpoints, tasks) -> None:
    base, tok = load_backbone(checkpoints[family])
    spec = AdapterSpec(tiny.ADAPTER.settings, ("auto",))
    rec = build_rec_model(base, tok, spec, {t.name: t.kind for t in tasks}, seed=0, max_length=48)
    folded = fold_rec_model(rec, "genre")
    if family not in layer_by_layer_families():
        for runner in (
            lambda: DecoderSteps(folded.model),
            lambda: LateInteractionScorer(folded),
            lambda: intermediate_layers(folded),
        ):
            with pytest.raises(UnsupportedModelError, match="llama, mistral, qwen2, qwen3"):
                runner()
        return
    steps = DecoderSteps(folded.model)
    batch = tok(list(tasks[0].valid.prompt[:3]), return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden, _ = steps.run(batch["input_ids"], batch["attention_mask"])
        mine = steps.logprobs(hidden)
        theirs = torch.log_softmax(folded.model(**batch).logits.float(), dim=-1)
    real = batch["attention_mask"].bool()
    _close(mine[real], theirs[real])
    prompts, candidates = list(tasks[0].valid.prompt[:2]), [["Comedy", "Drama"]] * 2
    late = LateInteractionScorer(folded).score(prompts, candidates)
    _close(late, folded.score(prompts, candidates, "genre"))


# The whole chain: the data stages once for the module (their output does not depend on the
# backbone); per family, its own backbone, model, report folders and registered model name in one
# MLflow store. 4 users keep the catalogue (every retrieval ranks all of it) near 400 items.
CHAIN_TASKS = ["user2item", "product_matching", "rating_prediction", "user_profile"]
CHAIN_SECTIONS = {
    "tasks": {"enabled": CHAIN_TASKS, "max_train_per_task": 24, "max_eval_per_task": 6},
    "pretrain": {"steps": 2, "eval_every": 2},
    # a learning rate that moves TMoLE's B (zero at the start) well away from zero in 2 steps
    "train": {"steps": 2, "eval_every": 1, "checkpoint_every": 1, "learning_rate": 0.02},
    "merge": {"checkpoints": ["best_generative", "last"], "trials": 1, "max_per_task": 4},
    "evaluate": {"max_per_task": 4, "max_new_tokens": 2, "ks": [1, 5]},
}
SERVED = [  # one request per kind: embedding, generative scoring, generation, recommend
    {"task": "user2item", "input": "Toy Story (1995)", "candidates": ["Heat (1995)", "Sabrina"]},
    {"task": "rating_prediction", "input": "Heat (1995)?", "candidates": ["1", "3", "5"]},
    {"task": "user_profile", "input": "Toy Story (1995): 5/5", "candidates": None},
    {"task": "recommend", "user_id": "1", "k": 3, "path": "embedding"},
]


@pytest.fixture(scope="module")
def chain_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ingest → validate → build_tasks of 4 ml-100k users, once: ``<root>/data/{interim,tasks}``."""
    from recfound.stages.build_tasks import run_build_tasks
    from recfound.stages.ingest import run_ingest
    from recfound.stages.validate import run_validate

    root = tmp_path_factory.mktemp("chain")
    raw = write_ml100k_slice(root / "raw", num_users=4)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)
        cfg = load_config(
            write_tiny_params(
                root / "params.yaml",
                data={"source": "recbole_atomic", "path": str(raw), "dataset_name": "mini"},
                tasks=CHAIN_SECTIONS["tasks"],
                paths=_chain_paths(root, root / "data"),
            )
        )
        run_ingest(cfg)
        run_validate(cfg)
        run_build_tasks(cfg)
    return root


def _chain_paths(root: Path, work: Path) -> dict[str, str]:
    """The data folders shared under ``root``; the model and report folders under ``work``."""
    return {
        "interim": str(root / "data" / "interim"),
        "tasks": str(root / "data" / "tasks"),
        **{
            name: str(work / name)
            for name in ("backbone", "train", "merged", "baselines", "reports", "recommendations")
        },
    }


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_runs_the_whole_chain(family, chain_root, tokenizer, monkeypatch) -> None:
    """pretrain (identifiers added and trained, backbone frozen) → train (TMoLE) → merge →
    evaluate → register → one served request per kind, the folded model answering as the
    unfolded one; then late interaction, early exit and the device export run the merged model
    (or refuse by name), on a user's checkpoint of each family."""
    from recfound.device.runtime import DeviceModel
    from recfound.inference.early_exit import NEVER, EarlyExitScorer, ExitHeads
    from recfound.model.bundle import load_bundle
    from recfound.serving.pyfunc import RecFoundModel
    from recfound.stages.evaluate import run_evaluate
    from recfound.stages.export import run_export
    from recfound.stages.merge import run_merge
    from recfound.stages.pretrain import run_pretrain
    from recfound.stages.register import run_register
    from recfound.stages.train import run_train

    work = chain_root / family
    store = f"sqlite:///{chain_root}/mlflow.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(chain_root)
    checkpoint = tiny_checkpoint(family, tokenizer, work / "my-llm")
    params = write_tiny_params(
        work / "params.yaml",
        **CHAIN_SECTIONS,
        data={"source": "recbole_atomic", "path": str(chain_root / "raw"), "dataset_name": "mini"},
        model={"backbone": str(checkpoint)},
        paths=_chain_paths(chain_root, work),
        registry={"model_name": f"recfound-{family}"},
        tracking={"tracking_uri": store, "artifact_location": str(chain_root / "mlartifacts")},
    )
    cfg = load_config(params)
    pretrained = run_pretrain(cfg)
    assert pretrained["trainable"] == "identifiers" and pretrained["item_tokens"] > 0
    base, _ = load_backbone(checkpoint)
    model, _ = load_backbone(cfg.paths.backbone)
    assert model.config.model_type == family
    old = base.get_input_embeddings().weight
    assert torch.equal(model.get_input_embeddings().weight[: len(old)], old)
    run_train(cfg)
    run_merge(cfg)
    metrics = run_evaluate(cfg)
    assert set(metrics["tasks"]) >= {"user2item", "rating_prediction", "user_profile"}
    report = run_register(cfg)
    assert report["alias"] == "champion"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    served = mlflow.pyfunc.load_model(f"models:/recfound-{family}@champion")
    out = served.predict(pd.DataFrame(SERVED), params={"max_new_tokens": 2})
    assert out["kind"].tolist() == ["embedding", "generative", "generative", "recommend"]
    assert out["output_type"].tolist() == ["embedding", "scores", "generation", "recommendations"]
    assert isinstance(out["generation"][2], str) and len(out["items"][3]) == 3
    unfolded = RecFoundModel.from_dirs(cfg.paths.backbone, cfg.paths.merged, folded=False)
    through_adapter = unfolded.predict(None, SERVED[:2], params={"max_new_tokens": 2})
    _close(list(out["embedding"][0]), list(through_adapter["embedding"][0]))
    for row in (0, 1):  # cosines and closed-set log-probabilities
        _close(list(out["scores"][row]), list(through_adapter["scores"][row]))

    rec = load_bundle(cfg.paths.backbone, cfg.paths.merged)
    moved = [p.abs().max() for n, p in rec.model.named_parameters() if n.endswith("tmole_B")]
    assert moved and max(moved) > 1e-2  # the merged adapter has something to fold
    folded = fold_rec_model(rec, "rating_prediction")
    prompts, candidates = ["Heat (1995)?", "Sabrina (1995)?"], [["1", "3", "5"], ["2", "4"]]
    if family not in layer_by_layer_families():
        named = "llama, mistral, qwen2, qwen3"
        with pytest.raises(UnsupportedModelError, match=named):
            LateInteractionScorer(folded)
        with pytest.raises(UnsupportedModelError, match=named):
            EarlyExitScorer(folded, ExitHeads(model.config.hidden_size, (1,)), NEVER)
        with pytest.raises(UnsupportedModelError, match=named):
            run_export(cfg, "rating_prediction", out=work / "device")
        assert not (work / "device").exists()
        return
    expected = folded.score(prompts, candidates, "rating_prediction")
    for scorer in (
        LateInteractionScorer(folded),
        EarlyExitScorer(folded, ExitHeads(model.config.hidden_size, (1,)), NEVER),
    ):
        got = scorer.score(prompts, candidates)
        for row, want in zip(getattr(got, "scores", got), expected, strict=True):
            _close(row, want)
    exported = run_export(cfg, "rating_prediction", out=work / "device")
    assert exported["artifact_uri"].endswith("device/rating_prediction")
    device = DeviceModel(work / "device", threads=1).score(prompts, candidates)
    for row, want in zip(device, expected, strict=True):  # int8 weights: 1% of the values
        torch.testing.assert_close(
            torch.tensor(row), torch.tensor(want), rtol=0, atol=0.01 * max(map(abs, want))
        )
