"""The models-from-code file of the detector model: MLflow copies it into the model and runs it on load.

Not imported by ``asd`` itself (it registers the model object with MLflow when run).
"""

from mlflow.models import set_model

from asd.serving.pyfunc import DetectorModel

set_model(DetectorModel())
