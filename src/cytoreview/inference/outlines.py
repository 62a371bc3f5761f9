"""Outline polygons of every instance of a label image at once, traced on the pixel edges with numpy.

An instance's outline runs through the midpoints of its outer pixel edges, the same polygon as the 0.5 iso-line of
its mask (what :func:`skimage.measure.find_contours` gives on a padded crop of the instance, with diagonal touches
kept apart), but found for all instances together: the boundary edges are listed with a few array comparisons,
each edge is linked to the next one by a sorted lookup, the loops are ordered by pointer doubling, and the outer
(longest) loop of each instance is simplified by a Douglas-Peucker pass run on all polygons at the same time.
``find_contours`` + ``approximate_polygon`` per cell cost a Python loop per cell and per vertex.

A simplified polygon that would touch or cross itself keeps its exact (unsimplified) loop, so every outline is a
closed simple polygon whose pixel-centre rasterisation is the instance's outer region (up to the tolerance).
"""

from __future__ import annotations

import numpy as np

#: Step of each edge direction in (row, col): 0 = +x, 1 = +y, 2 = -x, 3 = -y. The instance lies to the side the
#: direction turns to when rotated by +1 (its interior is on the right walking in (y, x) screen coordinates).
_PAIRS_PER_PASS = 1 << 20  # edge pairs tested at once by the simplicity check (bounds its memory)
_STEP_YX = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]], dtype=np.int64)


