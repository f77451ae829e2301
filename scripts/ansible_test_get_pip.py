"""ansible-test's pip bootstrap, offline: run pip from the wheel lying beside this file.

ansible-test creates its sanity virtualenvs without pip and bootstraps pip with a get-pip
script it downloads from a host this machine cannot reach (only package registries are). It
looks for that script in its cache first: scripts/setup.sh puts this one there, with the pip
wheel (downloaded from PyPI with pip) beside it. ansible-test runs it as a module, with pip's
install arguments on the command line.
"""

import glob
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
wheels = sorted(glob.glob(os.path.join(here, "pip-*-py3-none-any.whl")))
if not wheels:
    sys.exit(f"no pip wheel in {here}: run scripts/setup.sh")
sys.path.insert(0, wheels[-1])  # a wheel is a zip: pip runs from it

from pip._internal.cli.main import main  # noqa: E402

# As get-pip does: --no-setuptools/--no-wheel are its own flags (install neither), not pip's.
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", *args]))
