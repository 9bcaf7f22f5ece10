"""``provenance.json`` of a RECOVAR protocol: what produced each command's results.

One entry per RECOVAR command the protocol ran, gathered from

- the launcher's record (``backends/recovar_launcher.py --record``): versions of RECOVAR, JAX,
  jaxlib and numpy, JAX's backend and devices, the CPU back-projection correction and how often
  it acted, peak memory and CPU time;
- RECOVAR's own files: ``job.json`` (status, timing), ``_diagnostics/memory_plan.json``
  (memory budget, batch sizes, principal components), ``model/params.pkl`` (principal
  components computed and kept), ``run.log`` (half sets, budget);
- the plugin: its version, the memory estimate and the options it added;
- the random seeds, which RECOVAR 1.0.5 fixes in its code (:data:`SEEDS`).

The file is rewritten whole under a temporary name and renamed (``atomic_path``).
"""
import json
import re
from pathlib import Path

import numpy as np

from . import recovar_results as rr
from ._atomic import atomic_path

__all__ = ['SEEDS', 'MEMORY_PLAN_JSON', 'command_entry', 'update_provenance',
           'read_provenance', 'summary_lines']

MEMORY_PLAN_JSON = '_diagnostics/memory_plan.json'
#: Random seeds fixed in RECOVAR 1.0.5's code (not options), by the command that uses them.
SEEDS = {
    'pipeline': {'half-set split (numpy, only without rlnRandomSubset or --halfsets)': 0,
                 'randomized SVD of the covariance columns': 0},
    'pipeline_with_outliers': {'half-set split': 0, 'randomized SVD': 0,
                               'outlier detectors (IsolationForest, EllipticEnvelope)': 42},
    'analyze': {'k-means (scikit-learn)': 0, 'UMAP': 42},
    'outlier_detection': {'outlier detectors (IsolationForest, EllipticEnvelope)': 42},
    'junk_particle_detection': {'k-means (scikit-learn)': 42, 'UMAP': 42},
    'reconstruct_from_external_embedding': {'half-set split (numpy)': 0},
}
_HALFSETS_LINE = re.compile(r'halfsets[^:]*:\s*(Using .*|.*[Ss]plit.*)$')
_BUDGET_LINE = re.compile(r'Using (\d+(?:\.\d+)?) GB .*for batching|budget set to '
                          r'(\d+(?:\.\d+)?) GB')


