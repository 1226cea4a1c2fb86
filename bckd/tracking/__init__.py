"""MLflow tracking: one run per job (:mod:`~bckd.tracking.runs`) and the view MLflow's UI opens
on (:mod:`~bckd.tracking.mlflow_ui`)."""
