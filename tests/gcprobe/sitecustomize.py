"""Imported at startup by a server that a test runs with this directory on PYTHONPATH and
CHAT_GC_PROBE set to a file path.

On SIGUSR1 the server runs a full garbage collection and writes to that file how many objects
it found in reference cycles since the previous signal (kept for the count, then dropped), and
the most common kinds. The first signal starts the count.
"""

import collections
import gc
import os
import signal


def _count(signum, frame):
    gc.collect()
    kinds = collections.Counter(type(obj).__qualname__ for obj in gc.garbage).most_common(8)
    found = len(gc.garbage)
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)  # from now on the garbage is kept, to be counted
    path = os.environ["CHAT_GC_PROBE"]
    with open(path + ".part", "w") as out:
        out.write(f"{found} {kinds}\n")
    os.replace(path + ".part", path)


if os.environ.get("CHAT_GC_PROBE"):
    signal.signal(signal.SIGUSR1, _count)
