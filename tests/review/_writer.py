"""Helper process for the durability tests: labels items in a loop, printing each confirmed change.

Usage: python _writer.py PROJECT REVIEWER N ITEM_IDS(comma separated) [SEED]
Prints "journal_id item_id class_id" after every set_label has returned (i.e. committed); N <= 0 loops forever.
"""

import random
import sys

from cytoreview.review import Project


def main() -> None:
    folder, reviewer, n, ids = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(i) for i in sys.argv[4].split(",")]
    rng = random.Random(int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    project = Project.open(folder)
    print("ready", flush=True)
    k = 0
    while n <= 0 or k < n:
        item = rng.choice(ids)
        cls = rng.randrange(2)
        jid = project.set_label(item, cls, reviewer, dwell_s=0.0)
        print(jid, item, cls, flush=True)
        k += 1
    project.close()


if __name__ == "__main__":
    main()
