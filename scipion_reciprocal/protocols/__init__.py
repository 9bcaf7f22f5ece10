"""Protocols of scipion-reciprocal (Scipion discovers the classes imported here)."""
from .protocol_backend_check import ProtBackendCheck
from .protocol_export_star import ProtExportParticlesStar
from .protocol_import_relion_classes import ProtImportRelionClassifications
from .protocol_reciprocal import ProtReciprocalAnalysis
from .protocol_map_clustering import ProtMapClustering
from .protocol_classifier_train import ProtTrainParticleClassifier
from .protocol_classifier_classify import ProtClassifyParticles
from .protocol_classifier_pick import ProtPickMicrographs
