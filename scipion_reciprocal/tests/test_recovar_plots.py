"""RECOVAR figures and the ChimeraX volume-series script, from small arrays."""
import numpy as np
import pytest

from scipion_reciprocal.formats.chimerax import volume_series_commands, write_volume_series
from scipion_reciprocal.plotting import recovar as plots


def _png(fig, tmp_path, name):
    path = tmp_path / f'{name}.png'
    fig.savefig(path, dpi=40)
    assert path.stat().st_size > 1000
    return fig


def test_fsc_resolution_interpolates_the_crossing():
    frequency = np.array([0.05, 0.1, 0.15, 0.2])
    assert plots.fsc_resolution(frequency, [1.0, 0.5, 0.1, 0.0], threshold=0.3) == \
        pytest.approx(1.0 / 0.125)
    assert plots.fsc_resolution(frequency, [1.0, 0.9, 0.8, 0.7]) == pytest.approx(5.0)


def test_every_figure_renders(tmp_path):
    rng = np.random.default_rng(0)
    coords = np.vstack([rng.normal(-2, 1, (100, 3)), rng.normal(2, 1, (100, 3)),
                        np.full((2, 3), np.nan)])
    labels = np.r_[np.zeros(100, int), np.ones(100, int), [-1, -1]]
    centers = np.array([[-2.0, -2, -2], [2, 2, 2]])
    bounds = np.array([[-5.0, 5], [-5, 5], [-5, 5]])
    density = rng.random((10, 10, 10))
    figures = {
        'eigenvalues': plots.eigenvalues_figure(np.logspace(3, 0, 60)),
        'fsc': plots.fsc_figure(np.linspace(0.01, 0.25, 16),
                                {'unmasked': np.linspace(1, -0.1, 16), 'masked': np.ones(16)}),
        'latent': plots.latent_figure(coords, labels, centers, dims=(0, 2)),
        'latent_plain': plots.latent_figure(coords),
        'umap': plots.umap_figure(coords[:, :2], labels, center_rows=[0, 150]),
        'contrast': plots.contrast_figure(np.r_[rng.normal(1, 0.1, 200), np.nan]),
        'density': plots.density_figure(density, bounds, points=centers, path=coords[:5]),
        'density_1d': plots.density_figure(density.sum(axis=(1, 2)), bounds[:1], points=centers),
        'alphas': plots.density_alphas_figure([density] * 5, bounds, np.logspace(1, -3, 5), 2),
        'lcurve': plots.lcurve_figure(np.logspace(1, -3, 5), [1, 2, 4, 20, 90], 2),
        'trajectory': plots.trajectory_density_figure(np.linspace(1, 2, 30), [1, 1.5, 2]),
        'trajectory_nan': plots.trajectory_density_figure(np.full(30, np.nan)),
    }
    for name, fig in figures.items():
        _png(fig, tmp_path, name)
    assert len(figures['density'].axes) == 3
    assert 'knee' in figures['alphas'].axes[2].get_title()
    legend = figures['fsc'].axes[0].get_legend().get_texts()[0].get_text()
    assert legend.startswith('unmasked (') and legend.endswith(' Å)')


def test_chimerax_volume_series(tmp_path):
    volumes = [tmp_path / 'traj' / f'state{k:03d}.mrc' for k in range(3)] + [tmp_path / 'a b.mrc']
    text = volume_series_commands(volumes, level=0.25, title='trajectory 0')
    lines = text.splitlines()
    assert lines[0] == '# trajectory 0'
    assert lines[1].startswith(f'open {tmp_path / "traj" / "state000.mrc"} ')
    assert f'"{tmp_path / "a b.mrc"}" vseries true' in lines[1]
    assert 'level 0.25' in lines[2]
    assert 'vseries play #1 loop true direction oscillate' in lines
    script = write_volume_series(tmp_path / 'series.cxc', volumes[:1], play=True)
    assert 'vseries play' not in script.read_text()
    with pytest.raises(ValueError, match='no volumes'):
        volume_series_commands([])
