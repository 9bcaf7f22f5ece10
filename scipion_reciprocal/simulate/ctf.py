"""RELION's contrast transfer function on an ``rfft2`` grid.

Sign convention (RELION's ``CTF::getCTF``, without envelope other than an optional B-factor):

    CTF(s) = -sin(K1 * dF(theta) * s^2 + K2 * s^4 - phase_shift - K3)
           =  sin(pi * lambda * Df(theta) * s^2 - pi/2 * Cs * lambda^3 * s^4 + phase_shift + K3)

with ``s`` the spatial frequency in 1/Å, ``theta = atan2(s_y, s_x)``,
``Df(theta) = (DefocusU + DefocusV)/2 + (DefocusU - DefocusV)/2 * cos(2 (theta - DefocusAngle))``
(positive = underfocus, Å; ``dF = -Df`` is RELION's internal sign), ``K1 = pi lambda``,
``K2 = pi/2 Cs lambda^3`` (Cs in Å), ``K3 = atan(Q0 / sqrt(1 - Q0^2))`` for amplitude contrast
``Q0``, and ``lambda = 12.2643247 / sqrt(V (1 + 0.978466e-6 V))`` Å for an acceleration voltage
``V`` in volts. Hence ``CTF(0) = sin(K3) = Q0 > 0``: particles multiplied by this CTF come out
with white protein, as RELION's extracted (contrast-inverted) particles do.
"""

import numpy as np


def electron_wavelength(voltage_kv):
    """Relativistic electron wavelength in Å for an acceleration voltage in kV."""
    volts = voltage_kv * 1e3
    return 12.2643247 / np.sqrt(volts * (1.0 + volts * 0.978466e-6))


def rfft_frequencies(shape, pixel_size):
    """Spatial frequencies (1/Å) of the ``rfft2`` grid of an image.

    Parameters
    ----------
    shape : int or tuple of int
        Image size ``box`` (square) or ``(ny, nx)``.
    pixel_size : float
        Pixel size in Å.

    Returns
    -------
    tuple of numpy.ndarray
        ``(sy, sx)``, broadcastable to ``(ny, nx // 2 + 1)``.
    """
    ny, nx = (shape, shape) if np.ndim(shape) == 0 else shape
    sy = np.fft.fftfreq(int(ny), d=pixel_size)[:, None]
    sx = np.fft.rfftfreq(int(nx), d=pixel_size)[None, :]
    return sy, sx


def ctf_2d(box, pixel_size, defocus_u, defocus_v, defocus_angle, voltage=300.0, cs=2.7,
           amplitude_contrast=0.1, phase_shift=0.0, bfactor=0.0):
    """RELION's CTF sampled on the ``rfft2`` grid of a square image.

    Parameters
    ----------
    box : int
        Image size in pixels.
    pixel_size : float
        Pixel size in Å.
    defocus_u, defocus_v : float
        Defocus along the major and minor axes in Å (positive = underfocus).
    defocus_angle : float
        Angle of the U axis from the image x axis, in degrees.
    voltage : float
        Acceleration voltage in kV.
    cs : float
        Spherical aberration in mm.
    amplitude_contrast : float
        Fraction of amplitude contrast ``Q0``.
    phase_shift : float
        Phase-plate shift in degrees.
    bfactor : float
        B-factor in Å² of the envelope ``exp(-B s^2 / 4)``; 0 for none.

    Returns
    -------
    numpy.ndarray
        ``(box, box // 2 + 1)`` float64 CTF values (see the module docstring for the sign).
    """
    return ctf_stack(box, pixel_size, [[defocus_u, defocus_v, defocus_angle]], voltage, cs,
                     amplitude_contrast, phase_shift, bfactor)[0]


def ctf_stack(box, pixel_size, defocus, voltage=300.0, cs=2.7, amplitude_contrast=0.1,
              phase_shift=0.0, bfactor=0.0):
    """CTFs of many images at once.

    Parameters
    ----------
    box : int or tuple of int
        Image size ``box`` (square) or ``(ny, nx)``.
    defocus : numpy.ndarray
        ``(n, 3)`` rows of ``DefocusU, DefocusV, DefocusAngle`` (Å, Å, degrees).
    phase_shift : float or numpy.ndarray
        One shift for all images or ``(n,)`` shifts, in degrees.

    Returns
    -------
    numpy.ndarray
        ``(n, ny, nx // 2 + 1)`` float64 CTFs; see :func:`ctf_2d` for the other parameters.
    """
    defocus = np.asarray(defocus, dtype=np.float64).reshape(-1, 3)
    shifts = np.broadcast_to(np.asarray(phase_shift, dtype=np.float64), (len(defocus),))
    sy, sx = rfft_frequencies(box, pixel_size)
    s2 = (sx ** 2 + sy ** 2)[None]
    theta = np.arctan2(sy, sx)[None]
    wavelength = electron_wavelength(voltage)
    du, dv, da = (defocus[:, i, None, None] for i in range(3))
    df = 0.5 * (du + dv) + 0.5 * (du - dv) * np.cos(2.0 * (theta - np.deg2rad(da)))
    k3 = np.arctan(amplitude_contrast / np.sqrt(1.0 - amplitude_contrast ** 2))
    chi = (np.pi * wavelength * df * s2 - 0.5 * np.pi * (cs * 1e7) * wavelength ** 3 * s2 ** 2
           + np.deg2rad(shifts)[:, None, None] + k3)
    ctf = np.sin(chi)
    if bfactor:
        ctf *= np.exp(-bfactor * s2 / 4.0)
    return ctf


def critical_exposure(frequency, voltage=300.0):
    """Critical exposure (e⁻/Å²) at spatial frequency ``frequency`` (1/Å), Grant & Grigorieff
    (2015): ``0.245 s^-1.665 + 2.81``, scaled by 0.75 at 200 kV (as RELION and RECOVAR do)."""
    scale = 0.75 if np.isclose(voltage, 200.0) else 1.0
    with np.errstate(divide='ignore'):
        return 0.245 * scale * np.asarray(frequency, dtype=np.float64) ** -1.665 + 2.81


def dose_weights(box, pixel_size, dose, voltage=300.0):
    """Exposure filters of images that received ``dose`` e⁻/Å² before them, on the ``rfft2``
    grid: ``exp(-dose / (2 Ne(s)))``, and 0 where ``dose >= 2.51284 Ne(s)`` (the optimal
    exposure cut-off), as RECOVAR's cryo-ET CTF models them.

    Parameters
    ----------
    box : int or tuple of int
        Image size.
    pixel_size : float
        Å per pixel.
    dose : float or numpy.ndarray
        ``(n,)`` accumulated dose before each image (e⁻/Å²).

    Returns
    -------
    numpy.ndarray
        ``(n, ny, nx // 2 + 1)`` float64 weights.
    """
    dose = np.atleast_1d(np.asarray(dose, dtype=np.float64))[:, None, None]
    sy, sx = rfft_frequencies(box, pixel_size)
    ne = critical_exposure(np.sqrt(sx ** 2 + sy ** 2), voltage)[None]
    return np.exp(-0.5 * dose / ne) * (dose < 2.51284 * ne)
