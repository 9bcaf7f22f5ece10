"""Classification jobs in a cryoSPARC project folder: which files hold their particles.

A cryoSPARC project folder (``P12``, or the folder it was exported to) holds one folder per
job (``J30``). Every job folder has ``job.json`` (the job's document: ``type``, ``parents``
and ``output_results``, each result with its ``group_name``, ``passthrough`` flag and
``metafiles``, paths relative to the project folder, the last one being the final version).
The final particles of a classification with their classes are the output group
``particles_all_classes`` (heterogeneous refinement ``hetero_refine``, 3D classification
``class_3D``, multi-class ab-initio ``homo_abinit``) or ``particles`` (2D classification
``class_2D``): its non-passthrough results are in the last iteration's
``J30_<iteration>_particles.cs`` (``alignments3D/class`` or ``alignments2D/class`` with
``class_posterior``), its passthrough results (``blob``, ``ctf``, ``location`` inherited from
the inputs) in ``J30_passthrough_particles_all_classes.cs`` (2D: ``..._particles.cs``).

Without ``job.json`` (a folder copied by hand) the same files are found by name: the
highest-numbered ``J30_NNN_particles.cs`` and the passthrough file; cryoSPARC before 4.0
prefixed every name with ``cryosparc_P12_``. Class maps: ``J30_class_KK_NNNNN_volume.mrc``
(3D, class ``KK`` 0-based) or ``J30_NNN_class_averages.mrc`` (2D, one image per class).
"""
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from .cryosparc import CsError, CsParticles

__all__ = ['CsJob', 'CsJobError', 'JOB_JSON', 'parse_cs_job_list', 'find_cs_job',
           'find_cs_jobs', 'project_of_file', 'open_cs_file', 'cs_file_name', 'job_of_file',
           'ALL_CLASSES_GROUP', 'PARTICLES_GROUP']

JOB_JSON = 'job.json'
ALL_CLASSES_GROUP = 'particles_all_classes'
PARTICLES_GROUP = 'particles'
#: Job types whose classes are 2D.
TYPES_2D = ('class_2D', 'class_2D_new', 'class_2D_streaming')
_JOB = re.compile(r'^J(\d+)$')
_TOKEN = re.compile(r'^(?:.*/)?J?(\d+)/?$', re.IGNORECASE)


class CsJobError(CsError):
    """A cryoSPARC job folder that is missing or lacks the files asked for."""


def _prefix(uid):
    return rf'^(?:cryosparc_P\d+_)?{uid}_'


@dataclass
class CsJob:
    """A cryoSPARC classification job and the files of its final particles.

    Attributes
    ----------
    uid : str
        ``'J30'``.
    folder, project_dir : pathlib.Path
        The job folder and the project folder (its parent; ``blob/path`` is relative to it).
    job_type : str
        cryoSPARC's job type (``'hetero_refine'``, ``'class_3D'``, ``'class_2D'``...), or
        ``''`` when there is no ``job.json``.
    particles : pathlib.Path
        The file with the classes (the main file).
    passthrough : list of pathlib.Path
        Files with the particles' other fields.
    found_by : str
        ``'job.json'`` or ``'file names'``.
    """

    uid: str
    folder: Path
    project_dir: Path
    job_type: str
    particles: Path
    passthrough: list = field(default_factory=list)
    found_by: str = 'job.json'

    @property
    def kind(self):
        """``'2D'`` for 2D classification job types, else ``'3D'`` (None when unknown)."""
        if not self.job_type:
            return None
        return '2D' if self.job_type in TYPES_2D else '3D'

    def open(self):
        """The job's particles (:class:`~.cryosparc.CsParticles`)."""
        return CsParticles(self.particles, self.passthrough, project_dir=self.project_dir)

    def class_maps(self):
        """``{class number (1-based): (path, image index or None)}`` of the last iteration's
        class volumes (3D) or class averages (2D, 0-based image in the stack)."""
        volumes = {}
        pattern = re.compile(_prefix(self.uid) + r'class_(\d+)_(\d+)_volume\.mrc$')
        for path in self.folder.iterdir():
            m = pattern.match(path.name)
            if m:
                cls, it = int(m.group(1)) + 1, int(m.group(2))
                if cls not in volumes or it > volumes[cls][0]:
                    volumes[cls] = (it, path)
        if volumes:
            return {cls: (path, None) for cls, (_, path) in sorted(volumes.items())}
        averages = _last_numbered(self.folder, re.compile(_prefix(self.uid) +
                                                          r'(\d+)_class_averages\.mrc$'))
        if averages is None:
            return {}
        import mrcfile
        with mrcfile.open(averages, header_only=True, permissive=True) as mrc:
            n = int(mrc.header.nz)
        return {k + 1: (averages, k) for k in range(n)}


