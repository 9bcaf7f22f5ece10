"""Map similarity clustering: group cryo-EM maps by similarity, with alignment.

Plain inputs (paths or arrays), plain outputs; no Scipion. The main entry points:

- :func:`run_map_clustering` -> :class:`MapClusteringResult`
- :func:`write_results` / :func:`read_results`
- building blocks: :func:`resample_map`, :func:`lowpass_filter`, :func:`align_maps`,
  :func:`correlation_matrix`, :func:`fsc_matrix`, :func:`cluster_maps`, :func:`mds_embedding`.
"""
from .align import AlignOptions, AlignmentResult, align_maps, apply_transform, make_transform
from .clustering import Clustering, cluster_maps, distance_from_similarity, mds_embedding
from .engine import MapClusteringOptions, check_inputs, run_map_clustering
from .errors import MapClusteringError
from .grid import fourier_resize, lowpass_filter, normalise, resample_map
from .inputs import MapInput, collect_inputs, read_names_csv
from .results import MapClusteringResult, read_results, write_results
from .similarity import correlation_matrix, fsc_curve, fsc_matrix, fsc_similarity

__all__ = ['AlignOptions', 'AlignmentResult', 'Clustering', 'MapClusteringError',
           'MapClusteringOptions', 'MapClusteringResult', 'MapInput', 'align_maps',
           'apply_transform', 'check_inputs', 'cluster_maps', 'collect_inputs',
           'correlation_matrix', 'distance_from_similarity', 'fourier_resize', 'fsc_curve',
           'fsc_matrix', 'fsc_similarity', 'lowpass_filter', 'make_transform', 'mds_embedding',
           'normalise', 'read_names_csv', 'read_results', 'resample_map', 'run_map_clustering',
           'write_results']
