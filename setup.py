"""Installable Scipion 3 plugin: scipion-reciprocal."""
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

setup(
    name="scipion-reciprocal",
    version="0.1.0",
    description="Scipion 3 plugin: which particles really belong together? Reciprocal analysis of "
                "classifications, map clustering, RECOVAR and a particle classifier.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="GPL-3.0-or-later",
    python_requires=">=3.8",
    packages=find_packages(include=["scipion_reciprocal", "scipion_reciprocal.*"]),
    package_data={"scipion_reciprocal": ["protocols.conf", "templates/*.json.template",
                                         "backends/**/*.py", "cluster/hosts.conf.*"]},
    include_package_data=True,
    install_requires=[
        "scipion-pyworkflow>=3.11",
        "scipion-em>=3.11",
        "numpy==1.26.1",
        "pandas>=2.1,<3",
        "starfile>=0.5.6",
        "mrcfile<=1.4.3",
        "scipy<=1.10.0",
        "scikit-learn>=1.3",
        "matplotlib==3.8.1",
        # pwem's import of RELION particle STAR files (the demo, the templates) needs it
        "scipion-em-relion>=5.0",
    ],
    extras_require={"test": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6", "scipion-app"]},
    entry_points={
        "pyworkflow.plugin": ["scipion_reciprocal = scipion_reciprocal"],
        "console_scripts": ["scipion-reciprocal = scipion_reciprocal.cli:main"],
    },
)
