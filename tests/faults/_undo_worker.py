"""Helper process: a burst of set_label / set_labels (a key press on several items) / undo / redo on a project,
printing each confirmed change.

Usage: python _undo_worker.py PROJECT REVIEWER ITEM_IDS(comma separated) SEED
Prints "ready", then "<action> <journal_id>" after each call has returned (committed); "refused" when the store
declines an undo/redo because another reviewer changed the item since. Loops until killed.
"""

import random
import sys

from cytoreview.errors import ProjectError
from cytoreview.review import Project


def main() -> None:
    folder, reviewer, ids, seed = sys.argv[1], sys.argv[2], [int(i) for i in sys.argv[3].split(",")], int(sys.argv[4])
    rng = random.Random(seed)
    project = Project.open(folder)
    print("ready", flush=True)
    while True:
        r = rng.random()
        try:
            if r < 0.25:
                jid, action = project.set_label(rng.choice(ids), rng.randrange(2), reviewer), "set"
            elif r < 0.4:  # one key press on several items: one transaction, one undo group
                jid, action = project.set_labels(rng.sample(ids, rng.randint(2, 6)), rng.randrange(2),
                                                 reviewer)[-1], "set"
            elif r < 0.75:
                jid, action = project.undo(reviewer), "undo"
            else:
                jid, action = project.redo(reviewer), "redo"
        except ProjectError:
            print("refused", flush=True)
            continue
        print(action, jid, flush=True)


if __name__ == "__main__":
    main()
