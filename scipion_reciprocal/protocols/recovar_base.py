"""What the RECOVAR protocols share: conversion of the particles, checks and the command runner.

RECOVAR 1.0.5 runs in its own environment (``environments.RECOVAR``) through the plugin's
launcher ``backends/recovar_launcher.py`` (which corrects RECOVAR 1.0.5's CPU back-projection
and records versions and peak memory); every command writes ``job.json`` and ``run.log`` in its
output folder, which :func:`formats.recovar_results.check_job` reads to report failures. Before
a heavy command the protocol estimates its memory (``core.recovar_memory``) and, with the
memory options on 'automatic', adds what makes it fit. Each command's provenance goes to
``extra/provenance.json``. File names: ``formats.recovar_files``.
"""
import json
import os
import shutil
from contextlib import contextmanager

import numpy as np
import pwem.objects as emobj
from pyworkflow.object import CsvList
from pyworkflow.protocol import params

from .. import __version__
from ..constants import GPU_MEMORY_VAR, HOST_MEMORY_VAR
from ..convert.particles import (ConversionError, missing_3d_alignment_error,
                                 missing_ctf_error, particles_table)
from ..convert.set_sql import add_item_attributes, write_item_subset
from ..core import recovar_checks as checks
from ..core import recovar_memory as mem
from ..environments import cuda_available, gpu_free_memory_gb
from ..formats import cryodrgn
from ..formats import recovar_files as rf
from ..formats import recovar_provenance as provenance
from ..formats import recovar_results as rr
from ..formats._atomic import atomic_folder
from ..formats.chimerax import write_volume_series
from ..formats.relion import merge_optics
from ..formats.result_folder import ResultFolder
from .backend_base import ProtBackend
from .inputs import describePointer

LAUNCHER = "recovar_launcher.py"
MEMORY_CHOICES = ["automatic", "normal", "low (halve batches)", "very low (quarter batches)"]
MEMORY_AUTOMATIC = 0
#: The memory option of each choice after 'automatic' (core.recovar_memory names).
MEMORY_LEVELS = [None] + list(mem.MEMORY_OPTIONS)
#: What to change for each term of the memory estimate (for messages).
MEMORY_TERM_ADVICE = {
    "images": "Use fewer particles or a machine with more host memory ('Lazy loading?' did "
              "not suffice)",
    "columns": "Lower 'Downsample to (px)' in the pipeline",
    "mean": "Lower 'Downsample to (px)' in the pipeline",
    "basis": "Lower 'Downsample to (px)' in the pipeline",
    "batches": "Lower 'Memory budget (GB)'",
    "kernel": "Lower 'Kernel bins' (RECOVAR --n-bins), or the pipeline's box",
    "runtime": "Use a machine with more free memory"}


class RecovarStepError(RuntimeError):
    """A RECOVAR command failed; the message holds its log tail and what to try."""


