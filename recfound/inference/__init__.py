"""Cheaper inference for one task (M6-Rec's half of serving).

- :mod:`~recfound.inference.folded`: one task's adapter folded into the backbone's weights;
- :mod:`~recfound.inference.decoder`: a Llama-family decoder run layer by layer (what the two
  techniques below need: a prompt's key/value cache shared by many answers, exits between layers);
- :mod:`~recfound.inference.late_interaction`: candidate scoring with the item side cached once
  per catalogue;
- :mod:`~recfound.inference.early_exit`: exit heads on intermediate layers and a confidence
  threshold calibrated on validation records.
"""
