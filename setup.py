"""Ships the top-level `widgets/` front end inside the wheel as `workbench.viz.widgets` (pyproject holds the rest)."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["workbench*"]) + ["workbench.viz.widgets"],
    package_dir={"workbench.viz.widgets": "widgets"},
)
