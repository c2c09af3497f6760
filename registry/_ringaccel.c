/* registry._ringaccel: optional C helper for registry.ring's packed "consistent" layout.
 *
 * docs/ring.md ("Why the packed layout") describes the layout: 2**14 buckets, each one sorted
 * array('Q') of entries (low 50 bits of a point << 14 | owner index) ending with the
 * sentinel 2**64-1.  In pure Python a join costs a handful of C-level map() passes
 * per point (copy the bucket, bisect, tie check, insert, store), about 8 element
 * operations x 4096 points, which does not fit the 2 ms join target.  Here each
 * touched bucket costs one new array and one memcpy-speed merge.
 *
 * insert() and remove() (a join, a leave), insert_many() (several joins in one merge) and
 * build() (a whole ring at once); xxh3_points() hashes a member's points (XXH3-64 of short
 * inputs, section at the end), so a bulk build makes no Python int per point.  The four
 * ring functions
 * receive the NEW snapshot's own bucket list and flags (copied by the caller and not yet visible to any reader).  A touched
 * bucket is replaced by a fresh array('Q'); no existing array is ever written to, so
 * older snapshots sharing those arrays see no change (copy-on-write).  On error the
 * list and flags may be partly updated: the caller drops the unfinished snapshot.
 * The results must equal the pure-Python path's entry for entry (tests compare them).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define BUCKET_BITS 14
#define NBUCKETS (1 << BUCKET_BITS)
#define LOW_BITS (64 - BUCKET_BITS)
#define OWNER_BITS 14
#define OWNER_MASK ((uint64_t)((1 << OWNER_BITS) - 1))
#define SENTINEL UINT64_MAX

/* An entry is "point << OWNER_BITS | owner": the shift drops exactly the bucket bits. */
_Static_assert(LOW_BITS + OWNER_BITS == 64, "an entry must fill one uint64");

/* array('Q', [0]).  The array module has no C API; repeating this one-item array
 * (sq_repeat) is the cheapest public way to get a new array('Q') of a given length. */
static PyObject *one_item;

static PyObject *
new_bucket(Py_ssize_t len, Py_buffer *view)
{
    PyObject *arr = PySequence_Repeat(one_item, len);
    if (arr == NULL)
        return NULL;
    if (PyObject_GetBuffer(arr, view, PyBUF_WRITABLE) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    /* Its items are plain numbers, so it can never be part of a reference cycle.
     * The pure-Python path cannot untrack its copies; here the cyclic GC is spared
     * ~4000 new tracked objects per join (collections it would otherwise run). */
    PyObject_GC_UnTrack(arr);
    return arr;
}

/* Borrow the items of an existing bucket, read-only. */
static int
get_bucket(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_FORMAT) < 0)
        return -1;
    if (view->itemsize != 8 || view->format == NULL || strcmp(view->format, "Q") != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_TypeError, "ring buckets must be array('Q') objects");
        return -1;
    }
    const uint64_t *a = view->buf;
    Py_ssize_t n = view->len / 8;
    if (n < 1 || a[n - 1] != SENTINEL) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "ring bucket without its end sentinel");
        return -1;
    }
    return 0;
}

/* One owner's points as passed in: an array('Q') (any buffer of format "Q": its items are
 * read as they are; ConsistentRing.replica_points returns one) or any sequence of ints (each
 * converted and checked: TypeError, OverflowError outside 0..2**64-1). */
typedef struct {
    Py_buffer view;  /* view.obj != NULL: the buffer form */
    PyObject *seq;   /* else PySequence_Fast of the argument */
    Py_ssize_t n;
} points_src;

static int
points_open(PyObject *obj, points_src *p, const char *what)
{
    p->view.obj = NULL;
    p->seq = NULL;
    if (PyObject_CheckBuffer(obj)) {
        if (PyObject_GetBuffer(obj, &p->view, PyBUF_FORMAT) < 0) {
            p->view.obj = NULL;
            return -1;
        }
        if (p->view.itemsize == 8 && p->view.format != NULL && strcmp(p->view.format, "Q") == 0) {
            p->n = p->view.len / 8;
            return 0;
        }
        PyBuffer_Release(&p->view);  /* another item type: read it as a sequence of ints */
        p->view.obj = NULL;
    }
    p->seq = PySequence_Fast(obj, what);
    if (p->seq == NULL)
        return -1;
    p->n = PySequence_Fast_GET_SIZE(p->seq);
    return 0;
}

static int
points_copy(const points_src *p, uint64_t *dst)
{
    if (p->seq == NULL) {
        memcpy(dst, p->view.buf, (size_t)p->n * 8);
        return 0;
    }
    PyObject **items = PySequence_Fast_ITEMS(p->seq);
    for (Py_ssize_t i = 0; i < p->n; i++) {
        if (!PyLong_Check(items[i])) {
            PyErr_SetString(PyExc_TypeError, "points must be ints");
            return -1;
        }
        dst[i] = PyLong_AsUnsignedLongLong(items[i]);  /* OverflowError outside 0..2**64-1 */
        if (dst[i] == (uint64_t)-1 && PyErr_Occurred())
            return -1;
    }
    return 0;
}

static void
points_close(points_src *p)
{
    if (p->view.obj != NULL)
        PyBuffer_Release(&p->view);
    p->view.obj = NULL;
    Py_CLEAR(p->seq);
}

/* Sort the joiner's points: LSD radix, 8 bits per pass.  The points are hashes, so
 * a comparison sort would spend several times longer; the result (in a) groups them by
 * bucket and orders them within a bucket, which is what the merge consumes. */
