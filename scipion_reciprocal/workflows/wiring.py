"""Connect protocol inputs to other protocols' outputs (for the demo, workflows and tests)."""


def connect(param, protocol, output):
    """Point a PointerParam at ``protocol``'s output named ``output``."""
    param.set(protocol)
    param.setExtended(output)


def connect_many(pointer_list, protocol, outputs):
    """Append pointers to ``protocol``'s ``outputs`` to a MultiPointerParam."""
    for output in outputs:
        pointer_list.append(protocol)
        pointer_list[-1].setExtended(output)


def relion_particles_import(project, star, pixel_size, voltage=300.0, cs=2.7,
                            amplitude_contrast=0.1):
    """A (not yet launched) pwem import of a RELION particles STAR file."""
    from pwem.protocols import ProtImportParticles

    return project.newProtocol(
        ProtImportParticles, importFrom=ProtImportParticles.IMPORT_FROM_RELION,
        starFile=str(star), samplingRate=float(pixel_size), magnification=50000,
        voltage=voltage, sphericalAberration=cs, amplitudeContrast=amplitude_contrast,
        haveDataBeenPhaseFlipped=False)