def parse_cs_job_list(text):
    """``'J30,J31'``, ``'30 31'``, ``'P12/J30'`` -> ``['J30', 'J31']``.

    Raises
    ------
    ValueError
        If a token is not a job (``J30`` or ``30``) or the list is empty.
    """
    if not isinstance(text, str):
        text = ' '.join(str(t) for t in text)
    tokens = [t for t in re.split(r'[,\s;]+', text.strip()) if t]
    if not tokens:
        raise ValueError('no cryoSPARC job given (write jobs like "J30,J31")')
    jobs = []
    for token in tokens:
        m = _TOKEN.match(token.replace('\\', '/'))
        if m is None:
            raise ValueError(f'{token!r} is not a cryoSPARC job (J30, or 30)')
        jobs.append(f'J{int(m.group(1))}')
    return jobs


def find_cs_jobs(project_dir, jobs):
    """:func:`find_cs_job` for every job of a list (see :func:`parse_cs_job_list`)."""
    return [find_cs_job(project_dir, uid) for uid in parse_cs_job_list(jobs)]


def find_cs_job(project_dir, uid):
    """Locate a classification job's final particle files.

    Raises
    ------
    CsJobError
        If the folder is missing, or neither ``job.json`` nor the file names show a
        particle output with classes.
    """
    project_dir = Path(project_dir)
    if not project_dir.is_dir():
        raise CsJobError(project_dir, 'cryoSPARC project folder not found')
    uid = parse_cs_job_list(uid)[0]
    folder = project_dir / uid
    if not folder.is_dir():
        raise CsJobError(folder, f'job {uid}: folder not found in the cryoSPARC project')
    document = folder / JOB_JSON
    if document.is_file():
        return _from_document(project_dir, folder, uid, document)
    return _from_names(project_dir, folder, uid)


def _from_document(project_dir, folder, uid, document):
    try:
        job = json.loads(document.read_text())
        results = job['output_results']
        job_type = str(job.get('type', ''))
    except (ValueError, KeyError, TypeError) as exc:
        raise CsJobError(document, f'unreadable job document ({exc})') from None
    groups = {r.get('group_name') for r in results}
    group = next((g for g in (ALL_CLASSES_GROUP, PARTICLES_GROUP) if g in groups), None)
    if group is None:
        raise CsJobError(document, f'job {uid} ({job_type}) has no particle output '
                                   f'("{ALL_CLASSES_GROUP}" or "{PARTICLES_GROUP}"): not a '
                                   f'classification')
    main, passthrough = [], []
    for result in results:
        if result.get('group_name') != group or not result.get('metafiles'):
            continue
        path = project_dir / result['metafiles'][-1]
        target = passthrough if result.get('passthrough') else main
        if path not in target:
            target.append(path)
    passthrough = [p for p in passthrough if p not in main]
    for path in main + passthrough:
        if not path.is_file():
            raise CsJobError(path, f'job {uid}: file named in {JOB_JSON} not found')
    if not main:
        raise CsJobError(document, f'job {uid}: output "{group}" lists no file')
    # the file with the classes is the main one; other files of the job join it by uid
    main.sort(key=lambda p: not re.search(r'_\d+_particles\.cs$', p.name))
    return CsJob(uid, folder, project_dir, job_type, main[0], main[1:] + passthrough,
                 'job.json')


def _from_names(project_dir, folder, uid):
    main = _last_numbered(folder, re.compile(_prefix(uid) + r'(\d+)_particles\.cs$'))
    if main is None:
        raise CsJobError(folder, f'job {uid}: no {JOB_JSON} and no {uid}_NNN_particles.cs '
                                 f'(is it a 2D/3D classification or heterogeneous '
                                 f'refinement that has finished?)')
    passthrough = sorted(p for p in folder.iterdir() if re.match(
        _prefix(uid) + r'passthrough_particles(?:_all_classes)?\.cs$', p.name))
    return CsJob(uid, folder, project_dir, '', main, passthrough, 'file names')


def _last_numbered(folder, pattern):
    """The file of ``folder`` whose name matches ``pattern`` with the highest number."""
    best = None
    for path in folder.iterdir():
        m = pattern.match(path.name)
        if m and (best is None or int(m.group(1)) > best[0]):
            best = (int(m.group(1)), path)
    return None if best is None else best[1]


def project_of_file(path):
    """The cryoSPARC project folder of a ``.cs`` file inside a job folder (the parent of
    the nearest ``J<n>`` folder above it), or None."""
    for parent in Path(path).resolve().parents:
        if _JOB.match(parent.name):
            return parent.parent
    return None


def job_of_file(path):
    """The job whose main particle file ``path`` is (a :class:`CsJob`), or None."""
    project = project_of_file(path)
    if project is None:
        return None
    try:
        job = find_cs_job(project, Path(path).resolve().parent.name)
    except (CsJobError, ValueError):
        return None
    return job if job.particles.resolve() == Path(path).resolve() else None


def open_cs_file(path):
    """The particles of a ``.cs`` file: joined with its job's passthrough files when it is
    the main particle file of a job folder, else the file alone (paths relative to the
    project folder above it, when there is one)."""
    job = job_of_file(path)
    if job is not None:
        return job.open()
    return CsParticles(path, project_dir=project_of_file(path))


def cs_file_name(path):
    """A name for a ``.cs`` file: its job (``J30``) when the name has one, else its stem."""
    m = re.search(r'(?:^|_)(J\d+)_', Path(path).name)
    return m.group(1) if m else Path(path).stem
