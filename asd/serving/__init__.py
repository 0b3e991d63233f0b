"""Serving a fitted detector: one MLflow pyfunc model, the registry, HTTP serving and batch scoring.

- :mod:`asd.serving.bundle`: the model's files (a saved :class:`~asd.detector.Detector` plus
  ``serving.json``: machines, sections, thresholds, the clip-length rule) and loading them back;
- :mod:`asd.serving.clips`: one request row -> a clip at evaluation's length, or an error for that row;
- :mod:`asd.serving.predict`: a request DataFrame -> ``score, decision, threshold, error`` per row;
- :mod:`asd.serving.pyfunc`: the :class:`mlflow.pyfunc.PythonModel` and its signature
  (``entry.py`` is the models-from-code file MLflow runs to build it: nothing is pickled);
- :mod:`asd.serving.publish`: logging the model to an evaluate run and registering it;
- :mod:`asd.serving.register`: ``asd register`` (reuse the logged model or refit it) and
  ``asd search --best --register``;
- :mod:`asd.serving.batch`: ``asd score``, files and folders to CSV, and ``--watch``.
"""
