"""The baselines every task is compared with: non-learned rankers (popularity, item-kNN, BM25 in
:mod:`recfound.baselines.rankers`) and learned ones trained once per data version (SASRec,
biased MF), saved and read back by :mod:`recfound.baselines.store`. Evaluation runs them on the
model's records; nothing here knows the model.
"""
