"""Ships the top-level `widgets/` front end inside the wheel as `workbench.viz.widgets` (pyproject holds the rest)."""

from setuptools import find_namespace_packages, setup

setup(
    packages=find_namespace_packages(include=["workbench*"], exclude=["workbench.viz.widgets"]) + ["workbench.viz.widgets"],
    package_dir={"workbench.viz.widgets": "widgets"},
)
