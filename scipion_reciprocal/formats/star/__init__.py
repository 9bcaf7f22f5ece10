"""RELION STAR files (3.0 to 5): whole files read with starfile (:func:`read_star`), large
particle tables on a fast path (:class:`StarTable`), RELION's layout written (:func:`write_star`).
Blocks are named without ``data_`` (``''`` for RELION 3.0's bare ``data_``), labels without ``_``.
"""
from .reading import ParticlesStar, StarDocument, read_particles_star, read_star
from .table import StarTable
from .writing import ImageNames, write_particles_star, write_star

__all__ = ['StarDocument', 'ParticlesStar', 'StarTable', 'ImageNames', 'read_star',
           'read_particles_star', 'write_star', 'write_particles_star']
