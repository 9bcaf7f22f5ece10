"""Where the real RELION 3.1 tutorial metadata lives, for tests that use it.

The files are part of the beta-galactosidase RELION 3.1 tutorial (EMPIAR-10204, S.H.W. Scheres),
as published in the ``dials/data-files`` repository, CC-BY-4.0. A user's checkout does not have
them: tests marked with :data:`requires_realdata` are skipped then. Set
``SCIPION_RECIPROCAL_REALDATA`` to another copy of the ``relion31_tutorial`` folder to use it.
"""
import os
from pathlib import Path

import pytest

# tests -> scipion_reciprocal -> main -> work; shared/ sits beside the checkout.
_DEFAULT = Path(__file__).resolve().parents[3] / 'shared' / 'realdata' / 'relion31_tutorial'

REALDATA = Path(os.environ.get('SCIPION_RECIPROCAL_REALDATA') or _DEFAULT)

requires_realdata = pytest.mark.skipif(
    not REALDATA.is_dir(), reason=f'real RELION data not found at {REALDATA}')
