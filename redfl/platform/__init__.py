"""The redfl platform: a REST API over runs, with users, roles and a SQL store.

Layers inside the package: :mod:`~redfl.platform.models` (tables) and
:mod:`~redfl.platform.store` (the repository the HTTP layer uses), :mod:`~redfl.platform.security`
(passwords, tokens), :mod:`~redfl.platform.api` (FastAPI routes) and
:mod:`~redfl.platform.cli` (``redfl serve``, ``redfl users``, ``redfl db``). Nothing here
imports Ray; the execution of runs is added on top of the store's run records.
"""
