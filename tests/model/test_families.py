"""Every supported Hugging Face family, from a tiny random checkpoint written with save_pretrained.

Per family (fast, every family): item identifiers added, TMoLE / LoRA / option tuning placed on
the family's own projections (``target_modules: auto``: GPT-2's Conv1D, Phi-3's and GPT-NeoX's
fused projections), one training step moves only the adapter, each adapter's folded model equals
the unfolded one, and late interaction / early exit / the device export either reproduce the
model (Llama, Mistral, Qwen2, Qwen3) or refuse by name.

The whole chain (pretrain with identifiers → train TMoLE → merge → evaluate → register → one
served request per task kind) runs for GPT-2 and Phi-3 (``slow``): the two families whose layers
differ most from the builtin Llama.
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


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gpt2", "phi3"])
def test_family_runs_the_whole_chain(family, tmp_path, tokenizer, monkeypatch) -> None:
    """pretrain (identifiers added and trained, backbone frozen) → train (TMoLE) → merge →
    evaluate → register → one served request per task kind, on a user's checkpoint."""
    from recfound.stages.build_tasks import run_build_tasks
    from recfound.stages.evaluate import run_evaluate
    from recfound.stages.ingest import run_ingest
    from recfound.stages.merge import run_merge
    from recfound.stages.pretrain import run_pretrain
    from recfound.stages.register import run_register
    from recfound.stages.train import run_train
    from recfound.stages.validate import run_validate

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    checkpoint = tiny_checkpoint(family, tokenizer, tmp_path / "my-llm")
    raw = write_ml100k_slice(tmp_path / "raw", num_users=25)  # TINY_SECTIONS keeps max_users 60
    enabled = ["user2item", "product_matching", "rating_prediction", "user_profile"]
    params = write_tiny_params(
        tmp_path / "params.yaml",
        data={"source": "recbole_atomic", "path": str(raw), "dataset_name": "mini"},
        tasks={"enabled": enabled, "max_train_per_task": 24, "max_eval_per_task": 6},
        model={"backbone": str(checkpoint)},
        pretrain={"steps": 4, "eval_every": 2},
        train={"steps": 4, "eval_every": 2, "checkpoint_every": 2},
        merge={"trials": 1, "max_per_task": 8},
        evaluate={"max_per_task": 4, "max_new_tokens": 2, "ks": [1, 5]},
        tracking={"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"},
    )
    cfg = load_config(params)
    run_ingest(cfg)
    run_validate(cfg)
    run_build_tasks(cfg)
    pretrained = run_pretrain(cfg)
    assert pretrained["trainable"] == "identifiers" and pretrained["item_tokens"] > 0
    base, _ = load_backbone(checkpoint)
    model, _ = load_backbone(cfg.paths.backbone)
    old = base.get_input_embeddings().weight
    assert torch.equal(model.get_input_embeddings().weight[: len(old)], old)
    run_train(cfg)
    run_merge(cfg)
    metrics = run_evaluate(cfg)
    assert set(metrics["tasks"]) >= {"user2item", "rating_prediction"}
    report = run_register(cfg)
    assert report["alias"] == "champion"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    served = mlflow.pyfunc.load_model("models:/recfound@champion")
    kinds = served.metadata.metadata["task_kinds"]
    rows = [
        {"task": "user2item", "input": "Toy Story (1995)", "candidates": None},
        {"task": "rating_prediction", "input": "Heat (1995)?", "candidates": ["1", "5"]},
        {"task": "user_profile", "input": "Toy Story (1995): 5/5", "candidates": None},
    ]
    assert {kinds[r["task"]] for r in rows} == {"embedding", "generative"}
    out = served.predict(pd.DataFrame(rows), params={"max_new_tokens": 2})
    assert out["output_type"].tolist()[0] == "embedding"
    assert len(out["scores"][1]) == 2 and isinstance(out["generation"][2], str)
