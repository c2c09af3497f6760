"""Build hook for the optional C accelerator; the metadata lives in setup.cfg.

``optional=True``: where no compiler or Python headers exist, the install still
succeeds and registry.ring runs its pure-Python path.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("registry._ringaccel", ["registry/_ringaccel.c"], optional=True)])
