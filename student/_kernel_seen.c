/* Seen (user, item) pairs as an open-addressing hash set with a chain of entries per user: an
 * insert or a membership test is O(1) however many pairs the stream has seen, and a user's
 * items are listed by walking its chain. Pure C, no Python API; the arrays are numpy buffers
 * that student/_seen.py owns and grows (it guarantees room before every call).
 *
 * Why not the sorted arrays of the numpy fallback: their inserts merge into a sorted array, a
 * copy that grows with the number of pairs, and their lookups are binary searches that miss
 * the cache at every level. */
#include "_kernel.h"

/* Fibonacci hashing: the top bits of key * 2^64/phi spread consecutive items of one user. */
static inline int64_t home(int64_t key, int64_t mask, int bits) {
    return (int64_t)(((uint64_t)key * 0x9E3779B97F4A7C15ull) >> (64 - bits)) & mask;
}

static inline int bits_of(int64_t cap) {
    int bits = 0;
    while (((int64_t)1 << bits) < cap) bits++;
    return bits;
}

/* slot of key, or of the empty slot where it would go. Slots hold the keys themselves (keys
 * are >= 0): a probe is one read at a random place in memory, not a slot and then its entry. */
static inline int64_t find(const SeenSet *s, int64_t key, int bits) {
    const int64_t mask = s->cap - 1;
    int64_t k = home(key, mask, bits);
    while (s->slots[k] >= 0 && s->slots[k] != key) k = (k + 1) & mask;
    return k;
}

int64_t kd_seen_add(SeenSet *s, const int64_t *users, const int64_t *items, int64_t n) {
    const int bits = bits_of(s->cap);
    int64_t added = 0;
    for (int64_t e = 0; e < n; e++) {
        if (e + 8 < n) { /* the home slot and the user's head and count of the pair 8 on */
            const int64_t f = e + 8;
            __builtin_prefetch(s->slots + home((users[f] << 32) | items[f], s->cap - 1, bits));
            __builtin_prefetch(s->head + users[f]);
            __builtin_prefetch(s->count + users[f]);
        }
        const int64_t key = (users[e] << 32) | items[e];
        const int64_t k = find(s, key, bits);
        if (s->slots[k] >= 0) continue; /* seen already (earlier, or earlier in this batch) */
        const int64_t entry = s->n++;
        s->keys[entry] = key;
        s->slots[k] = key;
        s->next[entry] = s->head[users[e]];
        s->head[users[e]] = entry;
        s->count[users[e]]++;
        added++;
    }
    return added;
}

void kd_seen_contains(const SeenSet *s, const int64_t *users, const int64_t *items, int64_t n,
                      uint8_t *out) {
    const int bits = bits_of(s->cap);
    for (int64_t e = 0; e < n; e++) {
        const int64_t key = (users[e] << 32) | items[e];
        out[e] = s->slots[find(s, key, bits)] >= 0;
    }
}

void kd_seen_rehash(SeenSet *s) {
    const int bits = bits_of(s->cap);
    for (int64_t k = 0; k < s->cap; k++) s->slots[k] = -1;
    for (int64_t entry = 0; entry < s->n; entry++)
        s->slots[find(s, s->keys[entry], bits)] = s->keys[entry];
}

int64_t kd_seen_list(const SeenSet *s, const int64_t *users, int64_t n, int64_t *rows,
                     int64_t *items) {
    int64_t out = 0;
    for (int64_t r = 0; r < n; r++)
        for (int64_t entry = s->head[users[r]]; entry >= 0; entry = s->next[entry]) {
            rows[out] = r;
            items[out] = s->keys[entry] & 0xFFFFFFFF;
            out++;
        }
    return out;
}
