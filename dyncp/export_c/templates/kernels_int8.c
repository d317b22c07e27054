/* dyncp: the int8 kernels of the mask estimator, pasted into dyncp_net.c at export. */
/* ---- int8 weights, int16 activations, int32 accumulation ---------------------------------- */
#if defined(__ARM_FEATURE_DSP) && defined(__GNUC__) && !defined(DYNCP_NO_SIMD)
#define DYNCP_SIMD 1
static uint32_t ld32(const void *p) { uint32_t v; __builtin_memcpy(&v, p, 4); return v; }
static uint32_t sxtb16(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1" : "=r"(r) : "r"(x));
    return r;
}
static uint32_t sxtb16_8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
static int32_t smlad(uint32_t a, uint32_t b, int32_t acc)
{
    __asm__("smlad %0, %1, %2, %0" : "+r"(acc) : "r"(a), "r"(b));
    return acc;
}
static uint32_t pkhbt(uint32_t lo, uint32_t hi)       /* (lo.low, hi.low) */
{
    uint32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(lo), "r"(hi));
    return r;
}
static uint32_t pkhtb(uint32_t hi, uint32_t lo)       /* (lo.high, hi.high) */
{
    uint32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(hi), "r"(lo));
    return r;
}
#else
#define DYNCP_SIMD 0
#endif

/* sum w[i] x[i], n a multiple of 16, weights stored in groups [w0 w2 w1 w3] (SXTB16 then gives
 * the int16 pairs (w0, w1) and (w2, w3) that SMLAD multiplies with (x0, x1) and (x2, x3)) */
static int32_t dot_q(const int8_t *w, const int16_t *x, int n)
{
    int32_t s = 0;
    int i, j;
#if DYNCP_SIMD
    for (i = 0; i < n; i += 16) {              /* 16 MACs a turn */
        uint32_t w0 = ld32(w + i), w1 = ld32(w + i + 4), w2 = ld32(w + i + 8);
        uint32_t w3 = ld32(w + i + 12);
        s = smlad(sxtb16(w0), ld32(x + i), s);
        s = smlad(sxtb16_8(w0), ld32(x + i + 2), s);
        s = smlad(sxtb16(w1), ld32(x + i + 4), s);
        s = smlad(sxtb16_8(w1), ld32(x + i + 6), s);
        s = smlad(sxtb16(w2), ld32(x + i + 8), s);
        s = smlad(sxtb16_8(w2), ld32(x + i + 10), s);
        s = smlad(sxtb16(w3), ld32(x + i + 12), s);
        s = smlad(sxtb16_8(w3), ld32(x + i + 14), s);
    }
    (void)j;
#else
    for (i = 0; i < n; i += 16)
        for (j = i; j < i + 16; j += 4)
            s += w[j] * x[j] + w[j + 2] * x[j + 1] + w[j + 1] * x[j + 2] + w[j + 3] * x[j + 3];
#endif
    return s;
}

/* acc[i] += w0[i] v0 + w1[i] v1 + w2[i] v2 + w3[i] v3: four PW2 columns at once (n % 4 == 0) */
static void axpy4_q(int32_t *acc, const int8_t *const *w, const int16_t *v, int n)
{
    int i;
#if DYNCP_SIMD
    uint32_t v01 = (uint16_t)v[0] | (uint32_t)(uint16_t)v[1] << 16;
    uint32_t v23 = (uint16_t)v[2] | (uint32_t)(uint16_t)v[3] << 16;
    for (i = 0; i < n; i += 4) {
        uint32_t a = ld32(w[0] + i), b = ld32(w[1] + i), c = ld32(w[2] + i), d = ld32(w[3] + i);
        uint32_t a02 = sxtb16(a), a13 = sxtb16_8(a), b02 = sxtb16(b), b13 = sxtb16_8(b);
        uint32_t c02 = sxtb16(c), c13 = sxtb16_8(c), d02 = sxtb16(d), d13 = sxtb16_8(d);
        acc[i] = smlad(pkhbt(c02, d02), v23, smlad(pkhbt(a02, b02), v01, acc[i]));
        acc[i + 1] = smlad(pkhbt(c13, d13), v23, smlad(pkhbt(a13, b13), v01, acc[i + 1]));
        acc[i + 2] = smlad(pkhtb(d02, c02), v23, smlad(pkhtb(b02, a02), v01, acc[i + 2]));
        acc[i + 3] = smlad(pkhtb(d13, c13), v23, smlad(pkhtb(b13, a13), v01, acc[i + 3]));
    }
#else
    const int8_t *w0 = w[0], *w1 = w[1], *w2 = w[2], *w3 = w[3];
    for (i = 0; i < n; i++)
        acc[i] += w0[i] * v[0] + w1[i] * v[1] + w2[i] * v[2] + w3[i] * v[3];
#endif
}

/* round half away from zero, saturated to int16 */
static int16_t q16(float x)
{
    if (x > 32767.0f) x = 32767.0f;
    if (x < -32767.0f) x = -32767.0f;
    return (int16_t)(x >= 0.0f ? x + 0.5f : x - 0.5f);
}

