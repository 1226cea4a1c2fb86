"""The embedded stack of ``bckd serve``: Ray head, MLflow and the API as supervised child processes
on this machine (:mod:`service.stack.embedded`, :mod:`service.stack.supervisor`), their ports,
the takeover of a dead supervisor's leftovers and the jobs' sandbox; ``bckd serve`` itself is
:mod:`service.stack.serve`."""
