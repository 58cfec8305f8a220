"""Entry file of the logged pyfunc (MLflow "models from code"): defines the model, pickles nothing."""

import mlflow
from mlflow.pyfunc import PythonModel

from semisep.evaluation.registry import SeparatorPyfunc


class Separator(SeparatorPyfunc, PythonModel):
    pass


mlflow.models.set_model(Separator())