/* x [n] -> q [n] with x ~ q * scale, scale = max|x| / 32767 (per frame); returns scale */
static float quantize(const float *x, int16_t *q, int n)
{
    float m = 0.0f, inv;
    int i;
    for (i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    if (!(m > 0.0f)) {
        for (i = 0; i < n; i++) q[i] = 0;
        return 0.0f;
    }
    inv = 32767.0f / m;
    for (i = 0; i < n; i++) q[i] = q16(x[i] * inv);
    return m / 32767.0f;
}

static void front(struct dyncp_state *st, const float *mag)
{
    float *x = st->mag;                          /* compressed in place (mag is scratch) */
    float sx;
    int b, f;
    for (f = 0; f < DYNCP_N_FREQ; f++) {
        float v = mag[f];
#if DYNCP_COMPRESS_ON
        v = compress(v);
#endif
        x[f] = v;
    }
    for (; f < DYNCP_FREQ_PAD; f++) x[f] = 0.0f;
    sx = quantize(x, st->xq, DYNCP_FREQ_PAD);
    for (b = 0; b < B; b++) {
        float a = (float)dot_q(dyncp_front_q + b * DYNCP_FREQ_PAD, st->xq, DYNCP_FREQ_PAD);
        float v = a * (sx * dyncp_front_k[b]) + dyncp_front_b[b];
        st->h[b] = v > 0.0f ? v : 0.0f;
    }
    for (; b < BP; b++) st->h[b] = 0.0f;
}

#if DYNCP_GATED && !DYNCP_DENSE
/* gate projection of the quantised block input (st->xq, scale sh) */
static void gate_project(struct dyncp_state *st, int i, float sh, float *z)
{
    int r;
    for (r = 0; r < DYNCP_RED; r++)
        z[r] = (float)dot_q(dyncp_gw1_q + (i * DYNCP_RED + r) * BP, st->xq, BP)
               * (sh * dyncp_gw1_k[i * DYNCP_RED + r]);
}

static void gate_scores(struct dyncp_state *st, int i, const float *p)
{
    float sp = quantize(p, st->zq, DYNCP_RED_PAD);
    int c;
    for (c = 0; c < H; c++)
        st->scores[c] = (float)dot_q(dyncp_gw2_q + (i * H + c) * DYNCP_RED_PAD, st->zq,
                                     DYNCP_RED_PAD) * (sp * dyncp_gw2_k[i * H + c])
                        + GATE_BIAS(st, i, c);
}
#endif

static void block(struct dyncp_state *st, int i, int n_on, float sh,
                  dyncp_act (*ring)[H], const int *slot, int pos)
{
    const float *k2 = dyncp_pw2_k + i * B, *b2 = dyncp_pw2_b + i * B;
    const int8_t *w4[4];
    int16_t v4[4];
    int32_t *acc = st->acc;
    dyncp_act *now = ring[pos];
    int a, b, c, j, g = 0;
    for (b = 0; b < BP; b++) acc[b] = 0;
    for (c = 0; c < H; c++) now[c] = 0;
    for (a = 0; a < n_on; a++) {
        const int8_t *wq;
        const float *cf;
        float u, z;
        int16_t vq;
        c = st->active[a];
        wq = dyncp_chan_q + (i * H + c) * DYNCP_CHAN_Q;
        cf = dyncp_chan_f + (i * H + c) * DYNCP_CHAN_F;
        /* cf: k1 b1 a1 s1/su c1/su | dw*su (K) | bd a2 s2/sv c2/sv */
        u = (float)dot_q(wq, st->xq, BP) * (sh * cf[0]) + cf[1];
        now[c] = q16(prelu(u, cf[2]) * cf[3] + cf[4]);
        z = cf[5 + K];
        for (j = 0; j < K; j++) z += cf[5 + j] * (float)ring[slot[j]][c];
        vq = q16(prelu(z, cf[6 + K]) * cf[7 + K] + cf[8 + K]);
        if (vq == 0) continue;
        w4[g] = wq + BP;
        v4[g++] = vq;
        if (g == 4) {
            axpy4_q(acc, w4, v4, BP);
            g = 0;
        }
    }
    for (j = 0; j < g; j++) {                   /* the last 1-3 columns */
        const int8_t *w = w4[j];
        for (b = 0; b < B; b++) acc[b] += w[b] * v4[j];
    }
    for (b = 0; b < B; b++) st->h[b] = (st->h[b] + b2[b]) + (float)acc[b] * k2[b];
}

static void back(struct dyncp_state *st, float *mask)
{
    float sh = quantize(st->h, st->xq, BP);
    int f;
    for (f = 0; f < DYNCP_N_FREQ; f++)
        mask[f] = sigmoid((float)dot_q(dyncp_back_q + f * BP, st->xq, BP)
                          * (sh * dyncp_back_k[f]) + dyncp_back_b[f]);
}
