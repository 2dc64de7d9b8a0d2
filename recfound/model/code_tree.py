"""Exhaustive scoring of multi-token item identifiers (semantic codes) in one forward pass.

A semantic identifier is a short code (``<item_a3><item_b17><item_s0>``); its score after a
prompt is the sum of its tokens' log-probabilities, each read after the prompt and the code's
earlier tokens. Scoring every item one sequence at a time would cost one forward pass per item
and prompt. The codes of a catalogue form a trie, so instead every *distinct proper prefix*
(``a3``, ``a3 b17``, …) is laid out once after the prompt as one node, and a tree attention
mask lets each node see the prompt, its ancestors and itself only: the node's output is then
exactly what a plain causal pass over ``prompt + prefix`` would give (positions continue the
prompt's, RoPE sees the same offsets). One pass per batch of prompts scores the whole catalogue:
``prompt + nodes`` tokens, about ``codebook_size + distinct two-token prefixes`` nodes (about
1,000 for ml-100k's 1,644 items with two 32-centroid levels). For catalogues where that is too
many (more than :data:`MAX_NODES`), constrained beam search (:mod:`recfound.data.semantic_ids`)
is the decoder; it is not wired into evaluation or ``recommend`` yet, so such a catalogue is a
clear error (:class:`CodeTreeTooLarge`) rather than an out-of-memory crash.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recfound.errors import UserInputError

# Nodes one pass lays out after a prompt: attention is (prompt + nodes)^2 per row.
MAX_NODES = 8192
# Log-probability entries (rows x (1 + nodes) x vocab) one pass may hold (1 GiB in float32).
MAX_LOGPROB_ENTRIES = 2**28


class CodeTreeTooLarge(UserInputError):
    """The catalogue's codes have too many distinct prefixes to score exhaustively."""


@dataclass(frozen=True)
class CodeTree:
    """The trie of item codes as nodes laid out after a prompt.

    ``codes`` ``(items, depth)``: each item's token ids. ``node_tokens`` ``(nodes,)``: the last
    token of each distinct proper prefix (length 1 … depth-1); ``node_depth``: that length.
    ``visible`` ``(nodes, nodes)``: node j is node i or an ancestor of it. ``reads``
    ``(items, depth)``: the output that predicts ``codes[:, l]`` (``-1``: the prompt's last
    token; else the node of ``codes[:, :l]``).
    """

    codes: torch.Tensor
    node_tokens: torch.Tensor
    node_depth: torch.Tensor
    visible: torch.Tensor
    reads: torch.Tensor


def build_code_tree(codes: torch.Tensor) -> CodeTree:
    """The :class:`CodeTree` of ``codes`` ``(items, depth)`` (token ids, every row valid)."""
    rows = [tuple(int(t) for t in row) for row in codes.tolist()]
    depth = codes.shape[1]
    node_of: dict[tuple[int, ...], int] = {}
    parents: list[int] = []
    tokens: list[int] = []
    lengths: list[int] = []
    for length in range(1, depth):
        for row in rows:
            prefix = row[:length]
            if prefix not in node_of:
                node_of[prefix] = len(tokens)
                parents.append(node_of[prefix[:-1]] if length > 1 else -1)
                tokens.append(prefix[-1])
                lengths.append(length)
    visible = torch.zeros((len(tokens), len(tokens)), dtype=torch.bool)
    for node in range(len(tokens)):
        ancestor = node
        while ancestor >= 0:
            visible[node, ancestor] = True
            ancestor = parents[ancestor]
    if len(tokens) > MAX_NODES:
        raise CodeTreeTooLarge(
            f"the item codes have {len(tokens):,} distinct prefixes (more than {MAX_NODES:,}): "
            "exhaustive scoring of semantic identifiers stops there and trie-constrained beam "
            "search is not wired into evaluation and recommend yet; use fewer levels or a "
            "smaller tasks.semantic_codebook_size, or tasks.item_ids: atomic"
        )
    reads = torch.tensor(
        [[-1] + [node_of[row[:length]] for length in range(1, depth)] for row in rows],
        dtype=torch.long,
    ).reshape(len(rows), depth)
    return CodeTree(
        codes=codes.long(),
        node_tokens=torch.tensor(tokens, dtype=torch.long),
        node_depth=torch.tensor(lengths, dtype=torch.long),
        visible=visible,
        reads=reads,
    )


def rows_per_pass(tree: CodeTree, vocab: int, batch_size: int) -> int:
    """Prompts per tree-masked pass: ``batch_size`` or fewer, so that one pass's
    log-probabilities stay under :data:`MAX_LOGPROB_ENTRIES`."""
    per_row = (1 + len(tree.node_tokens)) * vocab
    return max(1, min(batch_size, MAX_LOGPROB_ENTRIES // per_row))


def tree_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, tree: CodeTree
) -> dict[str, torch.Tensor]:
    """``input_ids`` ``(B, P + nodes)``, a boolean 4D ``attention_mask`` ``(B, 1, L, L)``
    (True = attend) and ``position_ids`` for *left-padded* prompts followed by the tree's nodes.

    Prompt tokens attend causally to the prompt's non-pad tokens; a node attends to the same
    prompt tokens, its ancestors and itself; every row also sees itself, so a pad row has no
    empty softmax. Positions are the plain pass's (``0 … P-1``), a node at depth d sits at
    ``P - 1 + d``.
    """
    batch, length = input_ids.shape
    nodes = len(tree.node_tokens)
    device = input_ids.device
    total = length + nodes
    ids = torch.cat([input_ids, tree.node_tokens.to(device).expand(batch, nodes)], 1)
    keep = torch.zeros((total, total), dtype=torch.bool, device=device)
    keep[:length, :length] = torch.ones((length, length), dtype=torch.bool, device=device).tril()
    keep[length:, :length] = True
    keep[length:, length:] = tree.visible.to(device)
    columns = torch.cat(
        [attention_mask.bool(), torch.ones((batch, nodes), dtype=torch.bool, device=device)], 1
    )
    mask = keep[None] & columns[:, None, :]
    mask |= torch.eye(total, dtype=torch.bool, device=device)[None]
    positions = torch.cat(
        [torch.arange(length, device=device), length - 1 + tree.node_depth.to(device)]
    )
    return {
        "input_ids": ids,
        "attention_mask": mask[:, None],
        "position_ids": positions[None].expand(batch, total),
    }


def code_scores(logprobs: torch.Tensor, tree: CodeTree) -> torch.Tensor:
    """``(B, items)`` summed code log-probabilities from ``logprobs`` ``(B, 1 + nodes, vocab)``:
    the log-probabilities after the prompt's last token, then after each node."""
    rows = tree.reads + 1  # 0: the prompt's last token
    picked = logprobs[:, rows, tree.codes.to(logprobs.device)]  # (B, items, depth)
    return picked.sum(-1)
