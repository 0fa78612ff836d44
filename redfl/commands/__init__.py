"""The commands of the ``redfl`` command line, one module each (see :mod:`redfl.cli`)."""
