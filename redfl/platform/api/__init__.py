"""The HTTP layer: FastAPI routers under ``/api`` and the app factory
(:func:`redfl.platform.api.app.create_app`)."""
