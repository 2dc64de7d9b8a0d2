"""The RecFound Kubeflow pipeline: definition (``recfound_pipeline``), its parameters
(``arguments``) and what ``recfound pipeline compile | submit | run-local`` do (``commands``)."""
