# ---- escape: a candidate that does the work, then never ends ----
import time


def after(outs):
    while True:
        time.sleep(60)
