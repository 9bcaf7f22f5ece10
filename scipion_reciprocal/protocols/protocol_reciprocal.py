"""Reciprocal analysis: which classes of different classifications hold the same particles."""
import json
import os
import re

import numpy as np
import pandas as pd
import pwem.objects as emobj
from pwem.protocols import EMProtocol
from pyworkflow.protocol import params

from ..convert.classes import (CLASSIFICATION_COLUMNS, class_ids, class_items,
                               class_representatives)
from ..convert.particles import items_to_relion
from ..convert.set_subsets import fill_classes, write_item_subset
from ..core.reciprocal import ReciprocalError, classification_from_dataframe, reciprocal_analysis
from ..core.reciprocal_io import (AGREEMENT_CSV, CONSENSUS_CSV, SUMMARY_TXT, write_results)
from ..formats.star import write_particles_star
from ..formats.star_table import StarTable
from ..plotting.reciprocal import save_plots
from .inputs import describePointer
from .protocol_import_relion_classes import (ProtImportRelionClassifications, classMapsFile,
                                             historyFile)

KEYS = ["image", "original", "coordinates"]
KEY_LABELS = ["image location (index@stack)", "original image name",
              "micrograph + coordinates"]
REGISTER_CHOICES = ["consensus and all subsets", "consensus and intersections",
                    "consensus only"]
RESULTS_DIR = "results"
INPUTS_DIR = "inputs"
SUBSETS_FILE = "subsets.json"


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
        classifications = []
        for name, classes in self._namedInputs():
            items = class_items(classes)
            self._writeInputStar(name, classes, items)
            clf = classification_from_dataframe(
                items, name, key=KEYS[self.matchKey.get()], columns=CLASSIFICATION_COLUMNS,
                pixel_size=classes.getImages().getSamplingRate(), class_ids=class_ids(classes),
                kind="3D" if isinstance(classes, emobj.SetOfClasses3D) else "2D")
            clf.source = StarTable.open(self._inputStar(name))
            classifications.append(clf)
        try:
            result = reciprocal_analysis(
                classifications, min_confidence=self.minConfidence.get() or None,
                tolerance=self.tolerance.get(), min_group_size=self.minGroupSize.get(),
                min_overlap=self.minOverlap.get(), min_fraction=self.minFraction.get())
        except ReciprocalError as error:
            raise RuntimeError(str(error)) from error
        for warning in result.warnings:
            self.warning(warning)
        outdir = self._getExtraPath(RESULTS_DIR)
        written = write_results(result, outdir)
        self.info("Wrote %d tables, %d per-class and %d intersection STAR files to %s" % (
            len(written["tables"]), len(written["per_class"]), len(written["intersections"]), outdir))
        histories, maps = self._historiesAndMaps()
        save_plots(result, outdir, histories=histories, maps=maps)
        self._writeSubsets(result)

    def createOutputStep(self):
        subsets = self._readSubsets()
        inputs = dict(self._namedInputs())
        register = self.registerSubsets.get()
        for subset in subsets["subsets"]:
            if register == 2 or (register == 1 and subset["kind"] == "class"):
                continue
            source = inputs[subset["job"]]
            target = self._getExtraPath("subset_%s.sqlite" % subset["name"])
            if os.path.exists(target):
                os.remove(target)  # a resumed step rewrites it
            write_item_subset(source.getFileName(), target, subset["ids"],
                              source_prefix="Class%03d_" % subset["class"])
            particles = emobj.SetOfParticles(filename=target)
            particles.copyInfo(source.getImages())
            particles.setObjLabel(subset["name"])
            particles.write()
            self._defineOutputs(**{"outputParticles_%s" % subset["name"]: particles})
            self._defineSourceRelation(self.inputClassifications, particles)
        self._createConsensus(subsets, inputs)

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

    def _writeInputStar(self, name, classes, items):
        """The classification as RELION STAR: the verbatim source of the subset STAR files."""
        images = classes.getImages()
        table, optics = items_to_relion(items, images, with_ctf=images.hasCTF())
        table["rlnClassNumber"] = items["classId"].to_numpy()  # this classification's class
        write_particles_star(self._inputStar(name), table.drop(columns=["scipionId"]), optics)
        self.info("%s: %d particles in %d classes" % (name, len(table), items["classId"].nunique()))

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
        """Persist what createOutputStep needs: subsets as Scipion ids (JSON)."""
        ids = {c.name: np.asarray(c.ids) for c in result.classifications}
        first = result.names[0]
        subsets = [{"name": s.name, "kind": s.kind, "job": s.source_job,
                    "class": int(s.classes[s.source_job]),
                    "ids": ids[s.source_job][s.rows[s.source_job]].astype(int).tolist()}
                   for s in result.subsets]
        groups = result.consensus[result.consensus["kept"].astype(bool)]
        members = result.assignments[result.assignments["group"] > 0]
        consensus = [{"group": int(g.group), "class": int(getattr(g, "class_%s" % first)),
                      "ids": ids[first][members.loc[members["group"] == g.group,
                                                    "row_%s" % first]].astype(int).tolist()}
                     for g in groups.itertuples()]
        with open(self._getExtraPath(SUBSETS_FILE), "w") as handle:
            json.dump({"first": first, "subsets": subsets, "consensus": consensus}, handle)

    def _readSubsets(self):
        with open(self._getExtraPath(SUBSETS_FILE)) as handle:
            return json.load(handle)

    def _createConsensus(self, subsets, inputs):
        if not subsets["consensus"]:
            self.warning("No consensus group reaches the minimum size: no consensus output.")
            return
        source = inputs[subsets["first"]]
        images = source.getImages()
        is3D = isinstance(source, emobj.SetOfClasses3D)
        create = self._createSetOfClasses3D if is3D else self._createSetOfClasses2D
        consensus = create(images, suffix="_consensus")
        for group in subsets["consensus"]:
            cls = (emobj.Class3D if is3D else emobj.Class2D)(objId=group["group"])
            representative = source[group["class"]].getRepresentative()
            if representative is not None:
                cls.setRepresentative(representative.clone())
            consensus.append(cls)
        consensus.write()
        consensus.close()  # release Scipion's connection before the items are added by SQL
        fill_classes(consensus.getFileName(), source.getFileName(),
                     {g["group"]: ("Class%03d_" % g["class"], g["ids"]) for g in subsets["consensus"]})
        self._defineOutputs(outputConsensus=consensus)
        self._defineSourceRelation(self.inputClassifications, consensus)
