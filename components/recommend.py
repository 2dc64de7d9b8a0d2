"""Component `recommend`: every user's top-k from the merged model, as a parquet dataset."""

from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components.runtime import log_scalars, stage_component, stage_config


@stage_component
def recommend(
    params: str,
    interim: Input[Dataset],
    tasks: Input[Dataset],
    backbone: Input[Model],
    merged: Input[Model],
    recommendations: Output[Dataset],
    metrics: Output[Metrics],
    report: Output[Artifact],
) -> None:
    """Batch recommendation lists (recfound recommend): ``recommendations`` holds
    ``recommendations.parquet`` (user_id, path, rank, item_id, title, score); ``report`` holds
    ``recommend.json`` (users per second, Recall/NDCG@10 per path, whether fusion helps on
    validation); ``metrics`` the same numbers for the KFP UI. ``interim`` gives titles and
    genres."""
    from recfound.stages.recommend import run_recommend

    cfg = stage_config(params, locals())
    document = run_recommend(cfg)
    log_scalars(metrics, {"paths": document["paths"], "index": document["index"]})