static void
sort_points(uint64_t *a, uint64_t *tmp, Py_ssize_t n)
{
    uint64_t *src = a, *dst = tmp;
    for (int shift = 0; shift < 64; shift += 8) {
        Py_ssize_t count[257] = {0};
        for (Py_ssize_t i = 0; i < n; i++)
            count[((src[i] >> shift) & 0xff) + 1]++;
        for (int d = 0; d < 256; d++)
            count[d + 1] += count[d];
        for (Py_ssize_t i = 0; i < n; i++)
            dst[count[(src[i] >> shift) & 0xff]++] = src[i];
        uint64_t *t = src;
        src = dst;
        dst = t;
    }
    /* 8 passes: the sorted points are back in a. */
}

/* First index in a[lo:end) whose point is >= the point of entry x.  Inside a run of
 * equal points the entries are in id order, not numeric order, but every entry of a
 * smaller point is below "point << 14 | 0" and every other entry is not: the predicate
 * stays monotone, so a binary search works. */
static Py_ssize_t
run_start(const uint64_t *a, Py_ssize_t lo, Py_ssize_t end, uint64_t x)
{
    uint64_t key = x & ~OWNER_MASK;
    Py_ssize_t hi = end;
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        if (a[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Id (borrowed) of the owner of an existing entry; an error for a corrupt ring. */
static PyObject *
owner_id(PyObject *ids, uint64_t entry)
{
    uint64_t owner = entry & OWNER_MASK;
    if (owner < (uint64_t)PyList_GET_SIZE(ids)) {
        PyObject *id = PyList_GET_ITEM(ids, (Py_ssize_t)owner);
        if (PyUnicode_Check(id))
            return id;
    }
    PyErr_Format(PyExc_ValueError, "ring entry names owner %llu, which has no id",
                 (unsigned long long)owner);
    return NULL;
}

/* Where the new entry x goes in a[lo:end) (end excludes the sentinel): after every
 * smaller point and, among entries of the same point, after those whose id is <= name.
 * That keeps each run in id order, so its first entry (the one lookups find) is the
 * smallest id: the documented tie rule, and the same place registry/ring/consistent.py's _place picks. */
static Py_ssize_t
insert_pos(const uint64_t *a, Py_ssize_t lo, Py_ssize_t end, uint64_t x,
           PyObject *ids, PyObject *name)
{
    uint64_t point = x & ~OWNER_MASK;
    Py_ssize_t i = run_start(a, lo, end, x);
    for (; i < end && (a[i] & ~OWNER_MASK) == point; i++) {  /* a tie: rare */
        PyObject *other = owner_id(ids, a[i]);
        if (other == NULL)
            return -1;
        int c = PyUnicode_Compare(name, other);
        if (c == -1 && PyErr_Occurred())
            return -1;
        if (c < 0)
            break;
    }
    return i;
}

/* Index of entry x in a[lo:end): it is somewhere in the run of its point. */
static Py_ssize_t
find_entry(const uint64_t *a, Py_ssize_t lo, Py_ssize_t end, uint64_t x)
{
    uint64_t point = x & ~OWNER_MASK;
    for (Py_ssize_t i = run_start(a, lo, end, x); i < end && (a[i] & ~OWNER_MASK) == point; i++) {
        if (a[i] == x)
            return i;
    }
    PyErr_SetString(PyExc_ValueError, "entry to remove is not on the ring");
    return -1;
}

/* Replace bucket `b` of `bk` by a new array: the old entries merged with the k sorted
 * entries xs (adding) or without them (removing).  Clears or sets the bucket's flags. */
static int
update_bucket(PyObject *bk, char *flags, Py_ssize_t b, const uint64_t *xs, Py_ssize_t k,
              int adding, PyObject *ids, PyObject *name)
{
    Py_buffer old, out;
    if (PyList_GET_SIZE(bk) != NBUCKETS) {
        PyErr_SetString(PyExc_ValueError, "bucket list changed size");
        return -1;
    }
    if (get_bucket(PyList_GET_ITEM(bk, b), &old) < 0)
        return -1;
    const uint64_t *a = old.buf;
    Py_ssize_t na = old.len / 8;  /* with the sentinel */
    Py_ssize_t len = adding ? na + k : na - k;
    if (len < 1) {
        PyBuffer_Release(&old);
        PyErr_SetString(PyExc_ValueError, "more entries to remove than the bucket holds");
        return -1;
    }
    PyObject *arr = new_bucket(len, &out);
    if (arr == NULL) {
        PyBuffer_Release(&old);
        return -1;
    }
    uint64_t *o = out.buf;
    Py_ssize_t j = 0, w = 0;  /* next old entry to copy; next slot to write */
    for (Py_ssize_t t = 0; t < k; t++) {
        Py_ssize_t pos;
        if (adding) {
            /* name NULL: several owners (insert_many); each entry's own id decides its ties. */
            PyObject *who = name != NULL ? name : owner_id(ids, xs[t]);
            pos = who == NULL ? -1 : insert_pos(a, j, na - 1, xs[t], ids, who);
        }
        else {
            pos = find_entry(a, j, na - 1, xs[t]);
        }
        if (pos < 0)
            goto fail;
        memcpy(o + w, a + j, (size_t)(pos - j) * 8);
        w += pos - j;
        if (adding) {
            o[w++] = xs[t];
            j = pos;
        }
        else {
            j = pos + 1;  /* skip the removed entry */
        }
    }
    memcpy(o + w, a + j, (size_t)(na - j) * 8);  /* the rest, sentinel included */
    PyBuffer_Release(&out);
    PyBuffer_Release(&old);
    flags[b] = flags[b + NBUCKETS] = (char)(len > 1);
    PyObject *prev = PyList_GET_ITEM(bk, b);
    PyList_SET_ITEM(bk, b, arr);
    /* Last: dropping the old array is the one step here that could run other code
     * (a weakref callback), which is why the list size is checked on every call. */
    Py_DECREF(prev);
    return 0;
fail:
    PyBuffer_Release(&out);
    PyBuffer_Release(&old);
    Py_DECREF(arr);
    return -1;
}

/* Shared by insert() and remove(): read and sort the points, then update each touched
 * bucket once with all of its entries. */
static PyObject *
update(PyObject *args, int adding)
{
    PyObject *bk, *points, *ids = NULL;
    Py_buffer flags;
    Py_ssize_t owner;
    int ok;
    if (adding)
        ok = PyArg_ParseTuple(args, "O!w*OnO!:insert", &PyList_Type, &bk, &flags, &points,
                              &owner, &PyList_Type, &ids);
    else
        ok = PyArg_ParseTuple(args, "O!w*On:remove", &PyList_Type, &bk, &flags, &points, &owner);
    if (!ok)
        return NULL;

    PyObject *name = NULL, *result = NULL;
    points_src src = {.view = {.obj = NULL}, .seq = NULL, .n = 0};
    uint64_t *xs = NULL;
    if (flags.len != 2 * NBUCKETS || PyList_GET_SIZE(bk) != NBUCKETS) {
        PyErr_SetString(PyExc_ValueError, "expected 2**14 buckets and 2 * 2**14 flags");
        goto done;
    }
    if (owner < 0 || (uint64_t)owner >= OWNER_MASK) {  /* the top index is reserved */
        PyErr_SetString(PyExc_ValueError, "owner index out of range");
        goto done;
    }
    if (adding) {
        if (owner >= PyList_GET_SIZE(ids) || !PyUnicode_Check(PyList_GET_ITEM(ids, owner))) {
            PyErr_SetString(PyExc_ValueError, "ids[owner] must be the joiner's id (a str)");
            goto done;
        }
        name = PyList_GET_ITEM(ids, owner);
        Py_INCREF(name);  /* held for the call whatever happens to the list */
    }
    if (points_open(points, &src, "points must be a sequence of ints") < 0)
        goto done;
    Py_ssize_t n = src.n;
    xs = PyMem_Malloc(2 * (size_t)(n ? n : 1) * sizeof(uint64_t));
    if (xs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (points_copy(&src, xs) < 0)
        goto done;
    points_close(&src);
    sort_points(xs, xs + n, n);
    for (Py_ssize_t i = 0, j; i < n; i = j) {
        Py_ssize_t b = (Py_ssize_t)(xs[i] >> LOW_BITS);
        /* This bucket's points become entries (still sorted: same bucket bits). */
        for (j = i; j < n && (Py_ssize_t)(xs[j] >> LOW_BITS) == b; j++)
            xs[j] = xs[j] << OWNER_BITS | (uint64_t)owner;
        if (update_bucket(bk, flags.buf, b, xs + i, j - i, adding, ids, name) < 0)
            goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(xs);
    points_close(&src);
    Py_XDECREF(name);
    PyBuffer_Release(&flags);
    return result;
}

static PyObject *
insert(PyObject *Py_UNUSED(self), PyObject *args)
{
    return update(args, 1);
}

static PyObject *
remove_(PyObject *Py_UNUSED(self), PyObject *args)
{
    return update(args, 0);
}

/* Sort points xs (n) by value, carrying each one's owner os[i] along; stable (LSD radix,
 * 8 bits per pass), so equal points keep the order they came in: insert_many's callers
 * pass the owners in id order, which is then the order of a tied run. */
static void
sort_pairs(uint64_t *xs, uint16_t *os, uint64_t *xt, uint16_t *ot, Py_ssize_t n)
{
    uint64_t *sx = xs, *dx = xt;
    uint16_t *so = os, *dO = ot;
    for (int shift = 0; shift < 64; shift += 8) {
        Py_ssize_t count[257] = {0};
        for (Py_ssize_t i = 0; i < n; i++)
            count[((sx[i] >> shift) & 0xff) + 1]++;
        for (int d = 0; d < 256; d++)
            count[d + 1] += count[d];
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_ssize_t at = count[(sx[i] >> shift) & 0xff]++;
            dx[at] = sx[i];
            dO[at] = so[i];
        }
        uint64_t *t = sx; sx = dx; dx = t;
        uint16_t *u = so; so = dO; dO = u;
    }
    /* 8 passes: the sorted pairs are back in xs, os. */
}

/* insert_many(buckets, flags, points, owners, ids): insert() of several owners in one
 * merge per touched bucket.  points[i] (a sequence of ints) belong to owner index
 * owners[i]; the owners come in id order (ties then need no sort by name here). */
static PyObject *
insert_many(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *bk, *points, *owners, *ids;
    Py_buffer flags;
    if (!PyArg_ParseTuple(args, "O!w*O!O!O!:insert_many", &PyList_Type, &bk, &flags, &PyList_Type,
                          &points, &PyList_Type, &owners, &PyList_Type, &ids))
        return NULL;
    PyObject *result = NULL;
    points_src *srcs = NULL;
    uint64_t *xs = NULL;
    uint16_t *os = NULL;
    Py_ssize_t m = PyList_GET_SIZE(points), nseq = 0, n = 0;
    if (flags.len != 2 * NBUCKETS || PyList_GET_SIZE(bk) != NBUCKETS) {
        PyErr_SetString(PyExc_ValueError, "expected 2**14 buckets and 2 * 2**14 flags");
        goto done;
    }
    if (PyList_GET_SIZE(owners) != m) {
        PyErr_SetString(PyExc_ValueError, "points and owners must have one item per owner");
        goto done;
    }
    srcs = PyMem_Calloc((size_t)(m ? m : 1), sizeof(points_src));
    if (srcs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; nseq < m; nseq++) {
        if (points_open(PyList_GET_ITEM(points, nseq), &srcs[nseq], "points must be sequences of ints") < 0)
            goto done;
        n += srcs[nseq].n;
    }
    xs = PyMem_Malloc(2 * (size_t)(n ? n : 1) * sizeof(uint64_t));
    os = PyMem_Malloc(2 * (size_t)(n ? n : 1) * sizeof(uint16_t));
    if (xs == NULL || os == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < m; i++) {
        Py_ssize_t owner = PyLong_AsSsize_t(PyList_GET_ITEM(owners, i));
        if (owner == -1 && PyErr_Occurred())
            goto done;
        if (owner < 0 || (uint64_t)owner >= OWNER_MASK || owner >= PyList_GET_SIZE(ids)
            || !PyUnicode_Check(PyList_GET_ITEM(ids, owner))) {
            PyErr_SetString(PyExc_ValueError, "each owner must be an index of ids holding a str");
            goto done;
        }
        if (points_copy(&srcs[i], xs + at) < 0)
            goto done;
        for (Py_ssize_t p = 0; p < srcs[i].n; p++, at++)
            os[at] = (uint16_t)owner;
    }
    sort_pairs(xs, os, xs + n, os + n, n);
    for (Py_ssize_t i = 0, j; i < n; i = j) {
        Py_ssize_t b = (Py_ssize_t)(xs[i] >> LOW_BITS);
        for (j = i; j < n && (Py_ssize_t)(xs[j] >> LOW_BITS) == b; j++)
            xs[j] = xs[j] << OWNER_BITS | (uint64_t)os[j];
        /* ids is the caller's new table: a str at every index read here (checked above
         * for the new owners; owner_id checks the old entries' owners). */
        if (update_bucket(bk, flags.buf, b, xs + i, j - i, 1, ids, NULL) < 0)
            goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    PyMem_Free(xs);
    PyMem_Free(os);
    for (Py_ssize_t i = 0; i < nseq; i++)
        points_close(&srcs[i]);
    PyMem_Free(srcs);
    PyBuffer_Release(&flags);
    return result;
}

/* Sort the k entries of one bucket (by point, then by the tie rank in the low bits).
 * The points are hashes, so their top bits are uniform: one counting pass on the top d
 * bits (2**d about k) leaves runs of ~1 entry, which an insertion sort then finishes in
 * about one step per entry.  tmp holds k entries; count holds 2**16 + 1. */
static void
sort_bucket(uint64_t *a, uint64_t *tmp, Py_ssize_t *count, Py_ssize_t k)
{
    if (k < 2)
        return;
    int d = 1;
    while (d < 16 && ((Py_ssize_t)1 << d) < k)
        d++;
    int shift = 64 - d;
    Py_ssize_t m = (Py_ssize_t)1 << d;
    memset(count, 0, (size_t)(m + 1) * sizeof(Py_ssize_t));
    for (Py_ssize_t i = 0; i < k; i++)
        count[(a[i] >> shift) + 1]++;
    for (Py_ssize_t v = 0; v < m; v++)
        count[v + 1] += count[v];
    for (Py_ssize_t i = 0; i < k; i++)
        tmp[count[a[i] >> shift]++] = a[i];
    for (Py_ssize_t i = 0; i < k; i++) {
        uint64_t x = tmp[i];
        Py_ssize_t j = i;
        while (j > 0 && a[j - 1] > x) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Pass 2 of build(): every member's entries "point << 14 | rank" into their bucket arrays,
 * at fill[b].  Written straight from the members' points, consecutive entries land in any of the
 * 2**14 arrays, each write a cache and TLB miss: ~30 ns an entry, most of a 2,000-member build.
 * So the points go through a stage, a round of members (up to cap entries) at a time: grouped
 * there by their top PART_BITS bits (2**7 write streams), then each group scattered into its own
 * 2**7 buckets.  Returns 1 if an entry found no room (a point array was written to since the
 * count; the caller raises), else 0. */
#define PART_BITS 7
#define NPARTS (1 << PART_BITS)
#define STAGE_ENTRIES ((Py_ssize_t)1 << 18)  /* 2 MiB of points + 0.5 MiB of ranks a round */

static int
scatter(const Py_buffer *src, const uint16_t *rank, Py_ssize_t n, Py_buffer *dstv,
        const Py_ssize_t *count, Py_ssize_t *fill, uint64_t *stage, uint16_t *stage_r, Py_ssize_t cap)
{
    int overflow = 0;
    for (Py_ssize_t i0 = 0, i1; i0 < n; i0 = i1) {
        Py_ssize_t m = src[i0].len / 8;  /* <= cap: the caller sizes the stage for the largest member */
        for (i1 = i0 + 1; i1 < n && m + src[i1].len / 8 <= cap; i1++)
            m += src[i1].len / 8;
        Py_ssize_t start[NPARTS + 1] = {0}, pos[NPARTS];
        for (Py_ssize_t i = i0; i < i1; i++) {
            const uint64_t *p = src[i].buf;
            Py_ssize_t k = src[i].len / 8;
            for (Py_ssize_t j = 0; j < k; j++)
                start[(p[j] >> (64 - PART_BITS)) + 1]++;
        }
        for (int q = 0; q < NPARTS; q++) {
            start[q + 1] += start[q];
            pos[q] = start[q];
        }
        for (Py_ssize_t i = i0; i < i1; i++) {
            const uint64_t *p = src[i].buf;
            Py_ssize_t k = src[i].len / 8;
            uint16_t r = rank[i];
            for (Py_ssize_t j = 0; j < k; j++) {
                Py_ssize_t q = (Py_ssize_t)(p[j] >> (64 - PART_BITS));
                if (pos[q] < start[q + 1]) {
                    stage[pos[q]] = p[j];
                    stage_r[pos[q]++] = r;
                }
                else {
                    overflow = 1;
                }
            }
        }
        for (int q = 0; q < NPARTS; q++) {
            for (Py_ssize_t t = start[q]; t < pos[q]; t++) {
                Py_ssize_t b = (Py_ssize_t)(stage[t] >> LOW_BITS);
                if (fill[b] < count[b])  /* always, unless a point array changed: stay in bounds anyway */
                    ((uint64_t *)dstv[b].buf)[fill[b]++] = stage[t] << OWNER_BITS | stage_r[t];
                else
                    overflow = 1;
            }
        }
    }
    return overflow;
}

/* build(buckets, flags, points, ranks, owner_of_rank) -> number of points.
 *
 * Bulk load of a whole ring (Ring.build: a client cache's Watch snapshot, a registry
 * learning a group), replacing registry/ring/consistent.py's pure-Python passes, which cost seconds at a few
 * thousand members (8 M points at 2,000 members of 4,096 points).  points[i] is an
 * array('Q') of member i's points (any order); ranks[i] its place in the tie order
 * (smaller first on an equal point); owner_of_rank[r] the owner index an entry of rank r
 * carries.  Two passes over the points: count per bucket, then scatter "low bits << 14 |
 * rank" into each new bucket array (scatter(): through a stage of at most 2**18 entries, or
 * the largest member's count, never a copy of all points); then,
 * without the GIL, sort every bucket (sort_bucket) and swap ranks for owner indexes.  Empty buckets keep
 * the list's existing (shared) empty array.  Writes only into `buckets` and `flags`,
 * which belong to a ring not yet published. */
static PyObject *
build(PyObject *Py_UNUSED(self), PyObject *args)
{
    PyObject *bk, *points, *ranks_obj, *owners_obj;
    Py_buffer flags;
    if (!PyArg_ParseTuple(args, "O!w*O!OO:build", &PyList_Type, &bk, &flags, &PyList_Type, &points,
                          &ranks_obj, &owners_obj))
        return NULL;
    PyObject *result = NULL, *ranks = NULL, *owners = NULL;
    Py_ssize_t n = PyList_GET_SIZE(points), nbufs = 0, nnew = 0;
    Py_buffer *src = NULL, *dstv = NULL;
    Py_ssize_t *count = NULL, *fill = NULL, *digits = NULL;
    uint64_t *tmp = NULL, *stage = NULL;
    uint16_t *rank = NULL, *owner_of = NULL, *stage_r = NULL;
    PyObject **made = NULL;
    int overflow = 0;

    if (flags.len != 2 * NBUCKETS || PyList_GET_SIZE(bk) != NBUCKETS) {
        PyErr_SetString(PyExc_ValueError, "expected 2**14 buckets and 2 * 2**14 flags");
        goto done;
    }
    if ((uint64_t)n > OWNER_MASK) {  /* indexes 0..n-1; the top index is reserved */
        PyErr_SetString(PyExc_ValueError, "too many members for one ring");
        goto done;
    }
    ranks = PySequence_Fast(ranks_obj, "ranks must be a sequence of ints");
    if (ranks == NULL)
        goto done;
    owners = PySequence_Fast(owners_obj, "owner_of_rank must be a sequence of ints");
    if (owners == NULL)
        goto done;
    if (PySequence_Fast_GET_SIZE(ranks) != n || PySequence_Fast_GET_SIZE(owners) != n) {
        PyErr_SetString(PyExc_ValueError, "points, ranks and owner_of_rank must have one item per member");
        goto done;
    }
    src = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Py_buffer));
    dstv = PyMem_Calloc(NBUCKETS, sizeof(Py_buffer));
    count = PyMem_Calloc(NBUCKETS, sizeof(Py_ssize_t));
    fill = PyMem_Calloc(NBUCKETS, sizeof(Py_ssize_t));
    rank = PyMem_Calloc((size_t)(n ? n : 1), sizeof(uint16_t));
    owner_of = PyMem_Calloc((size_t)(n ? n : 1), sizeof(uint16_t));
    made = PyMem_Calloc(NBUCKETS, sizeof(PyObject *));
    if (!src || !dstv || !count || !fill || !rank || !owner_of || !made) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long r = PyLong_AsLong(PySequence_Fast_GET_ITEM(ranks, i));
        long o = PyLong_AsLong(PySequence_Fast_GET_ITEM(owners, i));
        if ((r == -1 || o == -1) && PyErr_Occurred())
            goto done;
        if (r < 0 || r >= n || o < 0 || o >= n) {
            PyErr_SetString(PyExc_ValueError, "ranks and owner indexes must be in 0..len(points)-1");
            goto done;
        }
        rank[i] = (uint16_t)r;
        owner_of[i] = (uint16_t)o;  /* owners is indexed by rank */
    }
    /* Pass 1: hold every member's buffer (nothing can resize them meanwhile), count. */
    for (; nbufs < n; nbufs++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(points, nbufs), &src[nbufs], PyBUF_FORMAT) < 0)
            goto done;
        Py_buffer *v = &src[nbufs];
        if (v->itemsize != 8 || v->format == NULL || strcmp(v->format, "Q") != 0) {
            nbufs++;
            PyErr_SetString(PyExc_TypeError, "points must be array('Q') objects");
            goto done;
        }
    }
    /* The point arrays are held (exported buffers cannot be resized) and every array written
     * below is new and not yet visible: the loops over points need no GIL, so the threads
     * of a client still answering from its previous ring keep running meanwhile. */
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        const uint64_t *p = src[i].buf;
        Py_ssize_t k = src[i].len / 8;
        for (Py_ssize_t j = 0; j < k; j++)
            count[p[j] >> LOW_BITS]++;
    }
    Py_END_ALLOW_THREADS
    Py_ssize_t total = 0;
    for (Py_ssize_t b = 0; b < NBUCKETS; b++) {
        total += count[b];
        if (count[b] == 0)
            continue;
        made[b] = new_bucket(count[b] + 1, &dstv[b]);
        if (made[b] == NULL)
            goto done;
        nnew = b + 1;
    }
    Py_ssize_t biggest = 0;
    for (Py_ssize_t b = 0; b < NBUCKETS; b++)
        biggest = count[b] > biggest ? count[b] : biggest;
    tmp = PyMem_Malloc((size_t)(biggest + 1) * sizeof(uint64_t));
    digits = PyMem_Malloc(((1 << 16) + 1) * sizeof(Py_ssize_t));
    Py_ssize_t cap = STAGE_ENTRIES;  /* the stage holds the largest member whole */
    for (Py_ssize_t i = 0; i < n; i++)
        cap = src[i].len / 8 > cap ? src[i].len / 8 : cap;
    cap = cap < total ? cap : total;
    stage = PyMem_Malloc((size_t)(cap ? cap : 1) * sizeof(uint64_t));
    stage_r = PyMem_Malloc((size_t)(cap ? cap : 1) * sizeof(uint16_t));
    if (tmp == NULL || digits == NULL || stage == NULL || stage_r == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    /* Pass 2: scatter the entries, still tagged with the member's rank. */
    overflow = scatter(src, rank, n, dstv, count, fill, stage, stage_r, cap);
    for (Py_ssize_t b = 0; b < NBUCKETS; b++) {
        if (made[b] == NULL)
            continue;
        uint64_t *a = dstv[b].buf;
        Py_ssize_t k = count[b];
        sort_bucket(a, tmp, digits, k);
        for (Py_ssize_t j = 0; j < k; j++)
            a[j] = (a[j] & ~OWNER_MASK) | owner_of[a[j] & OWNER_MASK];
        a[k] = SENTINEL;
        if (fill[b] != k)
            overflow = 1;  /* never read uninitialised entries into a ring */
    }
    Py_END_ALLOW_THREADS
    if (overflow) {  /* a points array was written to between the two passes */
        PyErr_SetString(PyExc_RuntimeError, "points changed during the build");
        goto done;
    }
    {
        char *fl = flags.buf;
        for (Py_ssize_t b = 0; b < NBUCKETS; b++) {
            if (made[b] == NULL)
                continue;
            PyBuffer_Release(&dstv[b]);
            fl[b] = fl[b + NBUCKETS] = 1;
            PyObject *prev = PyList_GET_ITEM(bk, b);
            PyList_SET_ITEM(bk, b, made[b]);
            made[b] = NULL;
            Py_DECREF(prev);
        }
    }
    result = PyLong_FromSsize_t(total);
done:
    if (made != NULL) {
        for (Py_ssize_t b = 0; b < nnew; b++) {
            if (made[b] != NULL) {
                PyBuffer_Release(&dstv[b]);
                Py_DECREF(made[b]);
            }
        }
    }
    for (Py_ssize_t i = 0; i < nbufs; i++)
        PyBuffer_Release(&src[i]);
    PyMem_Free(src);
    PyMem_Free(dstv);
    PyMem_Free(count);
    PyMem_Free(fill);
    PyMem_Free(rank);
    PyMem_Free(owner_of);
    PyMem_Free(made);
    PyMem_Free(tmp);
    PyMem_Free(stage);
    PyMem_Free(stage_r);
    PyMem_Free(digits);
    Py_XDECREF(ranks);
    Py_XDECREF(owners);
    PyBuffer_Release(&flags);
    return result;
}

/* ------------------------------------------------------------------ XXH3-64, short inputs
 *
 * A "consistent" member's points are xxh3_64(f"{id}-{i}") (uhashring's scheme): ~4,000 short
 * hashes per member.  Through xxhash.xxh3_64_intdigest each costs a bytes object, a call and an
 * int (0.3-0.75 us), which made a full ring build cost ~3 ms per member (docs/ring.md).  Here
 * they are hashed straight into an array('Q') for build().
 *
 * XXH3_64bits with seed 0 and the default secret, for 0..240 bytes only: the 0-16, 17-128 and
 * 129-240 byte paths of Cyan4973/xxHash's xxhash.h (v0.8.x; XXH3's output is frozen since
 * v0.8.0), restated with the seed fixed at 0 (every "+ seed" / "- seed" vanishes, as does
 * the seed swap of the 4-8 byte path).  Longer inputs take the long-key path (stripes,
 * accumulators, scrambling), which is not here: xxh3_points returns None for them and the
 * caller hashes with the xxhash package.  tests/registry/test_ring_accel.py compares every
 * length 0..240 with xxhash.xxh3_64_intdigest. */

/* XXH3_kSecret, xxhash.h's default secret (192 bytes, "taken directly from FARSH");
 * the short paths read its first 136 (XXH3_SECRET_SIZE_MIN). */
static const uint8_t xxh3_secret[192] = {
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c,
    0xf7, 0x21, 0xad, 0x1c, 0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb,
    0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f, 0xcb, 0x79, 0xe6, 0x4e,
    0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6,
    0x81, 0x3a, 0x26, 0x4c, 0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb,
    0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3, 0x71, 0x64, 0x48, 0x97,
    0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7,
    0xc7, 0x0b, 0x4f, 0x1d, 0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31,
    0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64, 0xea, 0xc5, 0xac, 0x83,
    0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26,
    0x29, 0xd4, 0x68, 0x9e, 0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc,
    0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce, 0x45, 0xcb, 0x3a, 0x8f,
    0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
};

#define XXH_PRIME64_1 0x9E3779B185EBCA87ULL
#define XXH_PRIME64_2 0xC2B2AE3D27D4EB4FULL
#define XXH_PRIME64_3 0x165667B19E3779F9ULL
#define XXH_PRIME_MX1 0x165667919E3779F9ULL
#define XXH_PRIME_MX2 0x9FB21C651E98DF25ULL
#define XXH3_SECRET_SIZE_MIN 136
#define XXH3_MIDSIZE_MAX 240
#define XXH3_MIDSIZE_STARTOFFSET 3
#define XXH3_MIDSIZE_LASTOFFSET 17

/* Little-endian reads on any host (compilers turn these into one load on x86 and ARM). */
static inline uint32_t
read32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t
read64(const uint8_t *p)
{
    return (uint64_t)read32(p) | (uint64_t)read32(p + 4) << 32;
}

static inline uint64_t
rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t
swap64(uint64_t x)
{
    x = (x & 0x00000000FFFFFFFFULL) << 32 | (x & 0xFFFFFFFF00000000ULL) >> 32;
    x = (x & 0x0000FFFF0000FFFFULL) << 16 | (x & 0xFFFF0000FFFF0000ULL) >> 16;
    x = (x & 0x00FF00FF00FF00FFULL) << 8 | (x & 0xFF00FF00FF00FF00ULL) >> 8;
    return x;
}

/* The 128-bit product of two 64-bit numbers, low half XOR high half (XXH3_mul128_fold64). */
static inline uint64_t
mul128_fold64(uint64_t a, uint64_t b)
{
#if defined(__SIZEOF_INT128__)
    __extension__ typedef unsigned __int128 u128;  /* GCC and Clang on 64-bit hosts */
    u128 p = (u128)a * b;
    return (uint64_t)p ^ (uint64_t)(p >> 64);
#else
    uint64_t lo_lo = (a & 0xFFFFFFFF) * (b & 0xFFFFFFFF);
    uint64_t hi_lo = (a >> 32) * (b & 0xFFFFFFFF);
    uint64_t lo_hi = (a & 0xFFFFFFFF) * (b >> 32);
    uint64_t hi_hi = (a >> 32) * (b >> 32);
    uint64_t cross = (lo_lo >> 32) + (hi_lo & 0xFFFFFFFF) + lo_hi;
    uint64_t upper = (hi_lo >> 32) + (cross >> 32) + hi_hi;
    uint64_t lower = (cross << 32) | (lo_lo & 0xFFFFFFFF);
    return lower ^ upper;
#endif
}

static inline uint64_t
xxh64_avalanche(uint64_t h)
{
    h ^= h >> 33;
    h *= XXH_PRIME64_2;
    h ^= h >> 29;
    h *= XXH_PRIME64_3;
    h ^= h >> 32;
    return h;
}

static inline uint64_t
xxh3_avalanche(uint64_t h)
{
    h ^= h >> 37;
    h *= XXH_PRIME_MX1;
    h ^= h >> 32;
    return h;
}

static inline uint64_t
xxh3_rrmxmx(uint64_t h, uint64_t len)
{
    h ^= rotl64(h, 49) ^ rotl64(h, 24);
    h *= XXH_PRIME_MX2;
    h ^= (h >> 35) + len;
    h *= XXH_PRIME_MX2;
    return h ^ (h >> 28);
}

static inline uint64_t
xxh3_mix16(const uint8_t *in, const uint8_t *secret)
{
    return mul128_fold64(read64(in) ^ read64(secret), read64(in + 8) ^ read64(secret + 8));
}

/* xxh3_64(in[0:len]) for len <= 240 (the caller checks). */
static uint64_t
xxh3_64_short(const uint8_t *in, size_t len)
{
    const uint8_t *s = xxh3_secret;
    if (len <= 16) {
        if (len > 8) {  /* XXH3_len_9to16_64b */
            uint64_t lo = read64(in) ^ (read64(s + 24) ^ read64(s + 32));
            uint64_t hi = read64(in + len - 8) ^ (read64(s + 40) ^ read64(s + 48));
            return xxh3_avalanche(len + swap64(lo) + hi + mul128_fold64(lo, hi));
        }
        if (len >= 4) {  /* XXH3_len_4to8_64b */
            uint64_t input64 = read32(in + len - 4) + ((uint64_t)read32(in) << 32);
            return xxh3_rrmxmx(input64 ^ (read64(s + 8) ^ read64(s + 16)), len);
        }
        if (len > 0) {  /* XXH3_len_1to3_64b */
            uint32_t combined = (uint32_t)in[0] << 16 | (uint32_t)in[len >> 1] << 24
                                | (uint32_t)in[len - 1] | (uint32_t)len << 8;
            return xxh64_avalanche((uint64_t)combined ^ (uint64_t)(read32(s) ^ read32(s + 4)));
        }
        return xxh64_avalanche(read64(s + 56) ^ read64(s + 64));
    }
    uint64_t acc = len * XXH_PRIME64_1;
    if (len <= 128) {  /* XXH3_len_17to128_64b */
        if (len > 32) {
            if (len > 64) {
                if (len > 96) {
                    acc += xxh3_mix16(in + 48, s + 96);
                    acc += xxh3_mix16(in + len - 64, s + 112);
                }
                acc += xxh3_mix16(in + 32, s + 64);
                acc += xxh3_mix16(in + len - 48, s + 80);
            }
            acc += xxh3_mix16(in + 16, s + 32);
            acc += xxh3_mix16(in + len - 32, s + 48);
        }
        acc += xxh3_mix16(in, s);
        acc += xxh3_mix16(in + len - 16, s + 16);
        return xxh3_avalanche(acc);
    }
    /* XXH3_len_129to240_64b */
    size_t rounds = len / 16;
    for (size_t i = 0; i < 8; i++)
        acc += xxh3_mix16(in + 16 * i, s + 16 * i);
    uint64_t acc_end = xxh3_mix16(in + len - 16, s + XXH3_SECRET_SIZE_MIN - XXH3_MIDSIZE_LASTOFFSET);
    acc = xxh3_avalanche(acc);
    for (size_t i = 8; i < rounds; i++)
        acc_end += xxh3_mix16(in + 16 * i, s + 16 * (i - 8) + XXH3_MIDSIZE_STARTOFFSET);
    return xxh3_avalanche(acc + acc_end);
}

/* xxh3_64(data) -> int: for tests (the C hash against the xxhash package's). */
static PyObject *
xxh3_64(PyObject *Py_UNUSED(self), PyObject *arg)
{
    Py_buffer in;
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL;
    if (in.len > XXH3_MIDSIZE_MAX)
        PyErr_SetString(PyExc_ValueError, "xxh3_64 here hashes at most 240 bytes");
    else
        result = PyLong_FromUnsignedLongLong(xxh3_64_short(in.buf, (size_t)in.len));
    PyBuffer_Release(&in);
    return result;
}

/* xxh3_points(prefix, count) -> array('Q') of xxh3_64(prefix + b"%d" % i) for i in range(count),
 * or None when the longest input would pass 240 bytes (the caller then hashes in Python). */
static PyObject *
xxh3_points(PyObject *Py_UNUSED(self), PyObject *args)
{
    Py_buffer prefix;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "y*n:xxh3_points", &prefix, &count))
        return NULL;
    PyObject *result = NULL;
    if (count < 0) {
        PyErr_SetString(PyExc_ValueError, "count must be >= 0");
        goto done;
    }
    int width = 1;  /* digits of count - 1, the longest suffix */
    for (Py_ssize_t top = count - 1; top >= 10; top /= 10)
        width++;
    if (count > 0 && prefix.len > XXH3_MIDSIZE_MAX - width) {
        result = Py_None;
        Py_INCREF(result);
        goto done;
    }
    Py_buffer out;
    result = new_bucket(count, &out);
    if (result == NULL)
        goto done;
    uint8_t key[XXH3_MIDSIZE_MAX];
    memcpy(key, prefix.buf, (size_t)(count > 0 ? prefix.len : 0));
    size_t first = (size_t)(count > 0 ? prefix.len : 0);  /* key[first:len] is the decimal of i */
    size_t len = first + 1;
    key[first] = '0';
    uint64_t *o = out.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        o[i] = xxh3_64_short(key, len);
        /* i + 1 by counting up (no division per point: a fifth of the time here) */
        size_t j = len;
        while (j > first && key[j - 1] == '9')
            key[--j] = '0';
        if (j > first) {
            key[j - 1]++;
        }
        else if (i + 1 < count) {  /* 9..9 -> 10..0: one digit more, which fits (checked above) */
            key[first] = '1';
            key[len++] = '0';
        }
    }
    PyBuffer_Release(&out);
