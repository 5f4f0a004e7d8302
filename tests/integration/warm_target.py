"""A stand-in for `prefect.engine` that warmstart's tests run: it reports where it runs, then exits or waits."""

import json
import os
import signal
import sys

if __name__ == "__main__":
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "cwd": os.getcwd(),
                "marker": os.environ.get("WARM_MARKER"),
                "argv": sys.argv[1:],
            }
        ),
        flush=True,
    )
    if sys.argv[1] == "exit":
        sys.exit(int(sys.argv[2]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(42))  # a run that stops politely when asked
    print("waiting", flush=True)
    while True:
        signal.pause()
