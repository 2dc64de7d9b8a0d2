"""Catalogue scale: identifiers, the ANN index and the embedding path at 10^4 to 10^6 items.

No large public catalogue is available offline, so catalogues are synthetic: item embeddings of the
builtin hidden size (128) drawn around ``--clusters`` random centres (items of a real catalogue
cluster by genre and audience; uniformly random vectors in 128 dimensions have no neighbours worth
finding, and no index beats brute force on them), L2-normalised as the model's embeddings are.
Per catalogue size:

- **parameters added by identifiers**: atomic = one embedding row per item × hidden (the builtin
  backbone ties input and output embeddings, so one matrix); semantic = (3 levels × 256 codebook
  tokens + the suffix tokens that the largest collision group needs) × hidden, from residual
  k-means of the same embeddings (:mod:`recfound.data.semantic_ids`);
- **the faiss index** the registered model carries (:class:`recfound.serving.ann.ItemIndex`,
  the serving defaults: exact below 50,000 items, IVF with √n lists and nprobe 32 above):
  build time and serialised size;
- **recall@10 of the index against exact search**, for queries near items (an item's embedding
  plus noise, renormalised);
- **embedding-path latency**: :meth:`Recommender.recommend` for one user at a time, k = 10, a
  50-item history (excluded), on the default-size builtin backbone (hidden 128, 3 layers, random
  weights: latency does not depend on what the weights learned) with a user2item TMoLE adapter:
  the query embedding, the index search, the exclusions and the title lookup. p50 / p99 over
  ``--requests`` requests, torch and faiss on ``--threads`` threads (default 1: one request per
  core; on a 2-core machine already busy, two OpenMP threads per request spin against each
  other and one request took 0.5 s instead of 11 ms).

Writes ``reports/bench/recommend_scale.json`` and ``reports/bench/recommend_scale.png``::

    nice -n 10 python bench/recommend_scale.py                 # 10^4, 10^5, 10^6 (~4 min)
    nice -n 10 python bench/recommend_scale.py --sizes 10000   # a quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recfound.config import load_config
from recfound.data.semantic_ids import semantic_codes
from recfound.model.backbone import BuiltinSpec, build_builtin_backbone, train_bpe_tokenizer
from recfound.model.build import build_rec_model
from recfound.serving.ann import IndexSettings, ItemIndex
from recfound.serving.catalogue import Catalogue
from recfound.serving.recommend import Recommender
from recfound.train.from_config import adapter_spec

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = 128
HISTORY = 50
TARGETS = {"ann_recall@10": 0.95, "p50_ms": 50.0, "semantic_share": 0.01}


def synthetic_embeddings(n: int, clusters: int, seed: int, noise: float = 0.35) -> np.ndarray:
    """``(n, 128)`` float32, L2-normalised, around ``clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, HIDDEN)).astype(np.float32)
    out = np.empty((n, HIDDEN), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        block = centres[rng.integers(0, clusters, stop - start)]
        block += noise * rng.standard_normal(block.shape).astype(np.float32)
        out[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(vectors), 200_000):
        scores = queries @ vectors[start : start + 200_000].T
        rows = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, rows, 1)], 1)
        merged_rows = np.concatenate([best_rows, rows + start], 1)
        keep = np.argsort(-merged_scores, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, keep, 1)
        best_rows = np.take_along_axis(merged_rows, keep, 1)
    return best_rows


def embedding_model(seed: int):
    """The default-size builtin backbone (random weights) with a user2item TMoLE adapter."""
    cfg = load_config(ROOT / "params.yaml")
    words = [" ".join(f"i{(n * 7 + j) % 5000}" for j in range(40)) for n in range(400)]
    tokenizer = train_bpe_tokenizer(words, cfg.model.builtin.vocab_size)
    base = build_builtin_backbone(BuiltinSpec(**cfg.model.builtin.model_dump()), tokenizer, seed)
    kinds = {"user2item": "embedding", "sequential_recommendation": "generative"}
    rec = build_rec_model(
        base, tokenizer, adapter_spec(cfg), kinds, seed=seed, max_length=cfg.model.max_length
    )
    return rec, kinds


def synthetic_catalogue(n: int) -> Catalogue:
    ids = [str(i) for i in range(n)]
    items = pd.DataFrame(
        {
            "item_id": ids,
            "title": [f"Item {i}" for i in ids],
            "token": [f"i{i}" for i in ids],  # written in the query as text (BPE pieces)
            "text": [f"i{i} Item {i}" for i in ids],
            "genres": [()] * n,
            "year": pd.array([pd.NA] * n, dtype="Int64"),
        }
    )
    return Catalogue(items=items, histories={}, sequence_length=HISTORY)


