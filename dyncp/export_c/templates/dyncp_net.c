/* dyncp: the mask estimator, one frame (Conv-FSENet with DynCP gates).
 *
 *   mag -> front-end PW + ReLU -> h -> blocks -> back-end PW + sigmoid -> mask
 *   block i: gate(h) -> active channels; for each active channel c only:
 *            u = BN1(PReLU(PW1_c . h)); v = BN2(PReLU(depthwise taps over u's ring)); h += v PW2_c
 *
 * Per frame, each block evaluates its gate first (moving average of the projected input over the
 * last L frames, PW-ReLU-PW, Heaviside, optional floor), lists the active channels, and then
 * reads and computes only those: one channel's weights are contiguous (PW1 row, PW2 column,
 * depthwise taps, constants), so a pruned channel costs neither compute nor memory traffic.
 * A pruned channel writes 0 into the depthwise ring, as in training (dense x mask).
 *
 * DYNCP_DENSE (compile with -DDYNCP_DENSE=1): no gates evaluated, every channel computed; the
 * cost of the static network with the same widths, for comparison.
 */
#include "dyncp_internal.h"

#include <math.h>

#ifndef DYNCP_DENSE
#define DYNCP_DENSE 0
#endif

#if defined(__GNUC__)
#define DYNCP_INLINE static inline __attribute__((always_inline))
#else
#define DYNCP_INLINE static inline
#endif

#define B DYNCP_RES
#define BP DYNCP_RES_PAD
#define H DYNCP_HID
#define K DYNCP_KERNEL

/* x >= 0 ? x : a x, written as max(x, 0) + a min(x, 0) so that compilers emit selects, not a
 * branch that speech makes unpredictable (the same value; a NaN still propagates) */
static float prelu(float x, float a)
{
    float pos = x > 0.0f ? x : 0.0f, neg = x > 0.0f ? 0.0f : x;
    return pos + a * neg;
}

/* exp(x) in float arithmetic only, within 4 ulp (0 below -87, saturated above 88): x = k ln2 + r,
 * |r| <= ln2/2, a degree-6 polynomial for exp(r), 2^k from the exponent bits. Our own rather than
 * libm's so that every target (glibc, newlib, ...) gives the same bits, and because some libm
 * expf compute in double, which a Cortex-M4 emulates in software. */
static float exp_f(float x)
{
    union { float f; uint32_t u; } s;
    float k, r, p;
    int ki;
    if (x < -87.0f) return 0.0f;
    if (x > 88.0f) x = 88.0f;
    k = x * 1.44269504f;                        /* log2(e) */
    ki = (int)(k >= 0.0f ? k + 0.5f : k - 0.5f);
    k = (float)ki;
    r = (x - k * 0.693359375f) + k * 2.12194440e-4f;   /* ln2 = 0.693359375 - 2.12194440e-4 */
    p = 1.0f + r * (1.0f + r * (0.5f + r * (1.66666672e-1f + r * (4.16666679e-2f
        + r * (8.33333377e-3f + r * 1.38888892e-3f)))));
    s.u = (uint32_t)(ki + 127) << 23;
    return p * s.f;
}

#if DYNCP_COMPRESS_ON || DYNCP_BUDGET
/* ln(x) for a normal x > 0: x = m 2^e, ln x = e ln2 + 2 atanh((m-1)/(m+1)), m in [0.707, 1.414) */
static float log_f(float x)
{
    union { float f; uint32_t u; } v;
    float m, t, t2, ln;
    int e;
    v.f = x;
    e = (int)((v.u >> 23) & 0xffu) - 127;
    v.u = (v.u & 0x007fffffu) | 0x3f800000u;    /* mantissa in [1, 2) */
    m = v.f;
    if (m > 1.41421356f) { m *= 0.5f; e++; }
    t = (m - 1.0f) / (m + 1.0f);
    t2 = t * t;
    ln = 2.0f * t * (1.0f + t2 * (0.333333343f + t2 * (0.2f + t2 * (0.142857149f
         + t2 * 0.111111112f))));
    return (float)e * 0.693359375f + ((float)e * -2.12194440e-4f + ln);
}
#endif

