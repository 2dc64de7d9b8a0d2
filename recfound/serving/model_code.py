"""The registered model's definition, logged as code (MLflow "models from code"), not a pickle.

``mlflow.pyfunc.log_model(python_model=<this file>, ...)`` copies this file into the model
directory; loading the model runs it, with the logged ``recfound`` package on ``sys.path``, and
MLflow then calls :meth:`RecFoundModel.load_context` with the model's artifacts (backbone and
bundle, safetensors) and its model config (the ``serving`` settings).
"""

from __future__ import annotations

import mlflow

from recfound.serving.pyfunc import RecFoundModel

mlflow.models.set_model(RecFoundModel())
