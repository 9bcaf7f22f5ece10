"""Reciprocal analysis: which classes of different classifications hold the same particles."""
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pwem.objects as emobj
from pwem.protocols import EMProtocol
from pyworkflow.protocol import params

from ..convert.classes import (CLASSIFICATION_COLUMNS, class_ids, class_items,
                               class_representatives, resolved_stack_paths)
from ..convert.particles import ITEM_ATTRIBUTES, class_items_to_relion
from ..convert.set_subsets import copy_class_rows, fill_classes, write_item_subset
from ..convert.star_source import COMPARED_ATTRIBUTES, matching_star_table
from ..convert.star_rows import write_fixed_star
from ..core.reciprocal import ReciprocalError, classification_from_dataframe, reciprocal_analysis
from ..core.reciprocal_io import AGREEMENT_CSV, CONSENSUS_CSV, write_results
from ..formats.star_table import StarTable
from ..plotting.reciprocal import save_plots
from .inputs import describePointer
from .protocol_import_relion_classes import (JOBS_FILE, ProtImportRelionClassifications,
                                             classMapsFile, historyFile)

KEYS = ["image", "original", "coordinates"]
KEY_LABELS = ["image location (index@stack)", "original image name",
              "micrograph + coordinates"]
REGISTER_CHOICES = ["consensus and all subsets", "consensus and intersections",
                    "consensus only"]
RESULTS_DIR = "results"
INPUTS_DIR = "inputs"
SUBSETS_FILE = "subsets.npz"
#: Roles of CLASSIFICATION_COLUMNS that each matching key reads.
KEY_ROLES = {"image": ["index", "stack"], "original": ["original"],
             "coordinates": ["micrograph", "x", "y"]}


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


