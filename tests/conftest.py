"""Suite-wide settings: Hypothesis profiles.

`ci` (chosen when the environment says CI=true, as CI's runner does) is derandomised, so a CI run
is repeatable and a red one can be rerun exactly, and prints the failing example's reproduction blob
(`@reproduce_failure`). `dev` (everywhere else) explores new examples on every run. Tests keep their
own example counts and deadlines; a profile sets only what they leave open.
`HYPOTHESIS_PROFILE=ci` chooses a profile explicitly.
"""

from __future__ import annotations

import os

from hypothesis import settings

from pipeline.settings import env_flag

settings.register_profile("ci", derandomize=True, print_blob=True, database=None)
settings.register_profile("dev", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if env_flag(os.environ.get("CI", "")) else "dev"))
