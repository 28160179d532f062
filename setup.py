"""Builds the compiled extension(s) in place: ``python setup.py build_ext --inplace``.

The toolkit is used from its source tree (repo root on ``sys.path``); its top-level
packages (applications, datasets, metrics, utils, ...) are deliberately NOT installable,
because their generic names would shadow other packages in site-packages.
Set REID_DISABLE_OPENMP=1 to build without OpenMP (e.g. Apple clang): the kernel then
runs single-threaded with identical results.
"""
import os
import sys

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.install import install
from Cython.Build import cythonize

_USE_OPENMP = os.environ.get("REID_DISABLE_OPENMP", "0") != "1" and sys.platform != "darwin"
_OPENMP_FLAGS = ["-fopenmp"] if _USE_OPENMP else []


class InplaceBuildExt(build_ext):
    """build_ext that always writes the extension next to its .pyx (the only supported flow)."""

    def finalize_options(self):
        super().finalize_options()
        self.inplace = True


class RefuseInstall(install):
    def run(self):
        raise SystemExit("This toolkit is not installable (its top-level packages would shadow "
                         "others in site-packages). Run `python setup.py build_ext --inplace` "
                         "and use it from the repository root.")


extensions = [
    Extension(
        "metrics.rank_cy",
        sources=["metrics/rank_cy.pyx"],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"] + _OPENMP_FLAGS,
        extra_link_args=_OPENMP_FLAGS,
    ),
]

setup(
    name="reid-toolkit-extensions",
    packages=[],
    py_modules=[],
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": InplaceBuildExt, "install": RefuseInstall},
)
