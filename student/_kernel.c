/* The student's micro-batch step, fused in C: the same loss, gradients and row-wise Adagrad as
 * the numpy path of student/_model.py (Student.gradients + the _adagrad updates), which stays the
 * reference and the fallback when this extension is not built.
 *
 * Why: the numpy step runs some sixty array passes per micro-batch and scatters L context rows
 * per event through sort-based segment sums; here each event is one pass over its rows, the
 * gradients of a batch are summed in compact per-table buffers indexed by a row -> slot map, and
 * every parameter is read and written once. Semantics are those of a micro-batch: all gradients
 * come from the parameters as they were at the start of the batch, then each touched row takes
 * one Adagrad step with its summed gradient (repeated ids in a batch are summed, never lost).
 *
 * Only the buffer protocol is used (no numpy headers); the Python side checks dtypes, shapes and
 * contiguity before calling. The GIL is released while the step runs.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "_kernel.h"

/* The builds of the step, best last; each CPU runs the best one it has, unless isa() chose. */
enum { ISA_BASE, ISA_AVX2, ISA_AVX512, N_ISA };
static const char *const isa_names[N_ISA] = {"base", "avx2", "avx512"};
static int (*const isa_runs[N_ISA])(const Step *) = {kd_run_base, kd_run_avx2, kd_run_avx512};

static int cpu_has(int isa) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == ISA_AVX2) return avx2;
    if (isa == ISA_AVX512)
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#endif
    return isa == ISA_BASE;
}

static int chosen_isa = -1;

static int current_isa(void) {
    if (chosen_isa < 0) {
        chosen_isa = N_ISA - 1;
        while (!cpu_has(chosen_isa)) chosen_isa--;
    }
    return chosen_isa;
}

/* isa([name]): the build the step runs ("base", "avx2" or "avx512"); with a name, switch to
 * it (tests and A/B runs hold the builds against each other). ValueError where the CPU lacks it. */
static PyObject *kd_isa(PyObject *self, PyObject *args) {
    (void)self;
    const char *name = NULL;
    if (!PyArg_ParseTuple(args, "|s", &name)) return NULL;
    if (name != NULL) {
        int k = 0;
        while (k < N_ISA && strcmp(name, isa_names[k]) != 0) k++;
        if (k == N_ISA) {
            PyErr_Format(PyExc_ValueError, "isa must be base, avx2 or avx512, got %s", name);
            return NULL;
        }
        if (!cpu_has(k)) {
            PyErr_Format(PyExc_ValueError, "this CPU cannot run the %s step", name);
            return NULL;
        }
        chosen_isa = k;
    }
    return PyUnicode_FromString(isa_names[current_isa()]);
}

/* step(tables, maps, batch, soft, trans, scalars): every array a C-contiguous buffer of the
 * dtype the Python wrapper (student/_fused.py) checked; empty buffers stand for "none". */
