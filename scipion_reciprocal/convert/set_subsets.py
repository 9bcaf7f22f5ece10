"""Former name of the set writers, kept while other branches still import it: see :mod:`.set_sql`."""
from .set_sql import (PAGE_SIZE, add_item_attributes, copy_class_rows,  # noqa: F401
                      create_set_file, fill_classes, write_item_subset)
