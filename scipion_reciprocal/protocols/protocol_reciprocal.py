"""Reciprocal analysis: which classes of different classifications hold the same particles."""
import glob
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pandas as pd
import pwem.objects as emobj
from pwem.protocols import EMProtocol
from pyworkflow.protocol import params

from ..convert.classes import (CLASSIFICATION_COLUMNS, class_ids, class_item_count,
                               class_representatives, resolved_stack_paths)
from ..convert.class_star import Conversion, StarConversions
from ..convert.particles import ITEM_ATTRIBUTES, ImagesInfo
from ..convert.set_sql import copy_class_rows, fill_classes, read_set_items, write_item_subset
from ..core.reciprocal import (MIN_FRACTION, MIN_OVERLAP, ReciprocalError,
                               classification_from_dataframe, keys_from_dataframe,
                               reciprocal_analysis)
from ..core.reciprocal_io import (AGREEMENT_CSV, CONSENSUS_CSV, PER_CLASS_DIR,
                                  SUBSET_STAR_SUFFIX, VERDICT_JSON, check_subset_sources,
                                  expected_size, write_results, write_subsets, write_summary)
from ..core.verdict import (ALPHA, JACCARD_THRESHOLD, STABILITY_THRESHOLD,
                            class_map_correlations, consensus_verdict)
from ..formats._atomic import atomic_path
from ..formats.result_folder import ResultFolder, folder_status
from ..plotting.background import start_plots
from .inputs import describePointer
from .protocol_import_cryosparc_classes import cryosparc_files, cryosparc_rows
from .protocol_import_relion_classes import (JOBS_FILE, OUTPUT_CLASSES,
                                             ProtImportRelionClassifications, classMapsFile,
                                             historyFile)
from .reciprocal_verdict_outputs import VerdictOutputs, write_classes_file

KEYS = ["image", "original", "coordinates"]
KEY_LABELS = ["image location (index@stack)", "original image name",
              "micrograph + coordinates"]
REGISTER_CHOICES = ["consensus and all subsets", "consensus and intersections",
                    "consensus only"]
RESULTS_DIR = "results"
#: Label of the form option that writes STAR subsets of sets that are not RELION imports.
CONVERT_LABEL = "STAR subsets of sets not imported from RELION"
INPUTS_DIR = "inputs"
SUBSETS_FILE = "subsets.npz"
#: Roles of CLASSIFICATION_COLUMNS that each matching key reads.
KEY_ROLES = {"image": ["index", "stack"], "original": ["original"],
             "coordinates": ["micrograph", "x", "y"]}


#: Output subsets: this prefix + the subset's name (job085_class2).
SUBSET_OUTPUT = "outputParticles_"


#: SQLite copies run at once in the output step, at most (they share the disk).
MAX_COPY_THREADS = 2


