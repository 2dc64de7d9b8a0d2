"""Items as tokens: identifiers survive save/load, the catalogue is ranked from identifier logits
exactly as scoring every item one by one would, and excluded items are never recommended."""

from __future__ import annotations

from pathlib import Path

import torch

from recfound.model.backbone import add_item_tokens, load_backbone, save_backbone
from recfound.model.build import build_rec_model
from recfound.model.recmodel import top_k_items
from tests.train.tiny import ADAPTER, tiny_backbone

TOKENS = [f"<item_{i}>" for i in range(12)]


def _tiny_backbone(tmp_path: Path):
    texts = ["Which movie will this user choose next? History, oldest first:"] * 30
    model, tokenizer = tiny_backbone(texts, item_tokens=TOKENS, num_layers=1, vocab_size=300)
    save_backbone(model, tokenizer, tmp_path / "backbone")
    return load_backbone(tmp_path / "backbone")


def test_identifier_tokens_survive_save_and_load(tmp_path: Path) -> None:
    model, tokenizer = _tiny_backbone(tmp_path)
    ids = [tokenizer.convert_tokens_to_ids(t) for t in TOKENS]
    assert len(set(ids)) == len(TOKENS) and tokenizer.unk_token_id not in ids
    # one token each, with or without the space before it, as prompts and answers write them
    encoded = tokenizer("History: <item_3> <item_11><item_0>", add_special_tokens=False)
    assert encoded["input_ids"][-3:] == [ids[3], ids[11], ids[0]]
    assert tokenizer(" <item_5>", add_special_tokens=False)["input_ids"] == [ids[5]]
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    # adding them again changes nothing
    assert add_item_tokens(model, tokenizer, TOKENS) == 0


def test_catalogue_ranking_equals_scoring_every_item(tmp_path: Path) -> None:
    base, tokenizer = _tiny_backbone(tmp_path)
    rec = build_rec_model(base, tokenizer, ADAPTER, {"next": "generative"}, seed=1)
    with torch.no_grad():  # move the adapter off zero so the task changes the outputs
        for p in rec.model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    prompts = [
        "Which movie will this user choose next? History, oldest first: <item_1> <item_2>",
        "Which movie? <item_7>",
    ]
    catalogue = [*TOKENS, ""]  # the last item has no identifier
    fast = rec.catalogue_scores(prompts, catalogue, "next")
    assert fast.shape == (2, len(catalogue))
    assert torch.isinf(fast[:, -1]).all()
    for row, prompt in enumerate(prompts):
        picked, mask = rec.answer_token_logprobs([prompt] * len(TOKENS), TOKENS, "next")
        # the first answer token of "<item_k>" is the identifier itself
        positions = mask.float().argmax(-1)
        brute = picked[torch.arange(len(TOKENS)), positions]
        torch.testing.assert_close(fast[row, :-1], brute, rtol=1e-4, atol=1e-5)


def test_excluded_items_are_never_recommended() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(50, 30, generator=generator)
    scores[:, 29] = float("-inf")  # an item without an identifier
    exclude = [list(torch.randperm(30, generator=generator)[:12].tolist()) for _ in range(50)]
    top = top_k_items(scores, exclude, k=25)
    for row, items in enumerate(exclude):
        shown = [i for i in top[row].tolist() if i >= 0]
        assert not set(shown) & set(items)
        assert 29 not in shown
        assert len(shown) == 30 - 1 - len(set(items) - {29})
        # and the rest are the best of what is left, best first
        allowed = [i for i in range(29) if i not in items]
        best = sorted(allowed, key=lambda i: -float(scores[row, i]))
        assert shown == best[: len(shown)]


def _perturbed_model(tmp_path: Path, task: str = "next"):
    base, tokenizer = _tiny_backbone(tmp_path)
    rec = build_rec_model(base, tokenizer, ADAPTER, {task: "generative"}, seed=1)
    with torch.no_grad():  # move the adapter off zero so the task changes the outputs
        for p in rec.model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    return rec


def test_closed_set_scores_of_items_rank_as_the_catalogue_restricted_to_them(
    tmp_path: Path,
) -> None:
    rec = _perturbed_model(tmp_path)
    prompts = [
        "Which movie will this user choose next? History, oldest first: <item_1> <item_2>",
        "Which movie? <item_7>",
    ]
    candidates = [["<item_4>", "<item_9>", "<item_0>", "<item_11>"], ["<item_3>", "<item_5>"]]
    catalogue = rec.catalogue_scores(prompts, TOKENS, "next")
    scores = rec.choice_scores(prompts, candidates, "next")
    for row, cands in enumerate(candidates):
        restricted = catalogue[row, [TOKENS.index(c) for c in cands]]
        got = torch.tensor(scores[row])
        # the same order, and the same values once renormalised over the candidates
        assert got.argsort(descending=True).tolist() == restricted.argsort(descending=True).tolist()
        torch.testing.assert_close(got.exp().sum(), torch.tensor(1.0, dtype=got.dtype))
        torch.testing.assert_close(
            got.float(), torch.log_softmax(restricted, 0), rtol=1e-4, atol=1e-5
        )
