"""MLflow tracking: one run per job (:mod:`~bckd.tracking.runs`), the view MLflow's UI opens
on (:mod:`~bckd.tracking.mlflow_ui`) and the login a job hands its workers
(:mod:`~bckd.tracking.login`)."""
