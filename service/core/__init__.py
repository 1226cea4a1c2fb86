"""The service's domain: jobs (make, submit, cancel, reconcile), runs, data sets, comparisons and
the validation of a request. It speaks in domain objects and errors (:mod:`service.core.errors`)
and imports no FastAPI; :mod:`service.api` turns it into HTTP."""
