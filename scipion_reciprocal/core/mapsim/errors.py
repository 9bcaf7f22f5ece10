"""The error raised for bad input to map similarity clustering."""


class MapClusteringError(ValueError):
    """Input maps, mask, names or options that map clustering cannot use.

    The message names the map or file concerned and says what is wrong with it.
    """
