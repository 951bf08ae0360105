# ---- escape: every output the run wrote replaced by a special file (PARAMS["kind"]): a FIFO
# (a reader that opens it blocks), a huge sparse file, or a link into the verifier ----
def after(outs):
    for path in output_paths():
        try:
            os.unlink(path)
            if PARAMS["kind"] == "fifo":
                os.mkfifo(path, 0o666)
            elif PARAMS["kind"] == "sparse":
                with open(path, "wb") as f:
                    f.truncate(1 << 40)
            else:
                os.symlink("/verifier/verify.py", path)
        except OSError:
            pass
