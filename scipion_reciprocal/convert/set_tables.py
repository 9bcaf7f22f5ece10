"""Former name of the set readers, kept while other branches still import it: see :mod:`.set_sql`."""
from .set_sql import (SetTableError, iter_class_items, read_class_items,  # noqa: F401
                      read_class_matrix_lines, read_set_items, read_set_properties)
