"""The demo: a Scipion project built from simulated data that runs every protocol.

``run_demo`` writes a simulated RELION project (see :mod:`scipion_reciprocal.simulate.dataset`),
creates a Scipion project (local SQLite, under SCIPION_USER_DATA/projects), launches the
protocols one after the other through Scipion's launch path, and returns what it made.  Each
capability of the plugin adds its protocols here.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import scipion_setup
from .wiring import connect, connect_many, relion_particles_import

DEMO_PROJECT = "reciprocal_demo"
#: Outputs of the import protocol holding the demo's three Class3D jobs.
_CLASS3D_OUTPUTS = ["outputClasses_job085", "outputClasses_job086", "outputClasses_job087"]


class DemoError(RuntimeError):
    """A demo protocol failed; the message holds the protocol's log tail."""


@dataclass
class DemoResult:
    project_path: Path
    data_dir: Path
    dataset: object
    protocols: dict = field(default_factory=dict)   # label -> launched protocol
    results: list = field(default_factory=list)     # (label, where the result is)


def run_demo(project_name=DEMO_PROJECT, data_dir=None, seed=0, backends=True, log=print):
    """Build the simulated data and the Scipion project, run every protocol, return a summary.

    Parameters
    ----------
    project_name : str
        Scipion project name; an existing project of that name is replaced.
    data_dir : path, optional
        Where the simulated RELION project is written (default: SCIPION_USER_DATA/<name>_data).
    backends : bool
        Also run the protocols that need the backend environments (skipped, with a message,
        when an environment is not installed).
    """
    scipion_setup.configure()
    from pyworkflow.project import Manager

    from ..simulate.dataset import build_demo_project

    data_dir = Path(data_dir or Path(os.environ["SCIPION_USER_DATA"]) / ("%s_data" % project_name))
    log("Simulating a RELION project in %s" % data_dir)
    # 12 micrographs give the particle classifier enough good and bad boxes to learn from.
    dataset = build_demo_project(data_dir / "relion", seed=seed, n_micrographs=12)

    manager = Manager()
    if manager.hasProject(project_name):
        manager.deleteProject(project_name)
    project = manager.createProject(project_name)
    os.chdir(project.getPath())
    result = DemoResult(Path(project.getPath()), data_dir, dataset)
    log("Scipion project %s in %s" % (project_name, project.getPath()))

    for stage in _STAGES:
        stage(project, result, backends, log)
    return result


def launch(project, protocol, result, label, log, where=None):
    """Launch ``protocol`` and wait; raise :class:`DemoError` with its log tail on failure."""
    protocol.setObjLabel(label)
    log("Running '%s' ..." % label)
    project.launchProtocol(protocol, wait=True)
    protocol = project.getProtocol(protocol.getObjId())
    if not protocol.isFinished():
        tail = "".join(_log_tail(protocol))
        raise DemoError("demo protocol '%s' %s:\n%s" % (label, protocol.getStatusMessage(), tail))
    result.protocols[label] = protocol
    result.results.append((label, where(protocol) if where else protocol.getWorkingDir()))
    return protocol


def _log_tail(protocol, lines=30):
    path = protocol.getStdoutLog()
    if not path or not os.path.exists(path):
        return []
    with open(path, errors="replace") as handle:
        return handle.readlines()[-lines:]


# --------------------------------------------------------------------------- stages
def _import_data(project, result, backends, log):
    from pwem.protocols import ProtImportVolumes

    dataset = result.dataset
    pixel_size = float(dataset.particles.pixel_size)
    _import_particles(project, result, dataset.particles_star, "import simulated particles", log)
    maps = project.newProtocol(
        ProtImportVolumes, filesPath=str(dataset.map_paths[0].parent),
        filesPattern="state_*.mrc", samplingRate=pixel_size)
    launch(project, maps, result, "import true maps", log)


def _export_star(project, result, backends, log):
    from ..protocols import ProtExportParticlesStar

    particles = result.protocols["import simulated particles"]
    export = project.newProtocol(ProtExportParticlesStar)
    connect(export.inputParticles, particles, "outputParticles")
    launch(project, export, result, "export particles to RELION", log,
           where=lambda p: p.starFile.get())


def _reciprocal_analysis(project, result, backends, log):
    from ..protocols import ProtImportRelionClassifications, ProtReciprocalAnalysis

    jobs = " ".join(sorted(result.dataset.class3d_jobs)) + " Class2D/job008"
    imported = project.newProtocol(ProtImportRelionClassifications,
                                   relionDir=str(result.dataset.project_dir), jobs=jobs)
    launch(project, imported, result, "import RELION classifications", log)
    analysis = project.newProtocol(ProtReciprocalAnalysis)
    connect_many(analysis.inputClassifications, imported, _CLASS3D_OUTPUTS)
    launch(project, analysis, result, "reciprocal class analysis", log,
           where=lambda p: p._getExtraPath("results"))