def _read_json(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _log_match(job_dir, pattern):
    """First match of ``pattern`` in the job's run.log (None when absent)."""
    path = Path(job_dir) / rr.RUN_LOG
    if not path.is_file():
        return None
    with open(path, errors='replace') as fh:
        for line in fh:
            match = pattern.search(line.rstrip())
            if match:
                return match
    return None


def principal_components(pipeline_dir):
    """``{'computed': n, 'kept': m}`` of a pipeline folder ({} when not readable)."""
    try:
        params = rr.read_params(pipeline_dir)
    except rr.RecovarResultError:
        return {}
    out = {}
    options = params.get('covariance_options') or {}
    if 'n_pcs_to_compute' in options:
        out['computed'] = int(options['n_pcs_to_compute'])
    if 's' in params:
        out['kept'] = int(np.asarray(params['s']).size)
    return out


def memory_budget(job_dir):
    """RECOVAR's memory plan of the job: budget (GB), its source, batch sizes ({} if none)."""
    plan = _read_json(Path(job_dir) / MEMORY_PLAN_JSON)
    if plan:
        budget = plan.get('budget', {})
        return {'budget_gb': budget.get('effective_budget_gb'),
                'budget_source': budget.get('source'), 'requested_gb': budget.get('requested_gb'),
                'backend': budget.get('backend'),
                'n_pcs_planned': plan.get('n_pcs_to_compute'),
                'batch_sizes': {k: plan.get('%s_batch_size' % k)
                                for k in ('image', 'volume', 'column')}}
    match = _log_match(job_dir, _BUDGET_LINE)
    if match:
        return {'budget_gb': float(match.group(1) or match.group(2)), 'budget_source': 'run.log'}
    return {}


def command_entry(command, job_dir, record=None, plugin_version=None, pipeline_dir=None,
                  memory_plan=None):
    """Provenance of one RECOVAR command.

    Parameters
    ----------
    command : str
    job_dir : str or os.PathLike
        The command's output folder.
    record : dict, optional
        The launcher's record (its ``--record`` file).
    plugin_version : str, optional
    pipeline_dir : str or os.PathLike, optional
        The pipeline folder whose principal components the command used (the job folder for
        the pipeline itself).
    memory_plan : dict, optional
        The plugin's estimate and the options it added (see ``recovar_base``).

    Returns
    -------
    dict
        JSON-serialisable.
    """
    record = record or {}
    job = _read_json(Path(job_dir) / rr.JOB_JSON) or {}
    versions = dict(record.get('versions') or {})
    versions.setdefault('recovar', job.get('recovar_version'))
    versions.setdefault('jax', (job.get('environment') or {}).get('jax_version'))
    versions['scipion-reciprocal'] = plugin_version
    halfsets = _log_match(job_dir, _HALFSETS_LINE)
    entry = {
        'command': command,
        'folder': str(job_dir),
        'arguments': record.get('arguments'),
        'status': job.get('status'),
        'timing': job.get('timing'),
        'versions': versions,
        'jax_backend': record.get('jax_backend'),
        'devices': record.get('devices'),
        'cpu_correction': record.get('correction'),
        'principal_components': principal_components(pipeline_dir or job_dir),
        'seeds': SEEDS.get(command, {}),
        'half_sets': halfsets.group(1) if halfsets else None,
        'memory': {**memory_budget(job_dir), 'peak_rss_gb': record.get('peak_rss_gb'),
                   'cpu_seconds': record.get('cpu_seconds'),
                   **({'plan': memory_plan} if memory_plan else {})},
    }
    return entry


def read_provenance(path):
    """The provenance file as a dict (``{'runs': []}`` when absent or unreadable)."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get('runs'), list):
        return {'runs': []}
    return data


def update_provenance(path, entry):
    """Add ``entry`` to the provenance file, replacing an earlier entry of the same folder."""
    data = read_provenance(path)
    data['runs'] = [e for e in data['runs'] if e.get('folder') != entry['folder']] + [entry]
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=1, default=str) + '\n', encoding='utf-8')
    return data


def summary_lines(data):
    """One line per command for a protocol's summary."""
    lines = []
    for run in data.get('runs', []):
        versions = run.get('versions') or {}
        correction = run.get('cpu_correction') or {}
        pcs = run.get('principal_components') or {}
        memory = run.get('memory') or {}
        parts = ['RECOVAR %s %s (JAX %s, %s)' % (versions.get('recovar'), run['command'],
                                                versions.get('jax'), run.get('jax_backend'))]
        if pcs:
            parts.append('principal components: %s computed, %s kept'
                         % (pcs.get('computed', '?'), pcs.get('kept', '?')))
        if memory.get('budget_gb') is not None:
            parts.append('memory budget %s GB' % memory['budget_gb'])
        if memory.get('peak_rss_gb') is not None:
            parts.append('peak memory %.1f GB' % memory['peak_rss_gb'])
        added = (memory.get('plan') or {}).get('added_options')
        if added:
            parts.append('memory options added: %s' % ' '.join(added))
        parts.append('CPU correction: %s' % _correction_text(correction))
        seeds = run.get('seeds') or {}
        if seeds:
            parts.append('seeds: %s' % ', '.join('%s %s' % (k.split(' (')[0], v)
                                                 for k, v in seeds.items()))
        lines.append('; '.join(parts) + '.')
    return lines


def _correction_text(correction):
    status = correction.get('status')
    if status == 'installed':
        calls = correction.get('corrected_calls', 0)
        return ('applied (%d back-projections at x%s)' % (
            calls, ','.join(map(str, correction.get('upsampling_factors') or [])))
            if calls else 'installed, not needed (no upsampled back-projection on the JAX path)')
    if status:
        return '%s (%s)' % (status, correction.get('reason', ''))
    return 'unknown'