static PyObject *kd_step(PyObject *self, PyObject *args) {
    (void)self;
    enum { NBUF = 32 };
    Py_buffer v[NBUF];
    memset(v, 0, sizeof(v));
    long long L, d, kd_rest;
    float lr, l2;
    int learn_pos;
    if (!PyArg_ParseTuple(args,
                          "w*w*w*w*w*w*w*w*w*w*"  /* P Q C b gP gQ gC gb pos_w g_pos */
                          "w*w*w*w*w*"            /* mapP mapQ mapC gbd mark */
                          "y*y*y*y*y*y*y*"        /* users items w ctx neg neg_shift pos_shift */
                          "y*y*y*y*y*"            /* soft: rows items logits temp alpha */
                          "y*y*y*y*y*"            /* trans: rows items logits temp alpha */
                          "LLLffp",
                          &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9],
                          &v[10], &v[11], &v[12], &v[13], &v[14], &v[15], &v[16], &v[17], &v[18],
                          &v[19], &v[20], &v[21], &v[22], &v[23], &v[24], &v[25], &v[26], &v[27],
                          &v[28], &v[29], &v[30], &v[31], &L, &d, &kd_rest, &lr, &l2, &learn_pos))
        return NULL;
    Step st;
    memset(&st, 0, sizeof(st));
    st.P = v[0].buf; st.Q = v[1].buf; st.C = v[2].buf; st.b = v[3].buf;
    st.gP = v[4].buf; st.gQ = v[5].buf; st.gC = v[6].buf; st.gb = v[7].buf;
    st.pos_w = v[8].buf; st.g_pos = v[9].buf;
    st.mapP = v[10].buf; st.mapQ = v[11].buf; st.mapC = v[12].buf; st.gbd = v[13].buf;
    st.n_items = v[13].len / (Py_ssize_t)sizeof(double);
    st.mark = v[14].buf;
    st.users = v[15].buf; st.items = v[16].buf; st.w = v[17].buf; st.ctx = v[18].buf;
    st.neg = v[19].buf;
    st.neg_shift = v[20].len ? v[20].buf : NULL;
    st.pos_shift = v[21].len ? v[21].buf : NULL;
    st.B = v[15].len / (Py_ssize_t)sizeof(int64_t);
    st.S = v[19].len / (Py_ssize_t)sizeof(int64_t);
    st.L = L; st.d = d; st.kd_rest = kd_rest; st.lr = lr; st.l2 = l2; st.learn_pos = learn_pos;
    st.soft.n = v[22].len / (Py_ssize_t)sizeof(int64_t);
    st.soft.rows = v[22].buf; st.soft.items = v[23].buf; st.soft.logits = v[24].buf;
    st.soft.temp = v[25].buf; st.soft.alpha = v[26].buf;
    st.soft.m = st.soft.n ? v[23].len / (Py_ssize_t)sizeof(int64_t) / st.soft.n : 0;
    st.trans.n = v[27].len / (Py_ssize_t)sizeof(int64_t);
    st.trans.rows = v[27].buf; st.trans.items = v[28].buf; st.trans.logits = v[29].buf;
    st.trans.temp = v[30].buf;
    st.trans.alpha = v[31].buf;
    st.trans.m = st.trans.n ? v[28].len / (Py_ssize_t)sizeof(int64_t) / st.trans.n : 0;
    if (kd_rest < 0 || kd_rest > 31) { /* the candidate mark holds one bit per rest negative */
        for (int i = 0; i < NBUF; i++) PyBuffer_Release(&v[i]);
        PyErr_Format(PyExc_ValueError, "kd_rest must be in [0, 31], got %lld", kd_rest);
        return NULL;
    }
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = isa_runs[current_isa()](&st);
    Py_END_ALLOW_THREADS
    for (int i = 0; i < NBUF; i++) PyBuffer_Release(&v[i]);
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* contexts(hist, users, items, ctx_out, map, update): each event's context, the user's last L
 * items before it (the same user's earlier events in the batch included, -1 padding), in one
 * pass in stream order; with ``update`` the users' histories then move past the batch. ``map``
 * is a user -> slot scratch, all -1 between calls. Python checks dtypes and index bounds. */
static PyObject *kd_contexts(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer hist = {0}, users = {0}, items = {0}, out = {0}, map = {0};
    long long L;
    int update;
    if (!PyArg_ParseTuple(args, "w*y*y*w*w*Lp", &hist, &users, &items, &out, &map, &L, &update))
        return NULL;
    const int64_t B = users.len / (Py_ssize_t)sizeof(int64_t);
    int32_t *h = hist.buf, *ctx = out.buf, *slot_of = map.buf;
    const int64_t *u = users.buf, *it = items.buf;
    int rc = 0;
    Py_BEGIN_ALLOW_THREADS
    int32_t *cur = malloc(sizeof(int32_t) * (size_t)(B * L + 1));
    int64_t *who = malloc(sizeof(int64_t) * (size_t)(B + 1));
    if (cur == NULL || who == NULL) {
        rc = -1;
    } else {
        int64_t n = 0;
        for (int64_t e = 0; e < B; e++) {
            if (e + 8 < B) { /* users sit anywhere in the history table and the slot map */
                __builtin_prefetch(h + u[e + 8] * L);
                __builtin_prefetch(slot_of + u[e + 8]);
            }
            int32_t k = slot_of[u[e]];
            if (k < 0) { /* the user's first event in the batch: start from its history */
                k = (int32_t)n++;
                slot_of[u[e]] = k;
                who[k] = u[e];
                memcpy(cur + k * L, h + u[e] * L, sizeof(int32_t) * (size_t)L);
            }
            int32_t *c = cur + k * L;
            memcpy(ctx + e * L, c, sizeof(int32_t) * (size_t)L);
            if (L > 0) {
                memmove(c, c + 1, sizeof(int32_t) * (size_t)(L - 1));
                c[L - 1] = (int32_t)it[e];
            }
        }
        for (int64_t k = 0; k < n; k++) {
            if (update) memcpy(h + who[k] * L, cur + k * L, sizeof(int32_t) * (size_t)L);
            slot_of[who[k]] = -1;
        }
    }
    free(cur);
    free(who);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&hist); PyBuffer_Release(&users); PyBuffer_Release(&items);
    PyBuffer_Release(&out); PyBuffer_Release(&map);
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* Move the users' histories past a batch whose contexts are known: a user's history after its
 * last event of the batch is that event's context shifted by one with the event's item last.
 * Events in stream order, so a later event of the same user overwrites an earlier one (numpy's
 * fancy assignment leaves the order of repeated writes open). Python checks shapes and bounds. */
static PyObject *kd_hist_advance(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer hist = {0}, users = {0}, items = {0}, ctx = {0};
    long long L;
    if (!PyArg_ParseTuple(args, "w*y*y*y*L", &hist, &users, &items, &ctx, &L)) return NULL;
    const int64_t B = users.len / (Py_ssize_t)sizeof(int64_t);
    int32_t *h = hist.buf;
    const int32_t *c = ctx.buf;
    const int64_t *u = users.buf, *it = items.buf;
    if (L > 0)
        for (int64_t e = 0; e < B; e++) {
            int32_t *row = h + u[e] * L;
            memcpy(row, c + e * L + 1, sizeof(int32_t) * (size_t)(L - 1));
            row[L - 1] = (int32_t)it[e];
        }
    PyBuffer_Release(&hist); PyBuffer_Release(&users); PyBuffer_Release(&items);
    PyBuffer_Release(&ctx);
    Py_RETURN_NONE;
}

/* Seen pairs (see _kernel_seen.c and student/_seen.py, which checks dtypes, bounds and room).
 * The GIL stays held: a reader thread never sees a half-made insert. */
static int seen_set(SeenSet *s, Py_buffer *slots, Py_buffer *keys, Py_buffer *next,
                    Py_buffer *head, Py_buffer *count, long long n) {
    s->slots = slots->buf;
    s->cap = slots->len / (Py_ssize_t)sizeof(int64_t);
    s->keys = keys->buf;
    s->next = next ? next->buf : NULL;
    s->head = head ? head->buf : NULL;
    s->count = count ? count->buf : NULL;
    s->n = n;
    if (s->cap <= 0 || (s->cap & (s->cap - 1)) != 0) {
        PyErr_SetString(PyExc_ValueError, "seen slots: the length must be a power of two");
        return -1;
    }
    return 0;
}

static PyObject *kd_seen_add_py(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer v[7];
    memset(v, 0, sizeof(v));
    long long n;
    if (!PyArg_ParseTuple(args, "w*w*w*w*w*Ly*y*", &v[0], &v[1], &v[2], &v[3], &v[4], &n, &v[5],
                          &v[6]))
        return NULL;
    SeenSet s;
    long long added = -1;
    if (seen_set(&s, &v[0], &v[1], &v[2], &v[3], &v[4], n) == 0)
        added = kd_seen_add(&s, v[5].buf, v[6].buf, v[5].len / (Py_ssize_t)sizeof(int64_t));
    for (int i = 0; i < 7; i++) PyBuffer_Release(&v[i]);
    return added < 0 ? NULL : PyLong_FromLongLong(added);
}

static PyObject *kd_seen_contains_py(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer v[5];
    memset(v, 0, sizeof(v));
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*", &v[0], &v[1], &v[2], &v[3], &v[4])) return NULL;
    SeenSet s;
    int ok = seen_set(&s, &v[0], &v[1], NULL, NULL, NULL, 0) == 0;
    if (ok) kd_seen_contains(&s, v[2].buf, v[3].buf, v[2].len / (Py_ssize_t)sizeof(int64_t), v[4].buf);
    for (int i = 0; i < 5; i++) PyBuffer_Release(&v[i]);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *kd_seen_rehash_py(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer v[2];
    memset(v, 0, sizeof(v));
    long long n;
    if (!PyArg_ParseTuple(args, "w*y*L", &v[0], &v[1], &n)) return NULL;
    SeenSet s;
    int ok = seen_set(&s, &v[0], &v[1], NULL, NULL, NULL, n) == 0;
    if (ok) kd_seen_rehash(&s);
    for (int i = 0; i < 2; i++) PyBuffer_Release(&v[i]);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyObject *kd_seen_list_py(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer v[6];
    memset(v, 0, sizeof(v));
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*w*", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]))
        return NULL;
    SeenSet s = {0};
    s.keys = (int64_t *)v[0].buf;
    s.next = (int64_t *)v[1].buf;
    s.head = (int64_t *)v[2].buf;
    long long total =
        kd_seen_list(&s, v[3].buf, v[3].len / (Py_ssize_t)sizeof(int64_t), v[4].buf, v[5].buf);
    for (int i = 0; i < 6; i++) PyBuffer_Release(&v[i]);
    return PyLong_FromLongLong(total);
}

#if defined(KD_PROFILE) && defined(__x86_64__)
double kd_profile_cycles[KD_SECTIONS];
#endif

/* profile(): {section: cycles} summed since the last call (then cleared) in a build with
 * -DKD_PROFILE; None in a normal build. */
static PyObject *kd_profile(PyObject *self, PyObject *args) {
    (void)self;
    (void)args;
#if defined(KD_PROFILE) && defined(__x86_64__)
    static const char *const names[KD_SECTIONS] = {
        "forward", "own items", "negatives' logits", "softmax", "query gradients",
        "negatives' gradients", "own items' gradients", "distillation", "back to users and contexts",
        "adagrad users", "adagrad items", "adagrad contexts", "biases and the rest"};
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    for (int i = 0; i < KD_SECTIONS; i++) {
        PyObject *v = PyFloat_FromDouble(kd_profile_cycles[i]);
        if (v == NULL || PyDict_SetItemString(out, names[i], v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(v);
        kd_profile_cycles[i] = 0.0;
    }
    return out;
#else
    Py_RETURN_NONE;
#endif
}

/* bounds(ints, itemsize): (min, max) of an int64 (itemsize 8) or int32 (4) buffer, (0, -1) for
 * none, in one pass where numpy's min() and max() take two calls of several us each: the kernels
 * trust their indices, so the Python side bounds every batch's with this. */
#define KD_MIN_MAX(T, buf, len, mn, mx)                          \
    do {                                                         \
        const T *x_ = (buf);                                     \
        for (Py_ssize_t i_ = 0; i_ < (len) / (Py_ssize_t)sizeof(T); i_++) { \
            mn = x_[i_] < mn ? x_[i_] : mn;                      \
            mx = x_[i_] > mx ? x_[i_] : mx;                      \
        }                                                        \
    } while (0)

static PyObject *kd_bounds(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer a = {0};
    int itemsize;
    if (!PyArg_ParseTuple(args, "y*i", &a, &itemsize)) return NULL;
    int64_t mn = INT64_MAX, mx = INT64_MIN;
    if (itemsize == 8) {
        KD_MIN_MAX(int64_t, a.buf, a.len, mn, mx);
    } else if (itemsize == 4) {
        KD_MIN_MAX(int32_t, a.buf, a.len, mn, mx);
    } else {
        PyBuffer_Release(&a);
        PyErr_Format(PyExc_ValueError, "bounds: itemsize must be 4 or 8, got %d", itemsize);
        return NULL;
    }
    if (a.len == 0) {
        mn = 0;
        mx = -1;
    }
    PyBuffer_Release(&a);
    return Py_BuildValue("LL", (long long)mn, (long long)mx);
}

static PyMethodDef methods[] = {
    {"bounds", kd_bounds, METH_VARARGS, "(min, max) of the ints of a buffer; (0, -1) for none."},
    {"isa", kd_isa, METH_VARARGS, "The step's build (base, avx2, avx512); with a name, switch."},
    {"profile", kd_profile, METH_NOARGS, "Cycles per section of the step (profile builds), cleared."},
    {"step", kd_step, METH_VARARGS, "One fused micro-batch step of the student (see _fused.py)."},
    {"contexts", kd_contexts, METH_VARARGS, "Events' contexts; optionally move the histories on."},
    {"hist_advance", kd_hist_advance, METH_VARARGS, "Move the histories past a batch from its contexts."},
    {"seen_add", kd_seen_add_py, METH_VARARGS, "Insert (user, item) pairs; returns how many were new."},
    {"seen_contains", kd_seen_contains_py, METH_VARARGS, "Membership of (user, item) pairs."},
    {"seen_rehash", kd_seen_rehash_py, METH_VARARGS, "Rebuild the slots from the entries."},
    {"seen_list", kd_seen_list_py, METH_VARARGS, "Every seen (row, item) of some users."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel", NULL, -1, methods};

PyMODINIT_FUNC PyInit__kernel(void) { return PyModule_Create(&module); }
