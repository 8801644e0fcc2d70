"""Sub-commands of the ``sparseinst`` CLI, one module each (see :mod:`sparseinst_zoo.cli`)."""
