"""RELION STAR files (3.0 to 5): :func:`read_star` and :func:`read_particles_star` read
whole files with starfile; :class:`StarTable` is the fast path for large particle tables;
:func:`write_star` and :func:`write_particles_star` write RELION's layout. Blocks are named
without ``data_`` (``''`` for RELION 3.0's bare ``data_``), labels without ``_``. Errors
are StarError naming the file, block and line. Optics tables and image names:
:mod:`scipion_reciprocal.formats.relion`.
"""
from .reading import ParticlesStar, StarDocument, read_particles_star, read_star
from .table import StarTable
from .writing import ImageNames, write_particles_star, write_star

__all__ = ['StarDocument', 'ParticlesStar', 'StarTable', 'ImageNames', 'read_star',
           'read_particles_star', 'write_star', 'write_particles_star']
