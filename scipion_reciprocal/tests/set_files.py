"""Scipion set files written through Scipion's API, for the tests of convert/."""
import numpy as np


def write_particle_set(path, n=10, disabled=4, alignment=False):
    """``n`` particles (ids 1..n) as Scipion writes them: image i of stack.mrcs, class
    1 + i % 3, a CTF (defocus 1000 i and 900 i Å, angle 10°); particle ``disabled`` disabled.
    With ``alignment``, also a 3D transform (shift i, -i, i / 2) and a coordinate
    (10 i, 20 i on micrograph mic<i % 2>).  Returns ``path``."""
    import pwem.objects as emobj

    particles = emobj.SetOfParticles(filename=str(path))
    particles.setSamplingRate(1.5)
    particles.setDim((64, 64, 1))
    particles.setAcquisition(emobj.Acquisition(voltage=300.0, sphericalAberration=2.7,
                                               amplitudeContrast=0.1, magnification=50000))
    for i in range(1, n + 1):
        particle = emobj.Particle(location=(i, "stack.mrcs"))
        particle.setClassId(1 + i % 3)
        ctf = emobj.CTFModel()
        ctf.setStandardDefocus(1000.0 * i, 900.0 * i, 10.0)
        particle.setCTF(ctf)
        if alignment:
            matrix = np.eye(4)
            matrix[:3, 3] = [i, -i, 0.5 * i]
            particle.setTransform(emobj.Transform(matrix))
            coordinate = emobj.Coordinate(x=10 * i, y=20 * i)
            coordinate.setMicName("mic%d" % (i % 2))
            particle.setCoordinate(coordinate)
        particle.setEnabled(i != disabled)
        particles.append(particle)
    particles.write()
    particles.close()
    return path