done:
    PyBuffer_Release(&prefix);
    return result;
}

static PyMethodDef methods[] = {
    {"insert", insert, METH_VARARGS,
     "insert(buckets, flags, points, owner, ids)\n--\n\n"
     "Add one entry per point for owner index `owner` (ids[owner] is its id, ids decides\n"
     "ties) to the bucket list, replacing each touched bucket by a new array('Q'), and\n"
     "set the touched buckets' flags."},
    {"insert_many", insert_many, METH_VARARGS,
     "insert_many(buckets, flags, points, owners, ids)\n--\n\n"
     "insert() of several owners at once: points[i] are owner index owners[i]'s points;\n"
     "the owners must come in id order.  One new array('Q') per touched bucket."},
    {"remove", remove_, METH_VARARGS,
     "remove(buckets, flags, points, owner)\n--\n\n"
     "Drop one entry per point of owner index `owner`, replacing each touched bucket by\n"
     "a new array('Q'), and clear the flags of buckets left empty."},
    {"build", build, METH_VARARGS,
     "build(buckets, flags, points, ranks, owner_of_rank)\n--\n\n"
     "Bulk-load an empty ring: points[i] (an array('Q')) are member i's points, ranks[i]\n"
     "its tie order, owner_of_rank[r] the owner index entries of rank r carry.  Replaces\n"
     "every non-empty bucket of `buckets`, sets its flags, returns the number of points."},
    {"xxh3_64", xxh3_64, METH_O,
     "xxh3_64(data, /)\n--\n\n"
     "XXH3-64 (seed 0, default secret) of a bytes-like object of at most 240 bytes, as\n"
     "xxhash.xxh3_64_intdigest; ValueError beyond 240 bytes."},
    {"xxh3_points", xxh3_points, METH_VARARGS,
     "xxh3_points(prefix, count, /)\n--\n\n"
     "array('Q') of xxh3_64(prefix + b\"%d\" % i) for i in range(count): a member's ring\n"
     "points (prefix = its id, UTF-8, then b\"-\").  None when an input would be longer\n"
     "than 240 bytes (the caller then hashes with the xxhash package)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "registry._ringaccel",
    "C merge for registry.ring's packed consistent layout (optional; see docs/ring.md).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__ringaccel(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (one_item == NULL) {
        PyObject *array = PyImport_ImportModule("array");
        if (array != NULL) {
            one_item = PyObject_CallMethod(array, "array", "s[i]", "Q", 0);
            Py_DECREF(array);
        }
        if (one_item == NULL) {
            Py_DECREF(m);
            return NULL;
        }
    }
    /* registry/ring/accel.py loads this module only if these match the ring's layout constants. */
    if (PyModule_AddIntConstant(m, "BUCKET_BITS", BUCKET_BITS) < 0
        || PyModule_AddIntConstant(m, "OWNER_BITS", OWNER_BITS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
