"""Clients of the REST API: :class:`service.client.api_client.Client`, the ``bckd jobs`` command
(:mod:`service.client.jobs_cli`) and the README's demo (``python -m service.client.demo``)."""
