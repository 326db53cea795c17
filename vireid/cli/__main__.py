"""``python -m vireid.cli``: the ``vireid`` command (e.g. under ``torchrun ... -m vireid.cli train``)."""

from vireid.cli import main

raise SystemExit(main())
