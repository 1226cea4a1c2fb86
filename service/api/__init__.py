"""The HTTP shell: routes (one router per concern, mounted in :mod:`service.api.routes`), their
dependencies (:mod:`service.api.deps`), the domain errors' HTTP answers (:mod:`service.api.errors`)
and the middleware (:mod:`service.api.middleware`). A route is a thin shell over one core call;
it imports nothing from :mod:`service.adapters`."""