def _cryosparc(project, result, backends, log):
    """A cryoSPARC project of the demo's particles (a heterogeneous refinement of
    particles re-extracted from cryoSPARC's own micrographs, with job085's classes and class
    volumes; a 2D classification with job008's classes and class averages), imported and
    compared with RELION's job086 by micrograph + coordinates."""
    from ..core.relion_jobs import class_maps
    from ..formats.mrc import read_images
    from ..formats.star import read_particles_star
    from ..protocols import ProtImportCryosparcClassifications, ProtReciprocalAnalysis
    from ..simulate.cryosparc import EXTRACT_JOB, IMPORT_JOB, JobSpec, write_cryosparc_project
    from ..simulate.relion_jobs import class_average_maps

    dataset = result.dataset
    star = read_particles_star(dataset.particles_star)
    labels3d = dataset.labels["Class3D/job085"]
    averages = class_maps(dataset.project_dir / "Class2D/job008")
    folder = result.data_dir / "cryosparc" / "P12"
    log("Simulating a cryoSPARC project of the same particles in %s" % folder)
    write_cryosparc_project(folder, dataset.project_dir, star.particles, star.optics, {
        "J30": JobSpec("hetero_refine", labels3d, EXTRACT_JOB, class_maps=class_average_maps(
            dataset.maps, dataset.true_states, labels3d)),
        "J32": JobSpec("class_2D", dataset.labels["Class2D/job008"], IMPORT_JOB,
                       class_maps=read_images(averages["path"].iloc[0], averages["index"]))})
    imported = project.newProtocol(ProtImportCryosparcClassifications, cryosparcDir=str(folder),
                                   jobs="J30 J32")
    launch(project, imported, result, "import cryoSPARC classifications", log)
    analysis = project.newProtocol(ProtReciprocalAnalysis, matchKey=2)
    connect_many(analysis.inputClassifications, result.protocols["import RELION classifications"],
                 ["outputClasses_job086"])
    connect_many(analysis.inputClassifications, imported, ["outputClasses_J30"])
    launch(project, analysis, result, "reciprocal analysis, RELION vs cryoSPARC", log,
           where=lambda p: p._getExtraPath("results"))


def _map_clustering(project, result, backends, log):
    from ..protocols import ProtMapClustering

    imported = result.protocols["import RELION classifications"]
    clustering = project.newProtocol(ProtMapClustering, lowpass=12.0)
    connect_many(clustering.inputMaps, imported, _CLASS3D_OUTPUTS)
    launch(project, clustering, result, "map similarity clustering", log,
           where=lambda p: p._getExtraPath("results"))


def _import_particles(project, result, star, label, log):
    prot = relion_particles_import(project, star, result.dataset.particles.pixel_size)
    return launch(project, prot, result, label, log)


def _particle_classifier(project, result, backends, log):
    from pwem.protocols import ProtImportMicrographs

    from .. import Plugin
    from ..protocols import ProtClassifyParticles, ProtPickMicrographs, ProtTrainParticleClassifier

    errors = Plugin.validateBackend("classifier")
    if not backends or errors:
        log("Skipping the particle classifier: %s" % (errors[0] if errors else "--no-backends"))
        return
    dataset = result.dataset
    good = _import_particles(project, result, dataset.good_star, "import good particles", log)
    bad = _import_particles(project, result, dataset.bad_star, "import bad particles", log)
    train = project.newProtocol(ProtTrainParticleClassifier, box=32, epochs=30, patience=8)
    connect(train.goodParticles, good, "outputParticles")
    connect(train.badParticles, bad, "outputParticles")
    launch(project, train, result, "train particle classifier", log,
           where=lambda p: str(p.outputModel))
    picked = _import_particles(project, result, dataset.picked_star, "import picked boxes", log)
    classify = project.newProtocol(ProtClassifyParticles)
    connect(classify.inputParticles, picked, "outputParticles")
    connect(classify.inputModel, train, "outputModel")
    launch(project, classify, result, "classify particles", log,
           where=lambda p: p.summary()[0])
    micrographs = project.newProtocol(
        ProtImportMicrographs, filesPath=str(dataset.micrograph_paths[0].parent),
        filesPattern="*.mrc", samplingRate=float(dataset.particles.pixel_size),
        voltage=300.0, sphericalAberration=2.7, amplitudeContrast=0.1)
    launch(project, micrographs, result, "import micrographs", log)
    pick = project.newProtocol(ProtPickMicrographs)
    connect(pick.inputMicrographs, micrographs, "outputMicrographs")
    connect(pick.inputModel, train, "outputModel")
    launch(project, pick, result, "pick micrographs", log, where=lambda p: p.summary()[0])


def _check_backends(project, result, backends, log):
    from .. import Plugin
    from ..environments import BACKENDS
    from ..protocols import ProtBackendCheck
    from ..protocols.protocol_backend_check import BACKEND_NAMES

    if not backends:
        return
    for name in sorted(BACKENDS):
        errors = Plugin.validateBackend(name)
        if errors:
            log("Skipping the %s check: %s" % (name, errors[0]))
            continue
        check = project.newProtocol(ProtBackendCheck, backend=BACKEND_NAMES.index(name))
        launch(project, check, result, "check %s environment" % name, log,
               where=lambda p: p.summaryVar.get())


def _recovar(project, result, backends, log):
    from .demo_recovar import recovar_stage
    recovar_stage(project, result, backends, log, launch)


_STAGES = [_import_data, _export_star, _reciprocal_analysis, _cryosparc, _map_clustering,
           _particle_classifier, _recovar, _check_backends]