def measure(n: int, args: argparse.Namespace, model) -> dict:
    print(f"--- {n:,} items", flush=True)
    out: dict = {"items": n}
    vectors = synthetic_embeddings(n, args.clusters, args.seed, args.noise)

    start = time.perf_counter()
    codes = semantic_codes(vectors, levels=3, codebook_size=256, seed=args.seed)
    atomic = n * HIDDEN
    semantic = codes.tokens_added * HIDDEN
    out["identifiers"] = {
        "atomic_params": atomic,
        "semantic_params": semantic,
        "semantic_tokens": codes.tokens_added,
        "semantic_levels": list(codes.level_sizes),
        "semantic_share_of_atomic": semantic / atomic,
        "unique_codes": len({tuple(c) for c in codes.codes.tolist()}) == n,
        "quantise_seconds": round(time.perf_counter() - start, 2),
    }
    print("identifiers", out["identifiers"], flush=True)

    start = time.perf_counter()
    index = ItemIndex.build(vectors, IndexSettings(seed=args.seed))
    build = time.perf_counter() - start
    rng = np.random.default_rng(args.seed + 1)
    picks = rng.integers(0, n, args.recall_queries)
    queries = vectors[picks] + 0.1 * rng.standard_normal((len(picks), HIDDEN)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = exact_top(vectors, queries, 10)
    start = time.perf_counter()
    _, approximate = index.search(queries, 10)
    search_ms = (time.perf_counter() - start) / len(queries) * 1000
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approximate, exact, strict=True)])
    out["index"] = {
        "kind": index.kind,
        "build_seconds": round(build, 2),
        "index_bytes": index.memory_bytes(),
        "embeddings_bytes": int(vectors.nbytes),
        "recall@10_vs_exact": float(recall),
        "search_ms_per_query": round(search_ms, 3),
    }
    print("index", out["index"], flush=True)

    rec, kinds = model
    recommender = Recommender(synthetic_catalogue(n), index, lambda _t: rec, kinds)
    histories = [[str(i) for i in rng.integers(0, n, HISTORY)] for _ in range(args.requests)]
    for history in histories[:3]:  # warm-up
        recommender.recommend([{"history": history, "k": 10, "path": "embedding"}])
    times = []
    for history in histories:
        start = time.perf_counter()
        (answer,) = recommender.recommend([{"history": history, "k": 10, "path": "embedding"}])
        times.append((time.perf_counter() - start) * 1000)
        assert len(answer.item_ids) == 10 and not set(answer.item_ids) & set(history)
    out["embedding_path_ms"] = {
        "p50": float(np.percentile(times, 50)),
        "p99": float(np.percentile(times, 99)),
        "requests": len(times),
    }
    print("latency", out["embedding_path_ms"], flush=True)
    return out


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["items"] for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].loglog(
        sizes, [r["identifiers"]["atomic_params"] for r in results], "o-", label="atomic"
    )
    axes[0].loglog(
        sizes, [r["identifiers"]["semantic_params"] for r in results], "s-", label="semantic"
    )
    axes[0].set(title="parameters added by identifiers", xlabel="items")
    axes[0].legend()
    axes[1].semilogx(sizes, [r["index"]["recall@10_vs_exact"] for r in results], "o-")
    axes[1].axhline(TARGETS["ann_recall@10"], color="grey", ls="--")
    axes[1].set(title="ANN recall@10 vs exact", xlabel="items", ylim=(0.8, 1.01))
    axes[2].semilogx(sizes, [r["embedding_path_ms"]["p50"] for r in results], "o-", label="p50")
    axes[2].semilogx(sizes, [r["embedding_path_ms"]["p99"] for r in results], "s-", label="p99")
    axes[2].axhline(TARGETS["p50_ms"], color="grey", ls="--")
    axes[2].set(title="embedding-path recommend (ms)", xlabel="items")
    axes[2].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument(
        "--noise",
        type=float,
        default=0.35,
        help="per-dimension spread around a centre (1.0: clusters overlap, a harder index)",
    )
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--recall-queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "reports" / "bench")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    model = embedding_model(args.seed)
    started = time.perf_counter()
    results = [measure(n, args, model) for n in args.sizes]
    largest = results[-1]
    document = {
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
        "settings": vars(args) | {"out": str(args.out)},
        "results": results,
        "targets": TARGETS,
        "largest_meets_targets": {
            "ann_recall@10": largest["index"]["recall@10_vs_exact"] >= TARGETS["ann_recall@10"],
            "p50_ms": largest["embedding_path_ms"]["p50"] <= TARGETS["p50_ms"],
            "semantic_share": largest["identifiers"]["semantic_share_of_atomic"]
            <= TARGETS["semantic_share"],
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = "recommend_scale" + ("" if args.noise == 0.35 else f"_noise{args.noise:g}")
    (args.out / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    plot(results, args.out / f"{name}.png")
    print(json.dumps(document["largest_meets_targets"]), f"{document['seconds']} s")


if __name__ == "__main__":
    main()
