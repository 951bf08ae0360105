# ---- escape: PARAMS["mib"] MiB written to each of stdout and stderr ----
def before():
    block = b"flood " * (1 << 17)
    for fd in (1, 2):
        for _ in range(PARAMS["mib"] * (1 << 20) // len(block)):
            try:
                os.write(fd, block)
            except OSError:
                break