def label_outlines(labels: np.ndarray, ids, *, tolerance_px: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Closed outline polygons of the instances ``ids`` of ``labels``, in the order of ``ids``.

    Parameters
    ----------
    labels : ndarray (H, W) of int
        Instance labels, 0 = background.
    ids : sequence of int
        Instances wanted (each present in ``labels``).
    tolerance_px : float
        Douglas-Peucker tolerance; 0 keeps every corner of the exact loop (straight runs are always merged).

    Returns
    -------
    outline_yx : float32 (M, 2)
        Vertices in (y, x) pixel-index coordinates of ``labels``; each polygon repeats its first vertex last.
    outline_offset : int64 (n + 1)
        Polygon ``i`` is ``outline_yx[outline_offset[i]:outline_offset[i + 1]]``.
    """
    ids = np.asarray(ids, dtype=np.int64)
    if not len(ids):
        return np.zeros((0, 2), dtype=np.float32), np.zeros(1, dtype=np.int64)
    pts2, off = _outer_loops(np.asarray(labels), ids)  # doubled coordinates: exact integers
    if tolerance_px > 0:
        keep = _douglas_peucker(pts2, off, 2.0 * tolerance_px)
        simple_pts, simple_off = _select(pts2, off, keep)
        bad = ~_is_simple(simple_pts, simple_off)
        if bad.any():  # a crossing made by simplification: that instance keeps its exact loop
            keep |= np.repeat(bad, np.diff(off))
            simple_pts, simple_off = _select(pts2, off, keep)
        pts2, off = simple_pts, simple_off
    return (pts2 / 2.0).astype(np.float32), off


def _outer_loops(labels: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longest boundary loop of each instance in ``ids`` as closed polygons of doubled (y, x) coordinates, with its
    straight runs merged."""
    h, w = labels.shape
    padded = np.zeros((h + 2, w + 2), dtype=np.promote_types(labels.dtype, np.int32))
    padded[1:-1, 1:-1] = labels
    wanted = np.zeros(int(max(ids.max(), padded.max())) + 1, dtype=bool)
    wanted[ids] = True
    wc = w + 3  # corners per row of the padded image
    starts, dirs, labs = [], [], []
    # horizontal pixel edges: between (r, c) above and (r + 1, c) below, on corner row r + 1
    rr, cc = np.divmod(np.flatnonzero(padded[1:, :] != padded[:-1, :]), w + 2)  # flat: 10x np.nonzero's speed
    above, below = padded[rr, cc], padded[rr + 1, cc]
    for lab, start, d in ((below, (rr + 1) * wc + cc, 0), (above, (rr + 1) * wc + cc + 1, 2)):
        sel = wanted[lab]
        starts.append(start[sel]), dirs.append(np.full(int(sel.sum()), d)), labs.append(lab[sel])
    # vertical pixel edges: between (r, c) left and (r, c + 1) right, on corner column c + 1
    rr, cc = np.divmod(np.flatnonzero(padded[:, 1:] != padded[:, :-1]), w + 1)
    left, right = padded[rr, cc], padded[rr, cc + 1]
    for lab, start, d in ((right, (rr + 1) * wc + cc + 1, 3), (left, rr * wc + cc + 1, 1)):
        sel = wanted[lab]
        starts.append(start[sel]), dirs.append(np.full(int(sel.sum()), d)), labs.append(lab[sel])
    start, d = np.concatenate(starts).astype(np.int64), np.concatenate(dirs).astype(np.int64)
    lab = np.concatenate(labs).astype(np.int64)
    n_edges = len(start)
    # the next edge starts where this one ends; at a corner where the instance touches itself diagonally the
    # tightest turn wins (the two touching parts stay apart, as in find_contours' default)
    step = np.array([1, wc, -1, -wc], dtype=np.int64)
    key = start * 4 + d
    order = np.argsort(key)
    sorted_key = key[order]
    end = start + step[d]
    succ = np.full(n_edges, -1, dtype=np.int64)
    for turn in (1, 0, 3):
        todo = succ < 0
        want = end[todo] * 4 + (d[todo] + turn) % 4
        pos = np.minimum(np.searchsorted(sorted_key, want), n_edges - 1)
        found = sorted_key[pos] == want
        idx = np.flatnonzero(todo)[found]
        succ[idx] = order[pos[found]]
    if (succ < 0).any():  # cannot happen on a label image: every boundary edge continues
        raise AssertionError("open outline loop")
    # loop id = smallest edge index in the loop, and each edge's distance from it, by pointer doubling
    head = np.arange(n_edges)
    hop = succ.copy()
    span = 1
    while span < n_edges:
        np.minimum(head, head[hop], out=head)
        hop = hop[hop]
        span *= 2
        if span >= 8 and (head == head[succ]).all():
            break
    # rank from the loop's head: cut each loop just before its head and count the steps to the cut
    nxt = np.where(succ == head, np.arange(n_edges), succ)
    dist = _steps_to_end(nxt)
    loop_len = np.bincount(head, minlength=n_edges)
    pos_in_loop = loop_len[head] - 1 - dist
    # the longest loop of each instance (its outer boundary; holes and diagonal-only parts are shorter)
    heads = np.flatnonzero(loop_len)
    best = np.lexsort((heads, -loop_len[heads], lab[heads]))
    first = np.r_[True, lab[heads][best][1:] != lab[heads][best][:-1]]
    chosen = heads[best][first]  # one head per instance, instances ascending
    rank_of_label = np.zeros(len(wanted), dtype=np.int64)
    rank_of_label[ids] = np.arange(len(ids))
    chosen = chosen[np.argsort(rank_of_label[lab[chosen]], kind="stable")]  # the order of ids
    is_chosen = np.zeros(n_edges, dtype=bool)
    is_chosen[chosen] = True
    member = np.flatnonzero(is_chosen[head])
    slot = np.zeros(n_edges, dtype=np.int64)
    slot[chosen] = np.arange(len(chosen))
    member = member[np.lexsort((pos_in_loop[member], slot[head[member]]))]
    # vertex = midpoint of the edge, doubled: 2 * corner + step, corner (i, j) at (i - 1.5, j - 1.5) in pixels
    ci, cj = np.divmod(start[member], wc)
    vy = 2 * ci + _STEP_YX[d[member], 0] - 3
    vx = 2 * cj + _STEP_YX[d[member], 1] - 3
    sizes = loop_len[chosen]
    loop_off = np.concatenate([[0], np.cumsum(sizes)])
    pts = np.stack([vy, vx], axis=1)
    # drop vertices on a straight run (never a reversal: consecutive edges never turn back)
    prev = np.arange(len(pts)) - 1
    prev[loop_off[:-1]] = loop_off[1:] - 1
    nxt_v = np.arange(len(pts)) + 1
    nxt_v[loop_off[1:] - 1] = loop_off[:-1]
    a, b = pts - pts[prev], pts[nxt_v] - pts
    corner = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0] != 0
    # a loop needs at least 3 corners: every loop has 4 or more (the smallest is a one-pixel diamond)
    keep_counts = np.add.reduceat(corner.astype(np.int64), loop_off[:-1])
    pts = pts[corner]
    off = np.concatenate([[0], np.cumsum(keep_counts)])
    return _close(pts, off)


def _steps_to_end(nxt: np.ndarray) -> np.ndarray:
    """Steps from each node to the end of its chain (the node whose ``nxt`` is itself), by pointer doubling."""
    dist = (nxt != np.arange(len(nxt))).astype(np.int64)
    hop = nxt.copy()
    while (hop != hop[hop]).any():
        dist = dist + dist[hop]
        hop = hop[hop]
    return dist


