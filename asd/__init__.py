"""asd: anomalous sound detection toolkit for the DCASE Task 2 data.

Importing the package is cheap on purpose (no torch, no mlflow): the CLI must start fast.
"""

__version__ = "0.1.0"
