"""The ``sites`` runtime: each client runs at its own site, a process of another organisation
that reaches the server over mutually authenticated TLS (outbound only).

- :mod:`~redfl.runtime.sites.config`: the ``[sites]`` table;
- :mod:`~redfl.runtime.sites.wire`: the messages between server and sites (JSON and
  safetensors; nothing a site sends is unpickled);
- :mod:`~redfl.runtime.sites.secure_wire` and :mod:`~redfl.runtime.sites.secure_jobs`: the
  four stages of secure aggregation as typed frames, and the server's checks of a site's
  answers (the site keeps its update, keys and seeds);
- :mod:`~redfl.runtime.sites.backend`: the server side, a
  :class:`~redfl.runtime.backend.Backend` whose worker ``i`` is site ``i``;
- :mod:`~redfl.runtime.sites.service`: its HTTPS endpoints (a raw ASGI app) and
  :mod:`~redfl.runtime.sites.listener`: uvicorn with the TLS handshake done (and refusals
  logged) in the connection's protocol;
- :mod:`~redfl.runtime.sites.agent`: the site side, the user's client class in a
  :class:`~redfl.runtime.host.Host` that long-polls the server for work;
- :mod:`~redfl.runtime.sites.admin`: the federation home's sites (issue, revoke, list).

Importing this package imports none of them.
"""