def _close(pts: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repeat each polygon's first vertex at its end."""
    sizes = np.diff(off)
    insert_at = off[1:]
    out = np.insert(pts, insert_at, pts[off[:-1]], axis=0)
    return out, np.concatenate([[0], np.cumsum(sizes + 1)])


def _select(pts: np.ndarray, off: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = np.add.reduceat(keep.astype(np.int64), off[:-1])
    return pts[keep], np.concatenate([[0], np.cumsum(counts)])


def _douglas_peucker(pts: np.ndarray, off: np.ndarray, tolerance: float) -> np.ndarray:
    """Vertices kept by Douglas-Peucker at ``tolerance`` on each closed polygon, all polygons in each pass.

    The distance is skimage's (:func:`skimage.measure.approximate_polygon`): to the chord where the point projects
    inside it, else to the nearer end; a segment is split at its farthest point while that exceeds ``tolerance``.
    """
    keep = np.zeros(len(pts), dtype=bool)
    keep[off[:-1]] = True
    keep[off[1:] - 1] = True
    p = pts.astype(np.float64)
    # a closed polygon's chord is a point: split it first at the vertex farthest from its start
    seg_s, seg_e = off[:-1].copy(), off[1:] - 1
    while len(seg_s):
        inner = seg_e - seg_s - 1
        live = inner > 0
        seg_s, seg_e, inner = seg_s[live], seg_e[live], inner[live]
        if not len(seg_s):
            break
        seg_of = np.repeat(np.arange(len(seg_s)), inner)
        first = np.concatenate([[0], np.cumsum(inner)[:-1]])
        idx = seg_s[seg_of] + 1 + (np.arange(len(seg_of)) - first[seg_of])
        a, b, q = p[seg_s][seg_of], p[seg_e][seg_of], p[idx]
        ab = b - a
        t0 = ((q - a) * ab).sum(1)
        t1 = ((b - q) * ab).sum(1)
        perp = (t0 > 0) & (t1 > 0)
        length = np.hypot(ab[:, 0], ab[:, 1])
        cross = np.abs(ab[:, 0] * (q[:, 1] - a[:, 1]) - ab[:, 1] * (q[:, 0] - a[:, 0]))
        ends = np.minimum(np.hypot(*(q - a).T), np.hypot(*(q - b).T))
        dist = np.where(perp, cross / np.where(length > 0, length, 1.0), ends)
        worst = np.maximum.reduceat(dist, first)
        split = worst > tolerance
        at = np.minimum.reduceat(np.where(dist == worst[seg_of], idx, np.iinfo(np.int64).max), first)
        keep[at[split]] = True
        seg_s = np.concatenate([seg_s[split], at[split]])
        seg_e = np.concatenate([at[split], seg_e[split]])
    return keep


def _is_simple(pts: np.ndarray, off: np.ndarray) -> np.ndarray:
    """Per closed polygon (first vertex repeated last; exact integer coordinates): True when no two of its edges
    touch or cross except consecutive ones at their shared vertex, and no edge folds back onto the previous one.

    Every edge pair of every polygon is tested in a few flat passes (at most :data:`_PAIRS_PER_PASS` pairs each).
    """
    n_edges = np.diff(off) - 1
    ok = n_edges >= 3
    poly = np.flatnonzero(ok)
    if not len(poly):
        return ok
    n = n_edges[poly]
    first_edge = np.cumsum(n) - n
    owner = np.repeat(np.arange(len(poly)), n)  # edge -> polygon (index into poly)
    local = np.arange(int(n.sum())) - first_edge[owner]
    start = off[poly][owner] + local
    a, b = pts[start], pts[start + 1]
    e = b - a
    following = np.where(local == n[owner] - 1, first_edge[owner], np.arange(len(local)) + 1)
    f = e[following]
    fold = (e[:, 0] * f[:, 1] - e[:, 1] * f[:, 0] == 0) & ((e * f).sum(1) < 0)
    bad = np.bincount(owner, weights=fold, minlength=len(poly)) > 0
    # pairs (i, j), j >= i + 2 in the same polygon, except the closing pair (0, n - 1)
    later = np.maximum(n[owner] - local - 2, 0) - ((local == 0) & (n[owner] > 2))
    ends = np.cumsum(later)
    lo = 0
    while lo < len(later):
        hi = max(lo + 1, int(np.searchsorted(ends, ends[lo] - later[lo] + _PAIRS_PER_PASS, side="right")))
        cnt = later[lo:hi]
        i = np.repeat(np.arange(lo, hi), cnt)
        if len(i):
            j = i + 2 + (np.arange(len(i)) - np.repeat(np.cumsum(cnt) - cnt, cnt))
            touch = _segments_touch(a[i], b[i], a[j], b[j])
            bad |= np.bincount(owner[i], weights=touch, minlength=len(poly)) > 0
        lo = hi
    ok[poly] = ~bad
    return ok


def _segments_touch(p1, p2, q1, q2) -> np.ndarray:
    """Closed segments p1-p2 and q1-q2 share a point (exact on integer coordinates)."""

    def orient(a, b, c):
        return np.sign((b[..., 0] - a[..., 0]) * (c[..., 1] - a[..., 1])
                       - (b[..., 1] - a[..., 1]) * (c[..., 0] - a[..., 0]))

    o1, o2 = orient(p1, p2, q1), orient(p1, p2, q2)
    o3, o4 = orient(q1, q2, p1), orient(q1, q2, p2)
    crossing = (o1 * o2 <= 0) & (o3 * o4 <= 0)
    collinear = (o1 == 0) & (o2 == 0)
    overlap = np.ones(o1.shape, dtype=bool)
    for k in (0, 1):
        overlap &= (np.maximum(np.minimum(p1[..., k], p2[..., k]), np.minimum(q1[..., k], q2[..., k]))
                    <= np.minimum(np.maximum(p1[..., k], p2[..., k]), np.maximum(q1[..., k], q2[..., k])))
    return np.where(collinear, overlap, crossing)
