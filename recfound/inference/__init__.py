"""Cheaper inference for one task (M6-Rec's half of serving), on a task-folded model
(:func:`recfound.model.folded.fold_rec_model`).

- :mod:`~recfound.inference.decoder`: a Llama-family decoder run layer by layer (what the two
  techniques below need: a prompt's key/value cache shared by many answers, exits between layers);
- :mod:`~recfound.inference.late_interaction`: candidate scoring with the item side cached once
  per catalogue;
- :mod:`~recfound.inference.early_exit`: exit heads on intermediate layers and a confidence
  threshold calibrated on validation records.
"""
