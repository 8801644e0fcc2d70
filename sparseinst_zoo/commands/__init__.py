"""Sub-commands of the ``sparseinst`` CLI, one module each (see :mod:`sparseinst_zoo.cli`).

A command module defines ``HELP`` (one line, repeated in ``cli.COMMANDS``), ``add_arguments(parser)`` and
``run(args) -> int``, and imports its heavy dependencies inside ``run``. Flags several commands share come from
:mod:`sparseinst_zoo.commands._options`, model loading from :mod:`sparseinst_zoo.commands._model`; command modules
never import each other.
"""
