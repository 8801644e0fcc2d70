"""``python -m sparseinst_zoo`` (and ``torchrun -m sparseinst_zoo``): the ``sparseinst`` command.

Example:
    $ torchrun --nproc-per-node 2 -m sparseinst_zoo predict sparseinst_r50_giam --checkpoint m.safetensors images/
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
