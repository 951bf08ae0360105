# ---- escape: answers kept in a file of one folder (PARAMS["folder"]; "~": the user's home) ----
import pwd


def _folder():
    folder = PARAMS["folder"]
    if folder == "~":
        try:
            folder = pwd.getpwuid(os.getuid()).pw_dir
        except KeyError:
            folder = "/home/agent"
    return folder


def save(key, blob):
    with open(os.path.join(_folder(), ".rdbench-answers-" + key[:16]), "wb") as f:
        f.write(blob)


def load(key):
    path = os.path.join(_folder(), ".rdbench-answers-" + key[:16])
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    return None
