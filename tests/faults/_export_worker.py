"""Helper process: export a project in every format, slowed down so it can be killed mid-way.

Usage: python _export_worker.py PROJECT OUT_DIR DELAY_S
Prints "stage FORMAT DONE TOTAL" on every progress call and "finished" at the end; each crop save sleeps DELAY_S.
"""

import sys
import time

from PIL import Image as PILImage

from cytoreview.export import export_project


def main() -> None:
    folder, out, delay_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
    save = PILImage.Image.save

    def slow_save(self, *args, **kwargs):
        time.sleep(delay_s)
        return save(self, *args, **kwargs)

    PILImage.Image.save = slow_save
    export_project(folder, out, ["csv", "geojson", "coco", "imagefolder"], select="reviewed", crop_px=16,
                   progress=lambda stage, done, total: print("stage", stage, done, total, flush=True))
    print("finished", flush=True)


if __name__ == "__main__":
    main()
