"""What the service talks to: the database with all its tables and migrations
(:mod:`service.adapters.db`), Ray's Jobs API (:mod:`service.adapters.ray_jobs`, the job's command
line :mod:`service.adapters.entrypoints`) and the MLflow tracking server
(:mod:`service.adapters.tracking`)."""
