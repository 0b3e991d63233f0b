"""The MLflow pyfunc model of a fitted detector, and its signature.

:class:`DetectorModel` holds no state of its own until MLflow loads it: ``load_context`` rebuilds the
detector from the bundle folder logged as the artifact ``detector`` (arrays and config, see
:mod:`asd.serving.bundle`). The model is logged from code (``asd/serving/entry.py``), so nothing is
pickled: loading needs ``asd`` installed, at the version the bundle names.
"""

from __future__ import annotations

import mlflow
import pandas as pd

ARTIFACT = "detector"


class DetectorModel(mlflow.pyfunc.PythonModel):
    """``predict(df)``: one row per clip in, ``score, decision, threshold, error`` per clip out."""

    def load_context(self, context) -> None:
        from asd.serving.bundle import read_bundle

        self.detector, self.info = read_bundle(context.artifacts[ARTIFACT])
        _ = self.detector.frontend  # built now, so the first request does not pay for it

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from asd.serving.predict import score_frame

        return score_frame(self.detector, self.info, model_input)


def signature():
    """Inputs: ``machine`` (required), ``section``, ``path``, ``audio`` (optional); outputs: the result columns.

    ``section`` accepts numbers or strings (``0``, ``"00"``); ``audio`` is a base64 string in the
    schema, decoded per row, so that a bad value is that row's error rather than a failed request.
    """
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, Schema

    inputs = Schema([ColSpec("string", "machine"), ColSpec(AnyType(), "section", required=False),
                     ColSpec("string", "path", required=False), ColSpec("string", "audio", required=False)])
    outputs = Schema([ColSpec("double", "score", required=False), ColSpec("long", "decision", required=False),
                      ColSpec("double", "threshold", required=False), ColSpec("string", "error", required=False)])
    return ModelSignature(inputs=inputs, outputs=outputs)