#if DYNCP_COMPRESS_ON
/* the model's input compression: (max(x, 0) + 1e-12)^c = exp(c ln x); at c = 0 the log
 * magnitude ln(max(x, 0) + DYNCP_LOG_FLOOR) */
static float compress(float x)
{
#if DYNCP_LOG_FEATURE
    return log_f((x > 0.0f ? x : 0.0f) + DYNCP_LOG_FLOOR);
#else
    return exp_f(DYNCP_COMPRESS * log_f((x > 0.0f ? x : 0.0f) + 1e-12f));
#endif
}
#endif

/* 1 / (1 + exp(-x)), from exp(-|x|) so that nothing overflows */
static float sigmoid(float x)
{
    float t = exp_f(x >= 0.0f ? -x : x);
    return x >= 0.0f ? 1.0f / (1.0f + t) : t / (1.0f + t);
}

/* The run-time budget of a budget model (gate.budget, docs/budget.md): each gated channel's
 * score bias is b2 - softplus(slope) * logit(code(Φ)), code() the model's calibration table;
 * Φ = 0 evaluates no gate and computes every channel (the static cost). */
int dyncp_set_budget(dyncp_state *st, float phi)
{
#if DYNCP_BUDGET
    float code;
    int k;
    if (st == NULL) return DYNCP_ERR_NULL;
    if (st->magic != DYNCP_MAGIC && st->magic != DYNCP_MAGIC_INIT) return DYNCP_ERR_STATE;
    if (!(phi == 0.0f || (phi >= DYNCP_BUDGET_MIN - 1e-6f && phi <= DYNCP_BUDGET_MAX + 1e-6f)))
        return DYNCP_ERR_BUDGET;
    st->bypass = phi == 0.0f;
    if (st->bypass) return DYNCP_OK;
    if (phi > dyncp_budget_table[DYNCP_BUDGET_POINTS - 1])
        phi = dyncp_budget_table[DYNCP_BUDGET_POINTS - 1];
    if (phi < dyncp_budget_table[0]) {          /* below the table: linear towards (0, 0) */
        code = dyncp_budget_table[DYNCP_BUDGET_POINTS] * (phi > 0.0f ? phi : 0.0f)
               / dyncp_budget_table[0];
    } else {
        const float *x = dyncp_budget_table, *y = dyncp_budget_table + DYNCP_BUDGET_POINTS;
        float dx;
        for (k = 1; k < DYNCP_BUDGET_POINTS - 1 && x[k] < phi; k++) {}
        dx = x[k] - x[k - 1];
        code = y[k - 1] + (y[k] - y[k - 1]) * (phi - x[k - 1]) / (dx > 1e-12f ? dx : 1e-12f);
    }
    code = code < 1e-3f ? 1e-3f : code > 1.0f - 1e-3f ? 1.0f - 1e-3f : code;
    st->budget_logit = log_f(code / (1.0f - code));
    return DYNCP_OK;
#else
    (void)phi;
    if (st == NULL) return DYNCP_ERR_NULL;
    return DYNCP_ERR_BUDGET;
#endif
}

void dyncp__net_reset(struct dyncp_state *st)
{
#if DYNCP_BUDGET
    st->magic = DYNCP_MAGIC_INIT;
    dyncp_set_budget(st, DYNCP_BUDGET_NOMINAL);
#else
    (void)st;
#endif
}

#if DYNCP_BUDGET
#define GATE_BIAS(st, i, c) \
    (dyncp_gb2[(i) * H + (c)] - dyncp_gk[(i) * H + (c)] * (st)->budget_logit)
#else
#define GATE_BIAS(st, i, c) dyncp_gb2[(i) * H + (c)]
#endif

/* ---- the @VARIANT@ kernels: front, gate_project, gate_scores, block, back ---- */
@KERNELS@

