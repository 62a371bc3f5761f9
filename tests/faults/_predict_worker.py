"""Helper process: run predict on a slide with a pack, slowly, printing "progress DONE TOTAL" after every batch.

Usage: python _predict_worker.py SLIDE PACK_FOLDER OUT_DIR DELAY_S
"""

import sys
import time

from cytoreview.inference import predict
from cytoreview.models import load_pack


def main() -> None:
    slide, pack, out, delay_s = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])

    def progress(done, total):
        print("progress", done, total, flush=True)
        time.sleep(delay_s)

    store = predict(slide, load_pack(pack), out, threads=1, batch_size=4, progress=progress)
    print("finished", store.path, flush=True)


if __name__ == "__main__":
    main()
