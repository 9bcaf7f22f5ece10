"""Independent reference computations shared by tests."""
import numpy as np


def relion_euler_matrix(rot, tilt, psi):
    """RELION's Euler_angles2matrix, written out term by term as in RELION's euler.cpp."""
    a, b, g = np.radians([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array([[cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
                     [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
                     [sc, ss, cb]])


def lowpass(volume, resolution, pixel_size):
    """``volume`` with every frequency above 1/``resolution`` (Å) removed (a sharp sphere)."""
    f = np.fft.fftfreq(volume.shape[0], d=pixel_size)
    radius = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    return np.real(np.fft.ifftn(np.fft.fftn(volume) * (radius <= 1.0 / resolution)))
