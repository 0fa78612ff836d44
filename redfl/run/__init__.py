"""One way to run a federation: config -> federation -> run folder.

:func:`redfl.run` (:func:`redfl.run.api.run`) validates a config
(:mod:`~redfl.run.config`), builds its federation (:mod:`~redfl.run.build`), runs it and
writes the run folder (:mod:`~redfl.run.recorder`, :mod:`~redfl.run.checkpoints`,
:mod:`~redfl.run.folder`); :func:`redfl.tune` (:mod:`~redfl.run.tuning`) runs many. This
package's ``__init__`` imports nothing, so that ``redfl.run`` stays the function.
"""
