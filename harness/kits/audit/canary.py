# ---- escape: the canary: the hook ends the run at once, before the task's own work ----
# Every other escape acts only if this code runs in the verifier's runs. If the canary's
# candidate is judged correct, none of it ran: the audit could not hook the task's programs
# (every hooked row would hold for nothing), or the verifier runs no code of the submission.
import os
import sys


def before():
    sys.stderr.write("rdbench tasks audit: the canary ran; the run ends here\n")
    sys.stderr.flush()
    os._exit(97)