class ProtRecovarBase(ProtBackend):
    """Base of the RECOVAR protocols (JAX backend, RECOVAR 1.0.5)."""
    _backendName = "recovar"
    #: Whether the protocol's RECOVAR command takes --lazy.
    _lazyOption = True

    # --------------------------- DEFINE param functions ---------------------
    def _defineExtraParams(self, form, default=""):
        form.addParam("extraParams", params.StringParam, default=default, expertLevel=params.LEVEL_ADVANCED,
                      label="Additional RECOVAR arguments",
                      help="Passed verbatim to the RECOVAR command (see `recovar <command> "
                           "--help` in its environment), e.g. `--gpu-budget-gb 8 --lazy`.")

    def _definePipelineParam(self, form):
        form.addParam("inputPipeline", params.PointerParam, pointerClass="ProtRecovarPipeline",
                      label="RECOVAR pipeline",
                      help="A finished 'recovar pipeline' run: its latent spaces, covariance and "
                           "particles are used.")

    def _defineVolumeParams(self, form):
        """Options of RECOVAR's kernel-regression volumes (analyze, states, trajectories)."""
        group = form.addGroup("Volumes", expertLevel=params.LEVEL_ADVANCED)
        group.addParam("bfactor", params.FloatParam, default=0, label="B-factor (A^2)",
                       help="Sharpening B-factor applied to the kernel-regression volumes "
                            "(RECOVAR --Bfactor); the consensus map's B-factor is a good guess.")
        group.addParam("nBins", params.IntParam, default=50, label="Kernel bins",
                       help="Number of kernel-regression bins (RECOVAR --n-bins): more bins "
                            "give finer heterogeneity, fewer average more particles and run "
                            "faster. Memory grows with the bins (about bins x box^3 x 32 "
                            "bytes).")
        group.addParam("maskradFraction", params.FloatParam, default=20,
                       label="Local mask radius fraction",
                       help="Radius of the local masks of kernel regression = box / this value, "
                            "in px (RECOVAR --maskrad-fraction); 20 gives 6.4 px at 128 px.")
        group.addParam("nMinParticles", params.IntParam, default=checks.DEFAULT_MIN_PARTICLES,
                       label="Minimum particles per bin",
                       help="Fewest particles a kernel-regression bin averages (RECOVAR "
                            "--n-min-particles). RECOVAR 1.0.5 crashes when a half set holds "
                            "exactly this many particles; the protocol then uses one less and "
                            "says so in its log.")

    def _defineMemoryParams(self, form):
        """Memory options of RECOVAR's heavy commands (estimated and planned by the plugin)."""
        group = form.addGroup("Memory", expertLevel=params.LEVEL_ADVANCED)
        group.addParam("memoryOption", params.EnumParam, choices=MEMORY_CHOICES,
                       default=MEMORY_AUTOMATIC, label="Memory options",
                       help="automatic: before the command runs, the plugin estimates its GPU "
                            "and host memory from the box, the particles and the options, "
                            "compares with the free memory of the chosen GPUs (nvidia-smi) and "
                            "of this machine, and adds what makes the run fit, least costly "
                            "first: --lazy, a smaller --gpu-budget-gb, --low-memory-option "
                            "(fewer covariance columns, halved batches), "
                            "--very-low-memory-option (30 principal components, quartered "
                            "batches), --downsample (pipeline). The log and provenance.json "
                            "say what was added. normal / low / very low: RECOVAR's options "
                            "as chosen, nothing added.")
        if self._lazyOption:
            group.addParam("lazy", params.BooleanParam, default=False, label="Lazy loading?",
                           help="Read images from disk per batch instead of holding the stack "
                                "in memory (RECOVAR --lazy): N x box^2 x 4 bytes less host "
                                "memory, slower.")
        group.addParam("gpuBudget", params.FloatParam, default=0, label="Memory budget (GB)",
                       help="RECOVAR --gpu-budget-gb, the memory its batch sizes aim at; 0 keeps "
                            "RECOVAR's default (what JAX reports: 75 % of the GPU; on a CPU "
                            "half the free RAM). A smaller budget is slower, not worse.")

    def volumeArguments(self, halfSizes=None):
        """RECOVAR options for the kernel-regression volumes from the form.

        ``halfSizes``: particles in each half set, to keep ``--n-min-particles`` off RECOVAR
        1.0.5's IndexError (see :func:`core.recovar_checks.safe_min_particles`).
        """
        nMin, reason = checks.safe_min_particles(self.nMinParticles.get(), halfSizes or [])
        if reason:
            self.info("Minimum particles per bin: %s." % reason)
        return ["--Bfactor", self.bfactor.get(), "--n-bins", self.nBins.get(),
                "--maskrad-fraction", self.maskradFraction.get(), "--n-min-particles", nMin]

    # --------------------------- STEPS functions ----------------------------
    def convertParticlesStep(self, particlesPointer):
        """Write RECOVAR's inputs (linked stacks, poses.pkl, ctf.pkl, id map) in extra/inputs.

        The folder is written under a temporary name and renamed when complete; protocols add
        their own inputs (masks, embeddings) in :meth:`writeExtraInputs`.
        """
        particles = particlesPointer.get()
        try:
            table, optics = particles_table(particles)
        except ConversionError as exc:
            raise ConversionError("%s: %s" % (describePointer(particlesPointer), exc)) from None
        inputs = self.writeInputs(particles, table, merge_optics(table, optics))
        self.info("Wrote RECOVAR inputs for %d particles (%d px, %.3f A/px) in %s"
                  % (inputs.n_particles, inputs.box, inputs.pixel_size,
                     self._getExtraPath(rf.INPUTS)))

    def writeInputs(self, particles, table, rows, tiltSeries=False):
        """Write the inputs folder from the particle ``table`` and its ``rows`` (merged with
        the optics): RECOVAR's files, then :meth:`writeExtraInputs`, renamed when complete.
        ``tiltSeries``: rows are tilt images (tilt columns and the tilt-unit map written)."""
        with atomic_folder(self._getExtraPath(rf.INPUTS)) as folder:
            inputs = cryodrgn.write_recovar_inputs(
                rows, folder, particles.getSamplingRate(), particles.getXDim(),
                ids=table["scipionId"].to_numpy(np.int64), image_root=os.getcwd(),
                tilt_series=tiltSeries)
            self.writeExtraInputs(str(folder))
        return inputs

    def writeExtraInputs(self, folder):
        """Write protocol-specific inputs into the inputs folder being built (``folder``)."""

    def runRecovar(self, command, arguments, outputDir, outputFlag="-o", pipelineDir=None):
        """Run ``recovar <command> <arguments> -o outputDir`` on the GPUs Scipion assigns.

        The command runs through the plugin's launcher (CPU back-projection correction,
        record of versions and peak memory). ``outputFlag``: the command's output option
        (``--output_dir`` for the density). ``pipelineDir``: the pipeline folder the command
        reads (for the provenance). ``outputDir`` is removed first, so a rerun starts clean.

        The step gets the GPUs Scipion assigns (``%(GPU)s``, see ``ProtBackend.runBackend``)
        when the form asks for GPUs and the machine has one (``environments.cuda_available``);
        otherwise it runs on the CPU with every GPU hidden and ``--accept-cpu`` for the
        pipeline. The memory options of :meth:`memoryArguments` (planned for the assigned
        GPUs) are added. A failure raises :class:`RecovarStepError` with RECOVAR's log tail
        and the low-memory options.
        """
        useGpu = bool(self._visibleGpus()) and cuda_available()
        gpus = ",".join(str(g) for g in self.assignedGpus()) if useGpu else ""
        memoryArgs, memoryPlan = self.memoryArguments(command, gpus)
        args = list(arguments) + memoryArgs + [outputFlag, outputDir]
        if command in mem.PIPELINE_COMMANDS and not useGpu:
            args.append("--accept-cpu")
        extra = self.getAttributeValue("extraParams", "") or ""
        line = " ".join(str(a) for a in args) + ((" " + extra) if extra.strip() else "")
        record = self._getExtraPath(rf.run_record(command))
        for stale in (outputDir, record):
            if os.path.isdir(stale):
                shutil.rmtree(stale)
            elif os.path.exists(stale):
                os.remove(stale)
        os.makedirs(os.path.dirname(record), exist_ok=True)
        self.info("recovar %s on %s" % (command, ("the assigned GPU(s) %s" % gpus) if useGpu
                                        else "the CPU"))
        try:
            self.runBackend("%s --record %s %s" % (self.backendProgram(LAUNCHER), record, command),
                            line, useGpu=useGpu)
        except Exception as exc:
            try:
                self._writeProvenance(command, outputDir, record, pipelineDir, memoryPlan)
            except Exception as unwritten:  # never hide RECOVAR's own failure
                self.info("provenance.json not updated: %s" % unwritten)
            raise RecovarStepError(self._failureMessage(command, outputDir, exc)) from None
        self._writeProvenance(command, outputDir, record, pipelineDir, memoryPlan)
        rr.check_job(outputDir, command)

    def _writeProvenance(self, command, outputDir, record, pipelineDir, memoryPlan):
        try:
            with open(record) as handle:
                launched = json.load(handle)
        except (OSError, ValueError):
            launched = None
        entry = provenance.command_entry(command, outputDir, launched, __version__,
                                         pipelineDir, memoryPlan)
        provenance.update_provenance(self._getExtraPath(rf.PROVENANCE), entry)

    def _failureMessage(self, command, outputDir, exc):
        """RECOVAR's own account (job status, log tail) plus what to try.

        Python tracebacks (e.g. JAX's RESOURCE_EXHAUSTED) go to the protocol's own logs, not
        to RECOVAR's run.log: the message leads with their out-of-memory line (and the
        low-memory options), or else with the exception that ended RECOVAR.
        """
        try:
            rr.check_job(outputDir, command)
        except rr.RecovarResultError as failed:
            message = str(failed)
        else:
            message = "RECOVAR %s failed (%s)" % (command, exc)
        logs = "".join(_tail(p, 60) for p in self.getLogPaths()[:2])
        oom = rr.memory_error_line(logs)
        error = None if oom else rr.exception_line(logs)
        if oom:
            message = "RECOVAR %s ran out of memory: %s\n%s" % (command, oom, message)
        elif error:
            message = "RECOVAR %s failed with %s\n%s" % (command, error, message)
        if not error and rr.LOW_MEMORY_HINT not in message:
            message += "\n%s." % rr.LOW_MEMORY_HINT
        return message

    # --------------------------- memory planning ----------------------------
    def memoryRequest(self):
        """What the protocol's heavy RECOVAR command will process (``MemoryRequest``), or
        None when the protocol has nothing to plan (light commands)."""
        return None

    def formMemoryOptions(self, command):
        """The memory options the form states for ``command`` (a ``MemoryRequest`` of no
        size), or None for a protocol without them."""
        if not self.hasAttribute("memoryOption"):
            return None
        return self.formMemoryRequest(command, 0, 0)

    def formMemoryRequest(self, command, box, nParticles, kernelVolumes=True):
        """A :class:`core.recovar_memory.MemoryRequest` with the form's memory options."""
        level = self.getAttributeValue("memoryOption", MEMORY_AUTOMATIC)
        return mem.MemoryRequest(
            command=command, box=int(box), n_particles=int(nParticles),
            kernel_volumes=kernelVolumes, n_bins=int(self.getAttributeValue("nBins", 50)),
            memory=MEMORY_LEVELS[level] or "normal",
            lazy=bool(self.getAttributeValue("lazy", False)),
            budget_gb=float(self.getAttributeValue("gpuBudget", 0) or 0) or None)

    def machineMemory(self, gpus=None):
        """``(free GB of the smallest chosen GPU or None, free host GB, note or None)``.

        ``$SCIPION_RECIPROCAL_HOST_MEMORY_GB`` / ``$SCIPION_RECIPROCAL_GPU_MEMORY_GB`` replace
        what this machine has (to plan for a cluster node from the submit host)."""
        import psutil
        host = _memoryVar(HOST_MEMORY_VAR) or psutil.virtual_memory().available / mem.GB
        gpus = self._visibleGpus() if gpus is None else gpus
        if not gpus:
            return None, host, None
        gpu = _memoryVar(GPU_MEMORY_VAR)
        if gpu:
            return gpu, host, "GPU memory from $%s" % GPU_MEMORY_VAR
        free = gpu_free_memory_gb([int(g) for g in str(gpus).split(",") if g.strip().isdigit()])
        if free is None:
            return mem.GPU_UNKNOWN, host, ("nvidia-smi is not available here: GPU memory not "
                                           "compared, host memory only")
        return min(free.values()), host, None

    def memoryPlan(self, gpus=None):
        """``(MemoryPlan, note)`` for this machine, or ``(None, None)`` with nothing to plan.
        Raises :class:`core.recovar_memory.MemoryPlanError` when nothing fits."""
        request = self.memoryRequest()
        if request is None:
            return None, None
        gpu, host, note = self.machineMemory(gpus)
        return mem.plan(request, gpu, host), note

    def memoryArguments(self, command, gpus):
        """``(RECOVAR options, plan dict for the provenance)`` for ``command``: the form's
        memory options, plus what the plan adds when they are on 'automatic'."""
        request = self.memoryRequest()
        if request is None or request.command != command:
            form = self.formMemoryOptions(command)
            return (form.flags() if form is not None else []), None
        if self.getAttributeValue("memoryOption", MEMORY_AUTOMATIC) != MEMORY_AUTOMATIC:
            return request.flags(), {"automatic": False, "estimate": mem.estimate(
                request, *self.machineMemory(gpus)[:2]).describe()}
        try:
            plan, note = self.memoryPlan(gpus)
        except mem.MemoryPlanError as exc:
            raise RecovarStepError(str(exc)) from None
        record = {"automatic": True, "estimate": plan.asked.describe(),
                  "machine": plan.machine(), "added_options": plan.added_flags(),
                  "estimate_with_options": plan.fitted.describe(), "note": note}
        self.info("Memory: %s; %s%s" % (plan.asked.describe(), plan.machine(),
                                        "; %s" % note if note else ""))
        if not plan.fits:
            self.info("Memory options added so that the run fits: %s (%s)"
                      % (" ".join(plan.added_flags()), plan.fitted.describe()))
        return plan.request.flags(), record

    def validateMemory(self):
        """Errors when the run cannot fit this machine even with every memory option."""
        try:
            self.memoryPlan()
        except mem.MemoryPlanError as exc:
            return ["%s. %s." % (exc, MEMORY_TERM_ADVICE[exc.largest_term])]
        except Exception:  # inputs not ready yet: other checks say why
            return []
        return []

    def memoryWarnings(self):
        """Warnings naming the options that make the run fit when it does not as asked."""
        try:
            plan, note = self.memoryPlan()
        except Exception:  # refused by validateMemory, or inputs not ready
            return []
        if plan is None:
            return []
        warnings = ["Memory: %s; %s%s." % (plan.asked.describe(), plan.machine(),
                                           " (%s)" % note if note else "")]
        if not plan.fits:
            automatic = self.getAttributeValue("memoryOption") == MEMORY_AUTOMATIC
            warnings.append("The run does not fit as asked; %s %s (%s)."
                            % ("'Memory options: automatic' will add" if automatic else
                               "it fits with", " ".join(plan.added_flags()),
                               plan.fitted.describe()))
        return warnings

    # --------------------------- INFO functions -----------------------------
    def validateParticles(self, pointer):
        """Errors for particles RECOVAR cannot use (CTF, 3D alignment, even box, pixel size)."""
        particles = pointer.get()
        if particles is None:
            return ["Choose the input particles."]
        name = describePointer(pointer)
        errors = [e for e in (missing_ctf_error(particles, name),
                              missing_3d_alignment_error(particles, name)) if e]
        box = particles.getXDim() or 0
        if box % 2:
            errors.append("%s has an odd box size (%d px): RECOVAR needs an even box; re-extract "
                          "or resize the particles." % (name, box))
        if not particles.getSamplingRate():
            errors.append("%s has no pixel size." % name)
        return errors

    @staticmethod
    def validateMaskBox(maskPointer, particles, label):
        """Error when a mask volume's box differs from the particles' box."""
        mask = maskPointer.get()
        if mask is None or particles is None:
            return []
        if mask.getXDim() != particles.getXDim():
            return ["%s %s is %d px but the particles are %d px: resample the mask to the "
                    "particle box." % (label, describePointer(maskPointer), mask.getXDim(),
                                       particles.getXDim())]
        return []

    def validatePipeline(self, zdims=()):
        """Errors when the chosen pipeline run is missing, unfinished or lacks a zdim."""
        pipeline = self.getAttributeValue("inputPipeline")
        if pipeline is None:
            return ["Choose a 'recovar pipeline' run."]
        if not hasattr(pipeline, "outputParticles"):
            return ["The pipeline run '%s' has no outputs yet: let it finish first."
                    % pipeline.getObjLabel()]
        missing = [z for z in zdims if z not in pipeline.zdimList()]
        if missing:
            return ["zdim %s was not computed by the pipeline '%s' (it has %s)."
                    % (",".join(map(str, missing)), pipeline.getObjLabel(), pipeline.zdims.get())]
        return []

    def provenanceSummary(self):
        """One line per RECOVAR command run: versions, components, seeds, memory, correction."""
        return provenance.summary_lines(
            provenance.read_provenance(self._getExtraPath(rf.PROVENANCE)))

    def correctionMethods(self):
        """A methods sentence when the CPU back-projection correction acted in this run."""
        runs = provenance.read_provenance(self._getExtraPath(rf.PROVENANCE))["runs"]
        versions = sorted({(r.get("versions") or {}).get("recovar") for r in runs
                           if ((r.get("cpu_correction") or {}).get("corrected_calls") or 0) > 0})
        if not versions:
            return []
        return ["RECOVAR %s ran on the CPU with its back-projection corrected by "
                "scipion-reciprocal to scale image frequencies by the volume upsampling factor, "
                "as RECOVAR's CUDA kernel does." % ", ".join(map(str, versions))]

    # --------------------------- UTILS functions ----------------------------
    def pipelineRun(self):
        """The input 'recovar pipeline' protocol."""
        return self.inputPipeline.get()

    def pipelineHalfSizes(self):
        """Particles in each half set of the input pipeline ([] when its half sets cannot be
        read: RECOVAR then reports the broken pipeline folder itself)."""
        try:
            halves = rr.read_halfsets(self.pipelineRun().pipelineDir())
        except rr.RecovarResultError as exc:
            self.info("Half sets of the pipeline not read (%s)" % exc)
            return []
        return [int((halves == 1).sum()), int((halves == 2).sum())]

    def pipelineMemoryRequest(self, command, kernelVolumes=True):
        """The memory request of a command run on the input pipeline's results."""
        pipeline = self.pipelineRun()
        return self.formMemoryRequest(command, pipeline.workingBox(),
                                      pipeline.outputParticles.getSize(), kernelVolumes)

    def kernelVolumeSet(self, folder, prefix, suffix, label):
        """A SetOfVolumes of the kernel-regression volumes ``<prefix>NNN.mrc`` in ``folder``.

        Each volume keeps its half maps and its latent point (``_recovar_latent``); ``label``
        is formatted with the volume's index. Returns None when RECOVAR wrote none.
        """
        from ..formats.mrc import read_map
        found = rr.kernel_volumes(folder, prefix)
        if not found.volumes:
            return None
        _, voxel = read_map(found.volumes[0])
        volumes = self._createSetOfVolumes(suffix)
        volumes.setSamplingRate(voxel)
        for i, path in enumerate(found.volumes):
            volume = emobj.Volume(location=str(path))
            volume.setSamplingRate(voxel)
            volume.setHalfMaps([str(found.half1[i]), str(found.half2[i])])
            volume.setObjLabel(label % i)
            if found.latent_points.shape[1]:
                point = CsvList(pType=float)
                point.set(["%.6g" % v for v in found.latent_points[i]])
                volume._recovar_latent = point
            volumes.append(volume)
        return volumes

    def saveChimeraxSeries(self, volumes, fileName, title):
        """Write a ChimeraX command file (in extra) that opens ``volumes`` as a series."""
        write_volume_series(self._getExtraPath(fileName),
                            [os.path.abspath(v.getFileName()) for v in volumes], title=title)

    def registerOutputs(self, outputs, source):
        """Define every output (one at a time: Scipion stores each before the next)."""
        for name, output in outputs.items():
            if output is None:
                continue
            self._defineOutputs(**{name: output})
            self._defineSourceRelation(source, output)

    def particleSubset(self, source, ids, suffix, attributes=None):
        """A SetOfParticles of the items of ``source`` with ``ids`` (an SQL copy of their rows,
        so every attribute is kept), saved as ``particles<suffix>.sqlite``; ``attributes``
        adds per-item values (see :func:`add_item_attributes`)."""
        target = self._getPath("particles%s.sqlite" % suffix)
        if os.path.exists(target):
            os.remove(target)  # a resumed step rewrites it
        ids = np.asarray(ids, dtype=np.int64)
        write_item_subset(source.getFileName(), target, ids)
        if attributes:
            add_item_attributes(target, ids, attributes)
        particles = emobj.SetOfParticles(filename=target)
        particles.copyInfo(source)
        particles.write()
        return particles

    def idMap(self):
        """Scipion particle id of every RECOVAR row."""
        return cryodrgn.read_id_map(self._getExtraPath(rf.INPUTS, cryodrgn.ID_MAP_CSV))

    def inputFile(self, name):
        return self._getExtraPath(rf.INPUTS, name)

    @contextmanager
    def plotFolder(self):
        """The plots folder as a :class:`ResultFolder` (emptied first; manifest written last)::

            with self.plotFolder() as plots:
                savefig(plots, rf.Pipeline.EIGENVALUES, figure)
        """
        with ResultFolder(self._getExtraPath(rf.PLOTS), clean=True,
                          producer="scipion-reciprocal %s" % self._label) as folder:
            yield folder

    def plotPath(self, name):
        """Final path of a plot (for readers; writers use :meth:`plotFolder`)."""
        return self._getExtraPath(rf.PLOTS, name)


def inputPathIn(folder, relpath):
    """``relpath`` (a path under ``extra/inputs``, see ``recovar_files``) inside ``folder``,
    the inputs folder being written (:meth:`ProtRecovarBase.writeExtraInputs`)."""
    return os.path.join(folder, os.path.relpath(relpath, rf.INPUTS))


def savefig(folder, name, fig):
    """Save ``fig`` as ``name`` in a plot :class:`ResultFolder` (temporary name, then renamed)."""
    import matplotlib.pyplot as plt
    try:
        folder.save_figure(name, fig, dpi=100)
    finally:
        plt.close(fig)


def _memoryVar(name):
    """A positive number of GB from the environment variable ``name``, or None."""
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def _tail(path, lines):
    """The last ``lines`` lines of a text file ('' when it cannot be read)."""
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except (OSError, TypeError):
        return ""
