"""Names and columns of the files the classifier backend reads and writes.

The one statement of the contract between the backend (which imports this module from its own
folder) and the Scipion side (``core/picking.py``, which imports it from the package). Standard
library only: both environments load it.
"""

# Inputs: tables the Scipion side writes.
PARTICLE_COLUMNS = ('stack', 'index', 'label', 'pixel_size')
MICROGRAPH_COLUMNS = ('path', 'pixel_size', 'name')

# ``train --out-dir DIR``
MODEL_FILE = 'model.keras'
MODEL_INFO = 'model.json'
HISTORY = 'history.csv'
TEST_REPORT = 'test_report.json'
TEST_SCORES = 'test_scores.csv'
SPLIT = 'split.csv'

# ``pick --out-dir DIR``
PICKS = 'picks.csv'
REJECTED = 'rejected.csv'
PICK_COLUMNS = ('micrograph', 'x', 'y', 'score')
PICK_SUMMARY = 'pick.json'
SCORE_MAPS = 'score_maps'
COORDINATES = 'coordinates'
STAR_SUFFIX = '_classifier.star'
