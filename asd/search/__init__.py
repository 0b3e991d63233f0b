"""``asd search``: Optuna studies over recipes, losses and backends, every trial an MLflow run.

:mod:`~asd.search.driver` (create or join a study, run trials until it is complete),
:mod:`~asd.search.space` (the search space, from YAML), :mod:`~asd.search.trial` (one trial),
:mod:`~asd.search.embeddings` (the embedding store shared by trials), :mod:`~asd.search.runs`
(the study's MLflow runs).
"""