#if DYNCP_MIN_ACTIVE > 0
/* k-th largest of x [n] (k >= 1), x reordered (quickselect) */
static float kth_largest(float *x, int n, int k)
{
    int lo = 0, hi = n - 1, want = k - 1;
    while (lo < hi) {
        float p = x[(lo + hi) >> 1];
        int i = lo, j = hi;
        while (i <= j) {
            while (x[i] > p) i++;
            while (x[j] < p) j--;
            if (i <= j) { float t = x[i]; x[i] = x[j]; x[j] = t; i++; j--; }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else break;
    }
    return x[want];
}
#endif

/* Gate of block i: pooled projection -> scores -> Heaviside (+ floor) -> st->active.
 * Returns the number of active channels. */
static int select_channels(struct dyncp_state *st, int i, float sh)
{
    uint8_t *bits = st->gates[i];
    int c, n = 0;
#if DYNCP_GATED && !DYNCP_DENSE
    float *slot = st->pool[i][st->pool_pos], *p = st->z;
    int j, r;
    gate_project(st, i, sh, slot);              /* the pooling history runs even when bypassed */
#if DYNCP_BUDGET
    if (st->bypass) {                           /* Φ = 0: every channel, no gate */
        for (c = 0; c < (H + 7) / 8; c++) bits[c] = 0xff;
        for (c = 0; c < H; c++) st->active[n++] = (uint16_t)c;
        return n;
    }
#endif
    for (r = 0; r < DYNCP_RED_PAD; r++) p[r] = 0.0f;
    for (j = 1; j <= DYNCP_POOL; j++) {         /* oldest frame first, as dyncp.gates */
        const float *z = st->pool[i][(st->pool_pos + j) % DYNCP_POOL];
        for (r = 0; r < DYNCP_RED; r++) p[r] += z[r];
    }
    for (r = 0; r < DYNCP_RED; r++) {
        float v = p[r] * (1.0f / DYNCP_POOL) + dyncp_gb1[i * DYNCP_RED + r];
        p[r] = v > 0.0f ? v : 0.0f;
    }
    gate_scores(st, i, p);
    for (c = 0; c < H; c += 8) {                /* Heaviside; a NaN score prunes */
        unsigned byte = 0;                      /* a byte at a time: no store per channel */
        int k;
        for (k = 0; k < 8 && c + k < H; k++) {
            int on = st->scores[c + k] > 0.0f;
            byte |= (unsigned)on << k;
            st->active[n] = (uint16_t)(c + k);
            n += on;
        }
        bits[c >> 3] = (uint8_t)byte;
    }
#if DYNCP_MIN_ACTIVE > 0
    if (n < DYNCP_MIN_ACTIVE) {                 /* floor: the top scores are forced on */
        float kth;
        for (c = 0; c < H; c++) st->sel[c] = st->scores[c];
        kth = kth_largest(st->sel, H, DYNCP_MIN_ACTIVE);
        n = 0;
        for (c = 0; c < H; c++) {
            int on = ((bits[c >> 3] >> (c & 7)) & 1) || st->scores[c] >= kth;
            bits[c >> 3] |= (uint8_t)(on << (c & 7));
            st->active[n] = (uint16_t)c;
            n += on;
        }
    }
#endif
#else
    (void)sh;
    for (c = 0; c < (H + 7) / 8; c++) bits[c] = 0xff;
    for (c = 0; c < H; c++) st->active[n++] = (uint16_t)c;
#endif
    return n;
}

void dyncp__net(struct dyncp_state *st, const float *mag, float *mask)
{
    int i, j, total = 0;
    front(st, mag);
    for (i = 0; i < DYNCP_N_BLOCKS; i++) {
        int len = dyncp_ring_len[i], d = dyncp_dilation[i], pos = (int)st->ring_pos[i];
        int slot[K], n_on;
        float sh = 0.0f;
#if DYNCP_INT8
        sh = quantize(st->h, st->xq, BP);
#endif
        for (j = 0; j < K; j++)                 /* ring slot of tap j: frame t - (K-1-j) d */
            slot[j] = ((pos - (K - 1 - j) * d) % len + len) % len;
        n_on = select_channels(st, i, sh);
        block(st, i, n_on, sh, st->ring + dyncp_ring_off[i], slot, pos);
        st->ring_pos[i] = (uint32_t)((pos + 1) % len);
        total += n_on;
    }
    back(st, mask);
    st->pool_pos = (st->pool_pos + 1) % DYNCP_POOL;
    st->n_active = (uint32_t)total;
    if (st->frames < 0xffffffffu) st->frames++;
}