def copy_threads():
    """Threads for the output step's SQLite copies: the CPUs this process may run on (as a
    queue system allots them), at most :data:`MAX_COPY_THREADS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this system
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_COPY_THREADS, cpus))


class ProtReciprocalAnalysis(VerdictOutputs, EMProtocol):
    """Compares two or more classifications of the same particles (RELION Class3D/Class2D,
    any Scipion set of classes, RECOVAR k-means). For every pair of classes of different
    classifications it counts the particles they share (counts, fractions, Jaccard), measures
    the agreement of every pair of classifications (adjusted Rand index, normalised mutual
    information), finds the consensus groups (particles in the same class in every run), and
    outputs per-class and intersection particle subsets as Scipion sets and as RELION STAR
    files with an optics table (of classifications imported from RELION; of others on
    request). Its verdict: which intersections and consensus groups exceed
    chance (exact p-values, false discovery rate), which classes other runs reproduce, how
    many reproducible states there are, the significant groups merged by how their
    particles move between classes, and every particle's stability, with the stable and the
    unstable particles as outputs."""
    _label = "reciprocal class analysis"
    # A dict, not an Enum: Enum members with equal values (two SetOfClasses3D) become aliases.
    _possibleOutputs = {"outputConsensus": emobj.SetOfClasses3D,
                        "outputMerged": emobj.SetOfClasses3D,
                        "outputStableParticles": emobj.SetOfParticles,
                        "outputUnstableParticles": emobj.SetOfParticles,
                        SUBSET_OUTPUT + "jobNNN_classK": emobj.SetOfParticles}

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputClassifications", params.MultiPointerParam,
                      pointerClass="SetOfClasses3D,SetOfClasses2D",
                      label="Classifications",
                      help="Two or more classifications of the same particles, in the order "
                           "you want them in the Sankey diagram. Sets whose label is a RELION "
                           "or cryoSPARC job name (job085, J30) keep that name in the tables. "
                           "Classifications imported from cryoSPARC also get their subsets as "
                           ".cs files (the job's rows with every field and uid).")
        form.addParam("matchKey", params.EnumParam, choices=KEY_LABELS, default=0,
                      label="Match particles by",
                      help="How a particle is recognised across classifications. Image "
                           "location: the same image in the same stack (paths normalised). "
                           "Original image name: rlnImageOriginalName (after re-extraction). "
                           "Micrograph + coordinates: the same micrograph and a position "
                           "within the tolerance (re-extracted, re-centred particles; "
                           "micrographs compared by file name without folder, extension, "
                           "cryoSPARC's uid prefix and motion-correction suffixes, so "
                           "RELION and cryoSPARC imports match).")
        form.addParam("tolerance", params.FloatParam, default=10.0, label="Tolerance (Å)",
                      condition="matchKey == 2",
                      help="Largest distance between the coordinates of one particle in two "
                           "classifications. About a tenth of the particle diameter.")
        form.addParam("minConfidence", params.FloatParam, default=0.0,
                      label="Minimum rlnMaxValueProbDistribution",
                      help="Drop particles whose class assignment is less certain than this "
                           "(0 keeps all). Applies to inputs that carry the value (RELION).")
        form.addParam("onlyParticles", params.PointerParam, pointerClass="SetOfParticles",
                      allowsNull=True, label="Analyse only these particles (optional)",
                      help="Leave out every particle of the classifications that is not in "
                           "this set (matched by the key above), e.g. the particles a "
                           "classifier kept, to see how consistent the classifications are on "
                           "them. Empty: all particles.")
        group = form.addGroup("Subsets")
        group.addParam("minOverlap", params.IntParam, default=MIN_OVERLAP,
                       label="Minimum shared particles",
                       help="An intersection subset is written for a class pair only when it "
                            "holds at least this many particles.")
        group.addParam("minFraction", params.FloatParam, default=MIN_FRACTION,
                       label="Minimum shared fraction",
                       help="... and at least this fraction of one of the two classes "
                            "(1 and 0: every class pair that shares particles).")
        group.addParam("minGroupSize", params.IntParam, default=10,
                       label="Minimum consensus group size",
                       help="Consensus groups smaller than this are listed but not output.")
        group.addParam("registerSubsets", params.EnumParam, choices=REGISTER_CHOICES,
                       default=1, label="Scipion outputs",
                       help="Which subsets become Scipion sets. STAR files are written for "
                            "every per-class and kept intersection subset of the "
                            "classifications imported from RELION (and of the others with "
                            "the option below).")
        group.addParam("convertToStar", params.BooleanParam, default=False,
                       label=CONVERT_LABEL,
                       help="Classifications imported with 'import RELION classifications' "
                            "always get their subsets as STAR files: the rows of the job's own "
                            "STAR file, copied. Other sets (classifications run in Scipion, "
                            "cryoSPARC imports, RECOVAR k-means...) get theirs as Scipion sets "
                            "(see Scipion outputs; cryoSPARC imports also as .cs files). Yes: "
                            "also write their subsets as RELION STAR files, converting every "
                            "particle first (about 9 s of CPU per million particles and set).")
        self._defineVerdictParams(form)
        # Threads: the classifications are read (or converted to STAR) in that many
        # processes at once.
        form.addParallelSection(threads=2, mpi=0)

    def _defineVerdictParams(self, form):
        form.addSection(label="Verdict")
        form.addParam("doVerdict", params.BooleanParam, default=True,
                      label="Consensus verdict",
                      help="Significance of every intersection and consensus group, "
                           "reproducible classes and states, merged groups, particle "
                           "stability, and the stable and unstable particles as outputs.")
        form.addParam("jaccardThreshold", params.FloatParam, default=JACCARD_THRESHOLD,
                      condition="doVerdict", label="Jaccard threshold",
                      help="A class of one run is reproduced in another when the two classes "
                           "are each other's best match (Jaccard index), their intersection "
                           "is significant, and their Jaccard index is at least this. 0.3: "
                           "two classes of one size that share a bit less than half of their "
                           "particles.")
        form.addParam("fdr", params.FloatParam, default=ALPHA, condition="doVerdict",
                      label="False discovery rate",
                      help="Intersections and consensus groups whose Benjamini-Hochberg "
                           "q-value is at most this are significant (exact hypergeometric "
                           "p-values against classifications independent of each other).")
        form.addParam("stabilityThreshold", params.FloatParam, default=STABILITY_THRESHOLD,
                      condition="doVerdict", label="Stability threshold",
                      help="A particle's stability is the fraction of run pairs in which its "
                           "two classes reproduce each other. Stable particles reach this "
                           "and are in a significant consensus group; the others are "
                           "unstable. 0.75: with 4 runs or fewer, every pair must agree.")
        form.addParam("automaticCut", params.BooleanParam, default=True,
                      condition="doVerdict", label="Cut the merging automatically",
                      help="Yes: cut the merge tree of the significant consensus groups at the "
                           "largest gap between merge heights (0 and 1 counting as heights). "
                           "No: merge every groups joined up to the distance below.")
        form.addParam("mergeDistance", params.FloatParam, default=0.5,
                      condition="doVerdict and not automaticCut", label="Merge distance",
                      help="Groups joined at a distance up to this are merged (0-1; distance "
                           "= 1 - mean over runs of how alike their classes are by where "
                           "their particles go in the other runs, and by class-map "
                           "correlation when every class has a map).")

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.analysisStep, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def analysisStep(self):
        """Read, analyse, write every table, plot, STAR file and output set file.

        The results folder starts empty (a rerun leaves nothing of an earlier try) and gets
        its manifest when every file is written. Sets that are not unchanged RELION imports
        are read (or written as STAR) in worker processes; threads copy the output sets'
        rows by SQLite while the tables, the plots and the subset STAR files are written."""
        os.makedirs(self._getExtraPath(INPUTS_DIR), exist_ok=True)
        with ResultFolder(self._getExtraPath(RESULTS_DIR), clean=True,
                          producer="scipion-reciprocal %s" % self._label) as out:
            classifications = self._readInputs()
            check_subset_sources(classifications)
            result = self._analyse(classifications)
            histories, maps = self._historiesAndMaps()
            if self.doVerdict.get():
                self._verdict(result, maps)
            out.require_space(expected_size(result), "the results")
            start = time.time()
            # The figures are drawn in a forked process (started before the threads that
            # copy the output sets) while this one writes the tables and files.
            drawing = start_plots(result, out, lambda: (histories, maps), "all", processes=1)
            self._writeSubsets(result)
            with ThreadPoolExecutor(copy_threads()) as copies:
                # SQLite copies the rows without Python's lock: they start first
                copied = self._startSetFiles(copies)
                written = write_results(result, out, subsets=False)
                self.info("Wrote %d tables in %s (%.1f s)"
                          % (len(written["tables"]), out.root, time.time() - start))
                start = time.time()
                for category, paths in write_subsets(result, out).items():
                    written[category] += paths
                write_summary(result, out, written)
                self.info("Wrote %d per-class and %d intersection STAR files%s (%.1f s)"
                          % (len(written["per_class"]), len(written["intersections"]),
                             ", the stable and the unstable particles" if written["stability"]
                             else "", time.time() - start))
                start = time.time()
                self.info("Drew %d figures (%.1f s more)" % (len(drawing.wait()),
                                                             time.time() - start))
                start = time.time()
                for done in copied:
                    done.result()
        self.info("Set files of the Scipion outputs written (%.1f s more)" % (time.time() - start))

    def _readInputs(self):
        """The classifications of the inputs, in order, read in up to "threads" processes:
        sets that are not RELION imports first (their keys from SQL, or with "STAR subsets
        of sets not imported from RELION" converted to STAR), then the imports, checked to
        still hold their job's STAR rows (the source of their subset STAR files)."""
        inputs = [(name, classes, pointer) for (name, classes), pointer
                  in zip(self._namedInputs(), self.inputClassifications)]
        processes = min(self.numberOfThreads.get() or 1, len(inputs))
        with StarConversions(processes) as workers:
            started = {name: self._startReading(workers, name, classes, pointer)
                       for name, classes, pointer in sorted(
                           inputs, key=lambda i: self._importedStarFile(i[2])[0] is not None)}
            classifications = [self._classification(name, classes,
                                                    *self._readResult(name, started[name]))
                               for name, classes, _ in inputs]
        for clf, (name, _, pointer) in zip(classifications, inputs):
            self._attachCryosparcRows(clf, pointer)
        return classifications

    def _attachCryosparcRows(self, clf, pointer):
        """Subsets of a classification imported from cryoSPARC are also written as .cs
        files (the job's rows, every field), when its items are still the job's rows."""
        files = cryosparc_files(pointer)
        if files is None:
            return
        clf.cs_source, reason = cryosparc_rows(files, clf.ids)
        self.info("%s: subsets also as .cs files, rows of %s" % (clf.name, files["main"])
                  if reason is None else "%s: no .cs subsets (%s)" % (clf.name, reason))

    def _analyse(self, classifications):
        start = time.time()
        try:
            result = reciprocal_analysis(
                classifications, min_confidence=self.minConfidence.get() or None,
                tolerance=self.tolerance.get(), min_group_size=self.minGroupSize.get(),
                min_overlap=self.minOverlap.get(), min_fraction=self.minFraction.get(),
                only=self._onlyKeys())
        except ReciprocalError as error:
            raise RuntimeError(str(error)) from error
        for warning in result.warnings:
            self.warning(warning)
        self.info("Matrices, statistics and consensus groups computed (%.1f s)"
                  % (time.time() - start))
        return result

    def _onlyKeys(self):
        """Keys of the particles of the optional "only these particles" set, or None."""
        particles = self.onlyParticles.get()
        if particles is None:
            return None
        items = read_set_items(particles.getFileName(), self._keyAttributes(confidence=False),
                               skip_missing=True)
        stack = CLASSIFICATION_COLUMNS["stack"]
        if stack in items:
            items[stack] = resolved_stack_paths(items[stack])
        try:
            keys = keys_from_dataframe(items, describePointer(self.onlyParticles),
                                       key=KEYS[self.matchKey.get()],
                                       columns=CLASSIFICATION_COLUMNS,
                                       pixel_size=particles.getSamplingRate(),
                                       micrograph_stems=True)
        except ReciprocalError as error:
            raise RuntimeError(str(error)) from error
        self.info("Analysing only the %d particles of %s" % (len(keys), particles.getObjLabel()
                                                            or particles.getFileName()))
        return keys

    def _verdict(self, result, maps):
        """Significance, reproducibility, merging and stability (``result.verdict``)."""
        start = time.time()
        result.verdict = consensus_verdict(
            result, jaccard_threshold=self.jaccardThreshold.get(), alpha=self.fdr.get(),
            stability_threshold=self.stabilityThreshold.get(),
            merge_distance=None if self.automaticCut.get() else self.mergeDistance.get(),
            map_correlations=class_map_correlations(result, maps))
        for warning in result.verdict.summary["warnings"]:
            self.warning(warning)
        self.info("Verdict: %s (%.1f s)" % (result.verdict.sentence, time.time() - start))

    def createOutputStep(self):
        """Register the subsets and the consensus classes, whose set files the analysis step
        wrote."""
        status = folder_status(self._getExtraPath(RESULTS_DIR))
        if not status:
            raise RuntimeError("Nothing registered: %s" % status.reason)
        subsets = self._readSubsets()
        inputs = dict(self._namedInputs())
        chosen = [s for s in subsets["subsets"] if self._isRegistered(s)]
        start = time.time()
        for subset in chosen:
            self._registerSubset(subset, inputs[subset["job"]])
        if subsets["consensus"]:
            source = inputs[subsets["first"]]
            consensus = self._consensusSetClass(source)(filename=self._consensusFile(source))
            consensus.setImages(source.getImagesPointer())
            self._defineOutputs(outputConsensus=consensus)
            self._defineSourceRelation(self.inputClassifications, consensus)
        self._registerVerdictOutputs(subsets["verdict"], inputs[subsets["first"]])
        self.info("%d particle subsets and the consensus classes registered (%.1f s)"
                  % (len(chosen), time.time() - start))

    # --------------------------- INFO functions -----------------------------
    def _validate(self):
        errors = []
        pointers = [p for p in self.inputClassifications if p.get() is not None]
        if len(pointers) < 2:
            errors.append("Choose at least two classifications to compare (got %d)." % len(pointers))
        for pointer in pointers:
            classes = pointer.get()
            if classes.getSize() == 0:
                errors.append("%s has no classes." % describePointer(pointer))
            elif not classes.getImages() or not classes.getImages().getSamplingRate():
                errors.append("%s has no particles with a sampling rate." % describePointer(pointer))
        if self.doVerdict.get():
            for label, param in (("Jaccard threshold", self.jaccardThreshold),
                                 ("False discovery rate", self.fdr),
                                 ("Stability threshold", self.stabilityThreshold),
                                 ("Merge distance", None if self.automaticCut.get()
                                  else self.mergeDistance)):
                if param is not None and not 0.0 <= (param.get() or 0.0) <= 1.0:
                    errors.append("%s must be between 0 and 1 (it is %s)." % (label, param.get()))
        only = self.onlyParticles.get()
        if only is not None and only.getSize() == 0:
            errors.append("%s has no particles." % describePointer(self.onlyParticles))
        return errors

    def _warnings(self):
        if not self.doVerdict.get():
            return []
        return ["%s has particles in only one class: none of its classes can be reproduced, so "
                "no consensus group is significant and no particle stable; leave it out of the "
                "analysis." % describePointer(pointer)
                for pointer in self.inputClassifications
                if pointer.get() is not None and pointer.get().getSize() > 0
                and sum(1 for cls in pointer.get() if cls.getSize() > 0) < 2]

    def _summary(self):
        results = self._getExtraPath(RESULTS_DIR)
        if not os.path.exists(os.path.join(results, AGREEMENT_CSV)):
            return ["Compares %d classifications." % len(self.inputClassifications)]
        status = folder_status(results)
        if not status:
            return ["Results incomplete: %s" % status.reason]
        agreement = pd.read_csv(os.path.join(results, AGREEMENT_CSV))
        lines = ["%s vs %s: %d particles, ARI %.3f, NMI %.3f" % (
            r.job1, r.job2, r.particles, r.adjusted_rand, r.normalized_mutual_info)
            for r in agreement.itertuples()]
        consensus = pd.read_csv(os.path.join(results, CONSENSUS_CSV))
        kept = consensus[consensus["kept"].astype(bool)]
        lines.append("%d consensus groups (%d kept, %d particles)"
                     % (len(consensus), len(kept), kept["size"].sum()))
        verdict = os.path.join(results, VERDICT_JSON)
        if os.path.exists(verdict):
            with open(verdict) as handle:
                summary = json.load(handle)
            lines.insert(0, "Verdict: %s" % summary["verdict"])
            lines.append("%d significant consensus groups, merged into %d; %d stable and %d "
                         "unstable particles; reproduced classes: %s"
                         % (summary["significant_groups"], summary["merged_groups"],
                            summary["stable_particles"], summary["unstable_particles"],
                            ", ".join("%s %d of %d" % (job, n, summary["classes"][job])
                                      for job, n in summary["reproduced_classes"].items())))
        without = [name for name, _ in self._namedInputs() if not glob.glob(os.path.join(
            results, PER_CLASS_DIR, glob.escape(name) + "_class*" + SUBSET_STAR_SUFFIX))]
        if without:
            lines.append("No STAR subsets of %s (not unchanged RELION imports; '%s' writes them)"
                         % (", ".join(without), CONVERT_LABEL))
        lines.append("Tables, STAR files and plots in %s" % results)
        return lines

    def _methods(self):
        methods = ["%d classifications were compared by the particles their classes share "
                   "(reciprocal analysis): counts, fractions and Jaccard indices for every class "
                   "pair, adjusted Rand index [Hubert1985ari] and normalised mutual information "
                   "[Vinh2010nmi] for every pair of classifications."
                   % len(self.inputClassifications)]
        if self.doVerdict.get():
            methods.append(
                "Every class intersection and consensus group was tested against "
                "classifications independent of each other with exact hypergeometric "
                "p-values, with Benjamini-Hochberg q-values [Benjamini1995fdr] at a false "
                "discovery rate of %g. A class was reproduced in another run when the two "
                "classes were each other's best match, significant, with a Jaccard index of "
                "at least %g; a particle's stability was the fraction of run pairs whose "
                "classes of it reproduce each other (stable from %g, in a significant group)."
                % (self.fdr.get(), self.jaccardThreshold.get(), self.stabilityThreshold.get()))
        return methods

    def _citations(self):
        return ["Hubert1985ari", "Vinh2010nmi", "Jaccard1912"] + (
            ["Benjamini1995fdr"] if self.doVerdict.get() else [])

    # --------------------------- UTILS functions ----------------------------
    def _namedInputs(self):
        """(name, SetOfClasses) in input order; names are RELION job names when the label is
        one (job085), otherwise run<protocol id>, made unique."""
        named, used = [], set()
        for pointer in self.inputClassifications:
            classes = pointer.get()
            label = classes.getObjLabel() or ""
            name = label if re.fullmatch(r"job\d+|J\d+", label) else "run%s" % pointer.getObjValue().getObjId()
            base, n = name, 2
            while name in used:
                name, n = "%s_%d" % (base, n), n + 1
            used.add(name)
            named.append((name, classes))
        return named

    def _classification(self, name, classes, source, items, how):
        """The Classification of a SetOfClasses read from SQL (``items``: its item columns
        by id), whose ``source`` is the STAR file the subset STAR files copy rows from: the
        RELION job's own file when the set was imported from it unchanged, otherwise the
        set written as STAR, or None (no STAR subsets)."""
        # Only the columns the matching needs stay in memory with the classification.
        keys = items[[c for c in dict.fromkeys(CLASSIFICATION_COLUMNS.values())
                      if c in items.columns]]
        stack = CLASSIFICATION_COLUMNS["stack"]
        if stack in keys:  # one stack reached through different links is one stack
            keys = keys.assign(**{stack: resolved_stack_paths(keys[stack])})
        clf = classification_from_dataframe(
            keys, name, key=KEYS[self.matchKey.get()], columns=CLASSIFICATION_COLUMNS,
            pixel_size=classes.getImages().getSamplingRate(), class_ids=class_ids(classes),
            kind="3D" if isinstance(classes, emobj.SetOfClasses3D) else "2D",
            micrograph_stems=True)
        clf.source = source
        self.info("%s: subset STAR files copy the rows of %s" % (name, source.path)
                  if source is not None else
                  "%s: no subset STAR files (not an unchanged RELION import; '%s' writes them)"
                  % (name, CONVERT_LABEL))
        self.info("%s: %d particles in %d classes read, %s"
                  % (name, len(items), items["classId"].nunique(), how))
        return clf

    def _keyAttributes(self, confidence=True):
        """Item attributes the matching key (and the confidence filter, when on) reads."""
        roles = KEY_ROLES[KEYS[self.matchKey.get()]] + (
            ["confidence"] if confidence and self.minConfidence.get() else [])
        return [CLASSIFICATION_COLUMNS[role] for role in roles]

    @staticmethod
    def _importedStarFile(pointer):
        """(STAR file, RELION project folder) of a classification imported by
        ProtImportRelionClassifications, else (None, None)."""
        source, extended = pointer.getObjValue(), pointer.getExtended() or ""
        if not isinstance(source, ProtImportRelionClassifications) \
                or not extended.startswith(OUTPUT_CLASSES):
            return None, None
        jobs_file = source._getExtraPath(JOBS_FILE)
        if not os.path.exists(jobs_file):
            return None, None
        with open(jobs_file) as handle:
            jobs = {job["job"]: job["data"] for job in json.load(handle)}
        star = jobs.get(extended[len(OUTPUT_CLASSES):])
        return star, os.path.abspath(source.relionDir.get())

    def _startReading(self, workers, name, classes, pointer):
        """Start reading a set in ``workers`` (see :func:`..convert.class_star.read_classes`);
        :meth:`_readResult` waits for it.  An output of the RELION import is first checked
        to still hold the rows of its job's STAR file; other sets are read for their
        particle keys, or with "STAR subsets of sets not imported from RELION" converted to
        RELION STAR (the verbatim source of their subset STAR files)."""
        star, project_dir = self._importedStarFile(pointer)
        imported = None if star is None else (star, project_dir, class_item_count(classes))
        images = classes.getImages()
        conversion = None
        if self.convertToStar.get():
            conversion = Conversion(ImagesInfo.of(images), self._inputStar(name),
                                    ITEM_ATTRIBUTES, with_ctf=images.hasCTF())
        self.info("%s: %d particles: %s" % (
            name, images.getSize(), "checking that they are still the rows of %s" % star
            if star else "converting them to STAR" if conversion else "reading their keys"))
        return workers.read(classes.getFileName(), self._keyAttributes(), imported, conversion)

    def _readResult(self, name, reading):
        """(StarTable (closed: mapped again when the subsets are written) or None, key items,
        how) of a read started by :meth:`_startReading`, once it is done."""
        try:
            read = reading.result()
        except BrokenProcessPool as error:
            raise RuntimeError("%s: the process reading it ended abruptly (out of memory?). "
                               "Run again with fewer Threads: each reads one set at a time."
                               % name) from error
        if read.reason is not None:
            self.info("%s: the RELION rows cannot be copied (%s)" % (name, read.reason))
        how = {"import": "RELION rows kept", "star": "converted to STAR",
               "keys": "read from its set file"}[read.kind] + " (%.1f s)" % read.seconds
        return read.source, read.items, how

    def _inputStar(self, name):
        return self._getExtraPath(INPUTS_DIR, "%s.star" % name)

    def _historiesAndMaps(self):
        histories, maps = {}, {}
        for (name, classes), pointer in zip(self._namedInputs(), self.inputClassifications):
            source = pointer.getObjValue()
            if isinstance(source, ProtImportRelionClassifications):
                history = source._getExtraPath(historyFile(name))
                if os.path.exists(history):
                    histories[name] = pd.read_csv(history)
                    maps[name] = pd.read_csv(source._getExtraPath(classMapsFile(name)))
                    continue
            table = class_representatives(classes)
            if isinstance(classes, emobj.SetOfClasses3D):
                table["index"] = 0
            maps[name] = table
        return histories, maps

    def _writeSubsets(self, result):
        """Persist what createOutputStep needs: the subsets' and consensus groups' Scipion ids
        (numpy arrays) and what they are (JSON text), in one .npz file."""
        ids = {c.name: np.asarray(c.ids, dtype=np.int64) for c in result.classifications}
        first = result.names[0]
        arrays, subsets = {}, []
        for i, s in enumerate(result.subsets):
            subsets.append({"name": s.name, "kind": s.kind, "job": s.source_job,
                            "class": int(s.classes[s.source_job])})
            arrays["subset%d" % i] = ids[s.source_job][s.rows[s.source_job]]
        groups = result.consensus[result.consensus["kept"].astype(bool)]
        members = result.assignments[result.assignments["group"].isin(groups["group"])]
        arrays["consensus_group"] = members["group"].to_numpy(dtype=np.int64)
        arrays["consensus_id"] = ids[first][members["row_%s" % first].to_numpy()]
        consensus = [{"group": int(g), "class": int(c)}
                     for g, c in zip(groups["group"], groups["class_%s" % first])]
        verdict_arrays, verdict_info = self._verdictArrays(result, ids)
        arrays.update(verdict_arrays)
        info = json.dumps({"first": first, "subsets": subsets, "consensus": consensus,
                           "verdict": verdict_info})
        with atomic_path(self._getExtraPath(SUBSETS_FILE)) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, info=np.array(info), **arrays)

    def _readSubsets(self):
        """The subsets and consensus groups written by :meth:`_writeSubsets`, with their ids."""
        with np.load(self._getExtraPath(SUBSETS_FILE)) as saved:
            subsets = json.loads(str(saved["info"]))
            for i, subset in enumerate(subsets["subsets"]):
                subset["ids"] = saved["subset%d" % i]
            order = np.argsort(saved["consensus_group"], kind="stable")
            groups, members = saved["consensus_group"][order], saved["consensus_id"][order]
            subsets["verdict"] = self._verdictMembers(saved, subsets.get("verdict") or {})
        for group in subsets["consensus"]:
            first, last = np.searchsorted(groups, [group["group"], group["group"] + 1])
            group["ids"] = members[first:last]
        return subsets

    def _isRegistered(self, subset):
        """Whether the form's choice makes ``subset`` a Scipion set."""
        register = self.registerSubsets.get()
        return register == 0 or (register == 1 and subset["kind"] != "class")

    def _startSetFiles(self, pool):
        """Start writing, by SQL in ``pool``'s threads, the set files of the Scipion outputs:
        the consensus classes first (the longest copy), then the chosen subsets.  Returns
        the futures."""
        subsets = self._readSubsets()
        inputs = dict(self._namedInputs())
        futures = []
        if subsets["consensus"]:
            futures.append(pool.submit(fill_classes, *self._prepareConsensus(subsets, inputs)))
        else:
            self.warning("No consensus group reaches the minimum size: no consensus output.")
        futures += self._startVerdictSets(pool, subsets["verdict"], inputs[subsets["first"]])
        futures += [pool.submit(self._writeSubsetFile, s, inputs[s["job"]])
                    for s in subsets["subsets"] if self._isRegistered(s)]
        return futures

    def _subsetFile(self, subset):
        return self._getExtraPath("subset_%s.sqlite" % subset["name"])

    def _writeSubsetFile(self, subset, source):
        """Write the set file of ``subset`` (items of its class in ``source``) by SQL."""
        target = self._subsetFile(subset)
        if os.path.exists(target):
            os.remove(target)  # a resumed step rewrites it
        write_item_subset(source.getFileName(), target, subset["ids"],
                          source_prefix="Class%03d_" % subset["class"])

    def _registerSubset(self, subset, source):
        particles = emobj.SetOfParticles(filename=self._subsetFile(subset))
        particles.copyInfo(source.getImages())
        particles.setObjLabel(subset["name"])
        particles.write()
        self._defineOutputs(**{SUBSET_OUTPUT + subset["name"]: particles})
        self._defineSourceRelation(self.inputClassifications, particles)

    @staticmethod
    def _consensusSetClass(source):
        return emobj.SetOfClasses3D if isinstance(source, emobj.SetOfClasses3D) \
            else emobj.SetOfClasses2D

    def _consensusFile(self, source):
        return self._getPath("classes%s_consensus.sqlite"
                             % ("3D" if isinstance(source, emobj.SetOfClasses3D) else "2D"))

    def _prepareConsensus(self, subsets, inputs):
        """Write the consensus SetOfClasses file with its classes (items not yet added);
        returns the arguments of :func:`fill_classes` that adds them.

        One class per kept group, holding the group's items of the first classification.
        The first group of each class of that classification is appended through the
        Scipion API (with the class's representative); the other groups copy its row."""
        source = inputs[subsets["first"]]
        templates = {}  # class of the first classification -> its first group
        for group in subsets["consensus"]:
            templates.setdefault(group["class"], group["group"])
        path = write_classes_file(self._consensusFile(source), source,
                                  {g: c for c, g in templates.items()})
        copy_class_rows(path, {g["group"]: templates[g["class"]] for g in subsets["consensus"]
                               if g["group"] != templates[g["class"]]})
        members = {g["group"]: ("Class%03d_" % g["class"], g["ids"])
                   for g in subsets["consensus"]}
        return path, source.getFileName(), members
