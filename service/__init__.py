"""REST service for BCKD jobs: FastAPI over the Ray Jobs API, SQL persistence and MLflow.

Run it with ``bckd serve`` (embedded Ray + MLflow + API on loopback); see docs/SERVICE.md.
"""
