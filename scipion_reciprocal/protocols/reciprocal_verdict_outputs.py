"""Scipion outputs of the consensus verdict: stable and unstable particles (with their
stability as ``_reciprocal_stability``) and the merged consensus groups as classes.

A mixin of :class:`~.protocol_reciprocal.ProtReciprocalAnalysis`: the analysis step saves the
members (Scipion ids of the first classification's items) with :meth:`_verdictArrays`, writes
their set files by SQL in threads (:meth:`_startVerdictSets`), and the output step registers
them (:meth:`_registerVerdictOutputs`).
"""
import os

import numpy as np
import pwem.objects as emobj

from ..convert.set_sql import create_set_file, fill_classes, write_item_subset

#: Attribute of the stable and unstable output particles holding their stability score.
STABILITY_ATTRIBUTE = "_reciprocal_stability"
#: Set files of the stable and unstable particles (in the protocol's extra folder).
PARTICLE_FILES = {"stable": "particles_stable.sqlite", "unstable": "particles_unstable.sqlite"}
#: Output names and labels.
PARTICLE_OUTPUTS = {"stable": ("outputStableParticles", "stable particles"),
                    "unstable": ("outputUnstableParticles", "unstable particles")}
MERGED_OUTPUT = "outputMerged"


def _class_prefix(number):
    return "Class%03d_" % int(number)


def write_classes_file(path, source, representatives):
    """Create a SetOfClasses file of ``source``'s kind (items added later by SQL): one class
    per entry of ``representatives`` (new class id -> id of the ``source`` class whose
    representative it takes). The set is closed, so that SQL can add its items."""
    is3D = isinstance(source, emobj.SetOfClasses3D)
    if os.path.exists(path):
        os.remove(path)  # a resumed step rewrites it
    create_set_file(path)
    classes = (emobj.SetOfClasses3D if is3D else emobj.SetOfClasses2D)(filename=path)
    classes.setImages(source.getImagesPointer())
    for new_id, source_id in representatives.items():
        cls = (emobj.Class3D if is3D else emobj.Class2D)(objId=new_id)
        representative = source[source_id].getRepresentative()
        if representative is not None:
            cls.setRepresentative(representative.clone())
        classes.append(cls)
    classes.write()
    classes.close()
    return path


class VerdictOutputs:
    """Stable/unstable particle sets and merged classes of a reciprocal analysis."""

    # ------------------------------------------------------------ analysis step
    @staticmethod
    def _verdictArrays(result, ids):
        """(arrays, info) to save: per kind of particles (stable, unstable) their Scipion
        ids in the first classification, class there and stability; the merged groups'
        members and representative classes."""
        verdict = result.verdict
        if verdict is None:
            return {}, {}
        first = result.names[0]
        rows = result.assignments["row_%s" % first].to_numpy()
        classes = result.assignments["class_%s" % first].to_numpy()
        arrays = {}
        for kind, chosen in (("stable", verdict.stable), ("unstable", ~verdict.stable)):
            order = np.argsort(rows[chosen], kind="stable")
            arrays["%s_id" % kind] = ids[first][rows[chosen][order]]
            arrays["%s_class" % kind] = classes[chosen][order]
            arrays["%s_score" % kind] = verdict.stability[chosen][order]
        members = verdict.merged > 0
        arrays["merged_label"] = verdict.merged[members]
        arrays["merged_id"] = ids[first][rows[members]]
        arrays["merged_class"] = classes[members]
        merged = [{"merged": int(m), "class": int(c), "size": int(n)}
                  for m, c, n in zip(verdict.merge_table["merged"],
                                     verdict.merge_table["class_%s" % first],
                                     verdict.merge_table["size"])]
        return arrays, {"merged": merged}

    @staticmethod
    def _verdictMembers(saved, info):
        """What :meth:`_verdictArrays` saved, read back from the opened .npz."""
        if "stable_id" not in saved.files:
            return None
        members = {kind: {"ids": saved["%s_id" % kind], "classes": saved["%s_class" % kind],
                          "scores": saved["%s_score" % kind]} for kind in PARTICLE_FILES}
        labels = saved["merged_label"]
        for group in info.get("merged", []):
            chosen = labels == group["merged"]
            group["ids"] = saved["merged_id"][chosen]
            group["classes"] = saved["merged_class"][chosen]
        members["merged"] = info.get("merged", [])
        return members

    def _startVerdictSets(self, pool, members, source):
        """Submit to ``pool`` the writing of the stable/unstable particle files and the
        merged classes (items of the first classification ``source``); returns futures."""
        if members is None:
            return []
        futures = [pool.submit(self._writeParticleFile, kind, members[kind], source)
                   for kind in PARTICLE_FILES if len(members[kind]["ids"])]
        if members["merged"]:
            futures.append(pool.submit(fill_classes, *self._prepareMerged(members["merged"],
                                                                          source)))
        return futures

    def _writeParticleFile(self, kind, members, source):
        target = self._getExtraPath(PARTICLE_FILES[kind])
        if os.path.exists(target):
            os.remove(target)  # a resumed step rewrites it
        ids, classes = members["ids"], members["classes"]
        write_item_subset(source.getFileName(), target,
                          {_class_prefix(c): ids[classes == c] for c in np.unique(classes)},
                          attributes=(ids, {STABILITY_ATTRIBUTE: ("Float",
                                                                  members["scores"].tolist())}))

    def _mergedFile(self, source):
        return self._getPath("classes%s_merged.sqlite"
                             % ("3D" if isinstance(source, emobj.SetOfClasses3D) else "2D"))

    def _prepareMerged(self, merged, source):
        """Write the merged SetOfClasses file, one class per merged group with the
        representative of the first classification's class holding most of its particles;
        returns the arguments of :func:`fill_classes` that adds the items."""
        path = write_classes_file(self._mergedFile(source), source,
                                  {group["merged"]: group["class"] for group in merged})
        members = {g["merged"]: [(_class_prefix(c), g["ids"][g["classes"] == c])
                                 for c in np.unique(g["classes"])] for g in merged}
        return path, source.getFileName(), members

    # ------------------------------------------------------------ output step
    def _registerVerdictOutputs(self, members, source):
        """Register the outputs whose files :meth:`_startVerdictSets` wrote."""
        if members is None:
            return
        for kind, (name, label) in PARTICLE_OUTPUTS.items():
            if not len(members[kind]["ids"]):
                self.warning("No %s: no %s output." % (label, name))
                continue
            particles = emobj.SetOfParticles(filename=self._getExtraPath(PARTICLE_FILES[kind]))
            particles.copyInfo(source.getImages())
            particles.setObjLabel(label)
            particles.write()
            self._defineOutputs(**{name: particles})
            self._defineSourceRelation(self.inputClassifications, particles)
        if members["merged"]:
            merged = self._consensusSetClass(source)(filename=self._mergedFile(source))
            merged.setImages(source.getImagesPointer())
            merged.setObjLabel("merged consensus groups")
            self._defineOutputs(**{MERGED_OUTPUT: merged})
            self._defineSourceRelation(self.inputClassifications, merged)
        else:
            self.warning("No significant consensus group: no %s output." % MERGED_OUTPUT)