class ProtReciprocalAnalysis(EMProtocol):
    """Compares two or more classifications of the same particles (RELION Class3D/Class2D,
    any Scipion set of classes, RECOVAR k-means). For every pair of classes of different
    classifications it counts the particles they share (counts, fractions, Jaccard), measures
    the agreement of every pair of classifications (adjusted Rand index, normalised mutual
    information), finds the consensus groups (particles in the same class in every run), and
    outputs per-class and intersection particle subsets as Scipion sets and as RELION STAR
    files with an optics table."""
    _label = "reciprocal class analysis"
    _possibleOutputs = {"outputConsensus": emobj.SetOfClasses3D,
                        "outputParticles_jobNNN_classK": emobj.SetOfParticles}

    # --------------------------- DEFINE param functions ---------------------
    def _defineParams(self, form):
        form.addSection(label="Input")
        form.addParam("inputClassifications", params.MultiPointerParam,
                      pointerClass="SetOfClasses3D,SetOfClasses2D",
                      label="Classifications",
                      help="Two or more classifications of the same particles, in the order "
                           "you want them in the Sankey diagram. Sets whose label is a RELION "
                           "job name (job085) keep that name and number in the tables.")
        form.addParam("matchKey", params.EnumParam, choices=KEY_LABELS, default=0,
                      label="Match particles by",
                      help="How a particle is recognised across classifications. Image "
                           "location: the same image in the same stack (paths normalised). "
                           "Original image name: rlnImageOriginalName (after re-extraction). "
                           "Micrograph + coordinates: the same micrograph and a position "
                           "within the tolerance (re-extracted, re-centred particles).")
        form.addParam("tolerance", params.FloatParam, default=10.0, label="Tolerance (Å)",
                      condition="matchKey == 2",
                      help="Largest distance between the coordinates of one particle in two "
                           "classifications. About a tenth of the particle diameter.")
        form.addParam("minConfidence", params.FloatParam, default=0.0,
                      label="Minimum rlnMaxValueProbDistribution",
                      help="Drop particles whose class assignment is less certain than this "
                           "(0 keeps all). Applies to inputs that carry the value (RELION).")
        group = form.addGroup("Subsets")
        group.addParam("minOverlap", params.IntParam, default=10,
                       label="Minimum shared particles",
                       help="An intersection subset is written for a class pair only when it "
                            "holds at least this many particles.")
        group.addParam("minFraction", params.FloatParam, default=0.1,
                       label="Minimum shared fraction",
                       help="... and at least this fraction of one of the two classes.")
        group.addParam("minGroupSize", params.IntParam, default=10,
                       label="Minimum consensus group size",
                       help="Consensus groups smaller than this are listed but not output.")
        group.addParam("registerSubsets", params.EnumParam, choices=REGISTER_CHOICES,
                       default=1, label="Scipion outputs",
                       help="Which subsets become Scipion sets. STAR files are always written "
                            "for every per-class and kept intersection subset.")

    # --------------------------- INSERT steps functions ---------------------
    def _insertAllSteps(self):
        self._insertFunctionStep(self.analysisStep, needsGPU=False)
        self._insertFunctionStep(self.createOutputStep, needsGPU=False)

    # --------------------------- STEPS functions ----------------------------
    def analysisStep(self):
        os.makedirs(self._getExtraPath(INPUTS_DIR), exist_ok=True)
        classifications = [self._readClassification(name, classes, pointer)
                           for (name, classes), pointer in zip(self._namedInputs(),
                                                               self.inputClassifications)]
        start = time.time()
        try:
            result = reciprocal_analysis(
                classifications, min_confidence=self.minConfidence.get() or None,
                tolerance=self.tolerance.get(), min_group_size=self.minGroupSize.get(),
                min_overlap=self.minOverlap.get(), min_fraction=self.minFraction.get())
        except ReciprocalError as error:
            raise RuntimeError(str(error)) from error
        for warning in result.warnings:
            self.warning(warning)
        self.info("Matrices, statistics and consensus groups computed (%.1f s)"
                  % (time.time() - start))
        start = time.time()
        outdir = self._getExtraPath(RESULTS_DIR)
        written = write_results(result, outdir)
        self.info("Wrote %d tables, %d per-class and %d intersection STAR files to %s (%.1f s)"
                  % (len(written["tables"]), len(written["per_class"]),
                     len(written["intersections"]), outdir, time.time() - start))
        start = time.time()
        histories, maps = self._historiesAndMaps()
        save_plots(result, outdir, histories=histories, maps=maps)
        self.info("Plots drawn (%.1f s)" % (time.time() - start))
        self._writeSubsets(result)

    def createOutputStep(self):
        """Register the subsets and the consensus classes.  Their items are copied by SQLite
        in worker threads (it runs without the GIL; see :func:`copy_threads`); the Scipion
        objects are made and registered in this thread, as each file is ready."""
        subsets = self._readSubsets()
        inputs = dict(self._namedInputs())
        chosen = [s for s in subsets["subsets"] if self._isRegistered(s)]
        start = time.time()
        with ThreadPoolExecutor(copy_threads()) as pool:
            files = [pool.submit(self._writeSubsetFile, s, inputs[s["job"]]) for s in chosen]
            consensus, fill_arguments = self._prepareConsensus(subsets, inputs)
            filled = pool.submit(fill_classes, *fill_arguments) if consensus else None
            for subset, written in zip(chosen, files):
                self._registerSubset(subset, inputs[subset["job"]], written.result())
            self.info("%d particle subsets registered (%.1f s)"
                      % (len(chosen), time.time() - start))
            if consensus:
                filled.result()
                self._defineOutputs(outputConsensus=consensus)
                self._defineSourceRelation(self.inputClassifications, consensus)
        self.info("Consensus classes registered, all outputs (%.1f s)" % (time.time() - start))

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
        return errors

    def _summary(self):
        results = self._getExtraPath(RESULTS_DIR)
        if not os.path.exists(os.path.join(results, AGREEMENT_CSV)):
            return ["Compares %d classifications." % len(self.inputClassifications)]
        agreement = pd.read_csv(os.path.join(results, AGREEMENT_CSV))
        lines = ["%s vs %s: %d particles, ARI %.3f, NMI %.3f" % (
            r.job1, r.job2, r.particles, r.adjusted_rand, r.normalized_mutual_info)
            for r in agreement.itertuples()]
        consensus = pd.read_csv(os.path.join(results, CONSENSUS_CSV))
        kept = consensus[consensus["kept"].astype(bool)]
        lines.append("%d consensus groups (%d kept, %d particles)"
                     % (len(consensus), len(kept), kept["size"].sum()))
        lines.append("Tables, STAR files and plots in %s" % results)
        return lines

    def _methods(self):
        return ["%d classifications were compared by the particles their classes share "
                "(reciprocal analysis): counts, fractions and Jaccard indices for every class "
                "pair, adjusted Rand index [Hubert1985ari] and normalised mutual information "
                "[Vinh2010nmi] for every pair of classifications." % len(self.inputClassifications)]

    def _citations(self):
        return ["Hubert1985ari", "Vinh2010nmi", "Jaccard1912"]

    # --------------------------- UTILS functions ----------------------------
    def _namedInputs(self):
        """(name, SetOfClasses) in input order; names are RELION job names when the label is
        one (job085), otherwise run<protocol id>, made unique."""
        named, used = [], set()
        for pointer in self.inputClassifications:
            classes = pointer.get()
            label = classes.getObjLabel() or ""
            name = label if re.fullmatch(r"job\d+", label) else "run%s" % pointer.getObjValue().getObjId()
            base, n = name, 2
            while name in used:
                name, n = "%s_%d" % (base, n), n + 1
            used.add(name)
            named.append((name, classes))
        return named

    def _readClassification(self, name, classes, pointer):
        """Read a SetOfClasses (SQL) and return its Classification, whose ``source`` is the
        STAR file the subset STAR files copy rows from: the RELION job's own file when the
        set was imported from it unchanged, otherwise the set written as STAR."""
        start = time.time()
        imported = self._importedSource(name, classes, pointer)
        if imported is not None:
            (source, items), how = imported, "RELION rows kept"
        else:
            source, items = self._writeInputStar(name, classes)
            how = "converted to STAR"
        # Only the columns the matching needs stay in memory with the classification.
        keys = items[[c for c in dict.fromkeys(CLASSIFICATION_COLUMNS.values())
                      if c in items.columns]]
        stack = CLASSIFICATION_COLUMNS["stack"]
        if stack in keys:  # one stack reached through different links is one stack
            keys = keys.assign(**{stack: resolved_stack_paths(keys[stack])})
        clf = classification_from_dataframe(
            keys, name, key=KEYS[self.matchKey.get()], columns=CLASSIFICATION_COLUMNS,
            pixel_size=classes.getImages().getSamplingRate(), class_ids=class_ids(classes),
            kind="3D" if isinstance(classes, emobj.SetOfClasses3D) else "2D")
        clf.source = source
        self.info("%s: subset STAR files copy the rows of %s" % (name, source.path))
        self.info("%s: %d particles in %d classes read, %s (%.1f s)"
                  % (name, len(items), items["classId"].nunique(), how, time.time() - start))
        return clf

    def _importedSource(self, name, classes, pointer):
        """(StarTable, key items) when ``classes`` is an output of the RELION import whose
        rows are still those of the job's STAR file (see :mod:`..convert.star_source`),
        else None (and why, in the log)."""
        star, project_dir = self._importedStarFile(pointer)
        if star is None:
            return None
        items = class_items(classes, self._keyAttributes() + list(COMPARED_ATTRIBUTES))
        table, reason = matching_star_table(star, items, project_dir)
        if table is None:
            self.info("%s: the RELION rows cannot be copied (%s): converting the set"
                      % (name, reason))
            return None
        return table, items

    def _keyAttributes(self):
        """Item attributes the matching key (and the confidence filter, when on) reads."""
        roles = KEY_ROLES[KEYS[self.matchKey.get()]] + (["confidence"] if self.minConfidence.get()
                                                        else [])
        return [CLASSIFICATION_COLUMNS[role] for role in roles]

    @staticmethod
    def _importedStarFile(pointer):
        """(STAR file, RELION project folder) of a classification imported by
        ProtImportRelionClassifications, else (None, None)."""
        source, extended = pointer.getObjValue(), pointer.getExtended() or ""
        if not isinstance(source, ProtImportRelionClassifications) \
                or not extended.startswith("outputClasses_"):
            return None, None
        jobs_file = source._getExtraPath(JOBS_FILE)
        if not os.path.exists(jobs_file):
            return None, None
        with open(jobs_file) as handle:
            jobs = {job["job"]: job["data"] for job in json.load(handle)}
        star = jobs.get(extended[len("outputClasses_"):])
        return star, os.path.abspath(source.relionDir.get())

    def _writeInputStar(self, name, classes):
        """Write the classification as RELION STAR (converted one class at a time), the
        verbatim source of the subset STAR files.  Returns its StarTable (closed: mapped
        again when the subsets are written, one job at a time) and the items' key columns."""
        images = classes.getImages()
        attributes = list(dict.fromkeys(ITEM_ATTRIBUTES + self._keyAttributes()))
        table, optics, items = class_items_to_relion(
            classes.getFileName(), images, attributes, with_ctf=images.hasCTF(),
            keep=["id", "classId"] + self._keyAttributes())
        write_fixed_star(self._inputStar(name), table.drop(columns=["scipionId"]), optics)
        source = StarTable.open(self._inputStar(name))
        source.close()
        return source, items

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
        info = json.dumps({"first": first, "subsets": subsets, "consensus": consensus})
        np.savez(self._getExtraPath(SUBSETS_FILE), info=np.array(info), **arrays)

    def _readSubsets(self):
        """The subsets and consensus groups written by :meth:`_writeSubsets`, with their ids."""
        with np.load(self._getExtraPath(SUBSETS_FILE)) as saved:
            subsets = json.loads(str(saved["info"]))
            for i, subset in enumerate(subsets["subsets"]):
                subset["ids"] = saved["subset%d" % i]
            order = np.argsort(saved["consensus_group"], kind="stable")
            groups, members = saved["consensus_group"][order], saved["consensus_id"][order]
        for group in subsets["consensus"]:
            first, last = np.searchsorted(groups, [group["group"], group["group"] + 1])
            group["ids"] = members[first:last]
        return subsets

    def _isRegistered(self, subset):
        """Whether the form's choice makes ``subset`` a Scipion set."""
        register = self.registerSubsets.get()
        return register == 0 or (register == 1 and subset["kind"] != "class")

    def _writeSubsetFile(self, subset, source):
        """Write the set file of ``subset`` (items of its class in ``source``) by SQL."""
        target = self._getExtraPath("subset_%s.sqlite" % subset["name"])
        if os.path.exists(target):
            os.remove(target)  # a resumed step rewrites it
        write_item_subset(source.getFileName(), target, subset["ids"],
                          source_prefix="Class%03d_" % subset["class"])
        return target

    def _registerSubset(self, subset, source, target):
        particles = emobj.SetOfParticles(filename=target)
        particles.copyInfo(source.getImages())
        particles.setObjLabel(subset["name"])
        particles.write()
        self._defineOutputs(**{"outputParticles_%s" % subset["name"]: particles})
        self._defineSourceRelation(self.inputClassifications, particles)

    def _prepareConsensus(self, subsets, inputs):
        """The consensus SetOfClasses, its classes made (items not yet added), and the
        arguments of :func:`fill_classes` that adds them; (None, None) when no group is kept.

        One class per kept group, holding the group's items of the first classification.
        The first group of each class of that classification is appended through the
        Scipion API (with the class's representative); the other groups copy its row."""
        if not subsets["consensus"]:
            self.warning("No consensus group reaches the minimum size: no consensus output.")
            return None, None
        source = inputs[subsets["first"]]
        images = source.getImages()
        is3D = isinstance(source, emobj.SetOfClasses3D)
        create = self._createSetOfClasses3D if is3D else self._createSetOfClasses2D
        consensus = create(images, suffix="_consensus")
        templates = {}  # class of the first classification -> its first group
        for group in subsets["consensus"]:
            if group["class"] in templates:
                continue
            templates[group["class"]] = group["group"]
            cls = (emobj.Class3D if is3D else emobj.Class2D)(objId=group["group"])
            representative = source[group["class"]].getRepresentative()
            if representative is not None:
                cls.setRepresentative(representative.clone())
            consensus.append(cls)
        consensus.write()
        consensus.close()  # release Scipion's connection before classes and items are added by SQL
        size = copy_class_rows(consensus.getFileName(),
                               {g["group"]: templates[g["class"]] for g in subsets["consensus"]
                                if g["group"] != templates[g["class"]]})
        consensus._size.set(size)  # the rows added by SQL are classes of the set
        members = {g["group"]: ("Class%03d_" % g["class"], g["ids"])
                   for g in subsets["consensus"]}
        return consensus, (consensus.getFileName(), source.getFileName(), members)
