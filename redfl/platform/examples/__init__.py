"""Example configs served by ``GET /api/examples`` (package data, so an installed package has
them). They are copies of those repository ``examples/*.toml`` that a web user may run as
they are: client code of ``redfl.examples`` and no server file. A test keeps them equal."""
