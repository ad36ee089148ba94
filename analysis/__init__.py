"""Analysis of tts runs: load sweeps, difficulty bins, compute-optimal selection, figures."""

import atexit
import os
import shutil
import sys
import tempfile

if "MPLCONFIGDIR" not in os.environ and "matplotlib" not in sys.modules:
    # matplotlib keeps its font cache under ~/.cache/matplotlib (or ~/.matplotlib); an analysis writes nothing outside
    # its output folder, so the cache lives in a temporary folder removed at exit (set MPLCONFIGDIR to keep one).
    _matplotlib_cache = tempfile.mkdtemp(prefix="tts-matplotlib-")
    os.environ["MPLCONFIGDIR"] = _matplotlib_cache
    atexit.register(shutil.rmtree, _matplotlib_cache, True)
