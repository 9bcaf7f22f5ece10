"""Class sizes, posterior histograms and class-map tables of an imported classification, and
their figures."""
import numpy as np
import pandas as pd
import pytest

from scipion_reciprocal.core.class_summary import (class_map_table, class_sizes,
                                                   confidence_histogram)
from scipion_reciprocal.formats.mrc import write_map, write_stack
from scipion_reciprocal.formats.result_folder import ResultFolder, folder_status
from scipion_reciprocal.plotting.classes import save_class_summary

CLASSES = np.array([1, 1, 2, 4, 4, 4])
CONFIDENCE = np.array([0.2, 1.0, 0.55, 0.0, 0.96, 0.951])


def test_class_sizes_include_empty_classes():
    sizes = class_sizes(CLASSES, class_ids=[1, 2, 3, 4], confidence=CONFIDENCE)
    assert sizes['class'].tolist() == [1, 2, 3, 4]
    assert sizes['size'].tolist() == [2, 1, 0, 3]
    np.testing.assert_allclose(sizes['fraction'], [2 / 6, 1 / 6, 0, 3 / 6])
    np.testing.assert_allclose(sizes['mean_confidence'], [0.6, 0.55, np.nan, 1.911 / 3])
    assert class_sizes(CLASSES)['mean_confidence'].isna().all()


def test_confidence_histogram_by_hand():
    hist = confidence_histogram(CLASSES, CONFIDENCE, bins=4, class_ids=[3])
    assert hist['class'].tolist() == [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4
    np.testing.assert_allclose(hist['bin_start'][:4], [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(hist['bin_end'][:4], [0.25, 0.5, 0.75, 1.0])
    # 0.2 -> bin 0, 1.0 -> last bin, 0.55 -> bin 2, 0.0 -> bin 0, 0.96/0.951 -> bin 3
    assert hist['count'].tolist() == [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1, 0, 0, 2]


def test_class_map_table_of_volumes_and_averages(tmp_path):
    sizes = class_sizes(CLASSES, class_ids=[1, 2, 3, 4])
    write_map(tmp_path / 'c1.mrc', np.zeros((8, 8, 8), np.float32), 2.0)
    volumes = class_map_table({1: (tmp_path / 'c1.mrc', None), 2: (tmp_path / 'gone.mrc',
                                                                    None)}, sizes)
    assert volumes['class'].tolist() == [1, 2, 3, 4]
    assert volumes['index'].tolist() == [0, 0, 0, 0]
    assert volumes['exists'].tolist() == [True, False, False, False]
    np.testing.assert_allclose(volumes['distribution'], sizes['fraction'])
    write_stack(tmp_path / 'avg.mrc', np.zeros((4, 8, 8), np.float32), 2.0)
    averages = class_map_table({k + 1: (tmp_path / 'avg.mrc', k) for k in range(4)}, sizes)
    assert averages['index'].tolist() == [1, 2, 3, 4]               # 1-based images
    assert averages['reference'].iloc[2] == f'3@{tmp_path / "avg.mrc"}'


@pytest.mark.parametrize('n_classes', [3, 40])
def test_summary_tables_and_figures(tmp_path, n_classes):
    rng = np.random.default_rng(n_classes)
    classes = rng.integers(1, n_classes + 1, 500)
    confidence = rng.uniform(0.3, 1.0, 500)
    sizes = class_sizes(classes, np.arange(1, n_classes + 1), confidence)
    stack = rng.normal(size=(n_classes, 16, 16)).astype(np.float32)
    write_stack(tmp_path / 'avg.mrc', stack, 2.0)
    maps = class_map_table({k + 1: (tmp_path / 'avg.mrc', k) for k in range(n_classes)}, sizes)
    with ResultFolder(tmp_path / 'summary') as out:
        written = save_class_summary(out, 'J32', sizes, confidence_histogram(
            classes, confidence), maps)
    names = sorted(p.relative_to(tmp_path / 'summary').as_posix() for p in written)
    assert names == ['class_maps_J32.csv', 'class_sizes_J32.csv', 'confidence_J32.csv',
                     'plots/class_averages_J32.png', 'plots/class_sizes_J32.png',
                     'plots/confidence_J32.png']
    assert folder_status(tmp_path / 'summary')
    back = pd.read_csv(tmp_path / 'summary' / 'class_sizes_J32.csv')
    assert back['size'].tolist() == np.bincount(classes, minlength=n_classes + 1)[1:].tolist()
    histogram = pd.read_csv(tmp_path / 'summary' / 'confidence_J32.csv')
    assert histogram.groupby('class')['count'].sum().tolist() == back['size'].tolist()
    for png in (tmp_path / 'summary' / 'plots').iterdir():
        assert png.stat().st_size > 5000
