"""The device artifact: one task's folded model as int8 ONNX (:mod:`.export`) and its
onnxruntime runner (:mod:`.runtime`)."""
