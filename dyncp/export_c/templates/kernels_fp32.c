/* dyncp: the fp32 kernels of the mask estimator, pasted into dyncp_net.c at export. */
/* ---- fp32 ---------------------------------------------------------------------------------- */
/* acc += a * b, rounded after the multiply and after the add (no fused multiply-add), so that
 * every IEEE target gets the same bits. On Cortex-M, VMLA is exactly that, in one instruction
 * (compilers emit it only when allowed to contract, which would also fuse elsewhere). */
#if defined(__ARM_FP) && defined(__GNUC__) && !defined(DYNCP_NO_SIMD)
#define MAC(acc, a, b) __asm__("vmla.f32 %0, %1, %2" : "+t"(acc) : "t"(a), "t"(b))
#else
#define MAC(acc, a, b) ((acc) = (acc) + (a) * (b))
#endif

/* Sixteen partial sums in a fixed order, s_j = sum over k of a[16k+j] x[16k+j], then
 * s_j += s_{j+8}, s_j += s_{j+4}, (s_0 + s_2) + (s_1 + s_3): the same result on every target.
 * n is a multiple of 16. On 64-bit hosts GCC's vector extensions spell it as vector code (a
 * compiler does not vectorise that last reduction from scalars by itself); elsewhere scalars. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__aarch64__)) && !defined(DYNCP_NO_SIMD)
#define DYNCP_HOST_VEC 1
#else
#define DYNCP_HOST_VEC 0
#endif

#if DYNCP_HOST_VEC
typedef float dyncp_v16 __attribute__((vector_size(64)));
typedef float dyncp_v8 __attribute__((vector_size(32)));
typedef float dyncp_v4 __attribute__((vector_size(16)));

static float reduce16(dyncp_v16 s)
{
    dyncp_v8 lo8, hi8;
    dyncp_v4 lo4, hi4;
    __builtin_memcpy(&lo8, &s, sizeof lo8);
    __builtin_memcpy(&hi8, (const char *)&s + sizeof lo8, sizeof hi8);
    lo8 = lo8 + hi8;
    __builtin_memcpy(&lo4, &lo8, sizeof lo4);
    __builtin_memcpy(&hi4, (const char *)&lo8 + sizeof lo4, sizeof hi4);
    lo4 = lo4 + hi4;
    return (lo4[0] + lo4[2]) + (lo4[1] + lo4[3]);
}

static float dot(const float *restrict a, const float *restrict x, int n)
{
    dyncp_v16 s = {0.0f}, va, vx;
    int i;
    for (i = 0; i < n; i += 16) {
        __builtin_memcpy(&va, a + i, sizeof va);
        __builtin_memcpy(&vx, x + i, sizeof vx);
        s = s + va * vx;
    }
    return reduce16(s);
}

/* two rows against one x in one pass (each exactly as dot): shares the loads of x and gives
 * the processor two independent chains */
static void dot2(const float *restrict a0, const float *restrict a1, const float *restrict x,
                 int n, float *r0, float *r1)
{
    dyncp_v16 s0 = {0.0f}, s1 = {0.0f}, v0, v1, vx;
    int i;
    for (i = 0; i < n; i += 16) {
        __builtin_memcpy(&vx, x + i, sizeof vx);
        __builtin_memcpy(&v0, a0 + i, sizeof v0);
        __builtin_memcpy(&v1, a1 + i, sizeof v1);
        s0 = s0 + v0 * vx;
        s1 = s1 + v1 * vx;
    }
    *r0 = reduce16(s0);
    *r1 = reduce16(s1);
}
#else
static float dot(const float *restrict a, const float *restrict x, int n)
{
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f, s4 = 0.0f, s5 = 0.0f, s6 = 0.0f, s7 = 0.0f;
    float s8 = 0.0f, s9 = 0.0f, s10 = 0.0f, s11 = 0.0f, s12 = 0.0f, s13 = 0.0f, s14 = 0.0f;
    float s15 = 0.0f;
    int i;
    for (i = 0; i < n; i += 16) {
        MAC(s0, a[i], x[i]); MAC(s1, a[i + 1], x[i + 1]); MAC(s2, a[i + 2], x[i + 2]);
        MAC(s3, a[i + 3], x[i + 3]); MAC(s4, a[i + 4], x[i + 4]); MAC(s5, a[i + 5], x[i + 5]);
        MAC(s6, a[i + 6], x[i + 6]); MAC(s7, a[i + 7], x[i + 7]); MAC(s8, a[i + 8], x[i + 8]);
        MAC(s9, a[i + 9], x[i + 9]); MAC(s10, a[i + 10], x[i + 10]);
        MAC(s11, a[i + 11], x[i + 11]); MAC(s12, a[i + 12], x[i + 12]);
        MAC(s13, a[i + 13], x[i + 13]); MAC(s14, a[i + 14], x[i + 14]);
        MAC(s15, a[i + 15], x[i + 15]);
    }
    s0 += s8; s1 += s9; s2 += s10; s3 += s11; s4 += s12; s5 += s13; s6 += s14; s7 += s15;
    s0 += s4; s1 += s5; s2 += s6; s3 += s7;
    return (s0 + s2) + (s1 + s3);
}

static void dot2(const float *a0, const float *a1, const float *x, int n, float *r0, float *r1)
{
    *r0 = dot(a0, x, n);
    *r1 = dot(a1, x, n);
}
#endif

/* out[r] = dot(w + r * stride, x, n) for r < rows, two rows a pass */
static void dots(const float *w, int stride, int rows, const float *x, int n, float *out)
{
    int r;
    for (r = 0; r + 1 < rows; r += 2)
        dot2(w + r * stride, w + (r + 1) * stride, x, n, out + r, out + r + 1);
    if (r < rows) out[r] = dot(w + r * stride, x, n);
}

/* y[i] = (((y[i] + w0[i] a0) + w1[i] a1) + w2[i] a2) + w3[i] a3: four columns at once, the same
 * additions in the same order as four single passes (so vectorising changes nothing) */
static void axpy4(float *restrict y, const float *const *w, const float *a, int n)
{
    const float *restrict w0 = w[0], *restrict w1 = w[1], *restrict w2 = w[2];
    const float *restrict w3 = w[3];
    float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    int i;
    for (i = 0; i < n; i++) {
        float t = y[i];
        MAC(t, w0[i], a0); MAC(t, w1[i], a1); MAC(t, w2[i], a2); MAC(t, w3[i], a3);
        y[i] = t;
    }
}

/* hosts: fetch the channel after next while this one computes (its row is one jump away; the
 * hardware prefetcher only follows each row). No effect on the results. */
static void prefetch_row(const float *p)
{
#if DYNCP_HOST_VEC
    int q;
    for (q = 0; q < DYNCP_CHAN_STRIDE; q += 16) __builtin_prefetch(p + q);
#else
    (void)p;
#endif
}

static void axpy(float *restrict y, const float *restrict w, float a, int n)
{
    int i;
    for (i = 0; i < n; i++) MAC(y[i], w[i], a);
}

static void front(struct dyncp_state *st, const float *mag)
{
    float *x = st->mag;                          /* compressed in place (mag is scratch) */
    int b, f;
    for (f = 0; f < DYNCP_N_FREQ; f++) {
        float v = mag[f];
#if DYNCP_COMPRESS_ON
        v = compress(v);
#endif
        x[f] = v;
    }
    for (; f < DYNCP_FREQ_PAD; f++) x[f] = 0.0f;
    dots(dyncp_front_w, DYNCP_FREQ_PAD, B, x, DYNCP_FREQ_PAD, st->h);
    for (b = 0; b < B; b++) {
        float v = st->h[b] + dyncp_front_b[b];
        st->h[b] = v > 0.0f ? v : 0.0f;
    }
    for (; b < BP; b++) st->h[b] = 0.0f;
}

#if DYNCP_GATED && !DYNCP_DENSE
static void gate_project(struct dyncp_state *st, int i, float sh, float *z)
{
    (void)sh;
    dots(dyncp_gw1 + i * DYNCP_RED * BP, BP, DYNCP_RED, st->h, BP, z);
}

static void gate_scores(struct dyncp_state *st, int i, const float *p)
{
    const float *w = dyncp_gw2t + i * DYNCP_RED * H;
    const float *w4[4];
    float *s = st->scores;
    int c, r;
    for (c = 0; c < H; c++) s[c] = GATE_BIAS(st, i, c);
    for (r = 0; r + 4 <= DYNCP_RED; r += 4) {
        w4[0] = w + r * H; w4[1] = w4[0] + H; w4[2] = w4[1] + H; w4[3] = w4[2] + H;
        axpy4(s, w4, p + r, H);
    }
#if DYNCP_RED % 4
    for (; r < DYNCP_RED; r++) axpy(s, w + r * H, p[r], H);
#endif
}
#endif

/* one active channel after its PW1 dot product: u into the ring, the depthwise taps, v */
DYNCP_INLINE float hidden(const float *row, float dot_u, dyncp_act (*ring)[H], const int *slot,
                          int pos, int c)
{
    const float *cf = row + BP + B + K;         /* b1 a1 s1 c1 bd a2 s2 c2 */
    float u = prelu(dot_u + cf[0], cf[1]) * cf[2] + cf[3], z = cf[4];
    int j;
    ring[pos][c] = u;
    for (j = 0; j < K; j++) z += row[BP + B + j] * ring[slot[j]][c];
    return prelu(z, cf[5]) * cf[6] + cf[7];
}

static void block(struct dyncp_state *st, int i, int n_on, float sh,
                  dyncp_act (*ring)[H], const int *slot, int pos)
{
    const float *chan = dyncp_chan + i * H * DYNCP_CHAN_STRIDE;
    float *h = st->h, *h2 = st->h2;
    const float *b2 = dyncp_pw2_b + i * B;
    const float *w4[4];
    float v4[4];
    dyncp_act *now = ring[pos];
    int a, b, c, j, g = 0;
    (void)sh;
    for (b = 0; b < B; b++) h2[b] = h[b] + b2[b];
    for (c = 0; c < H; c++) now[c] = 0.0f;
    for (a = 0; a < n_on; a += 2) {             /* two channels a turn, four per PW2 pass */
        int c0 = st->active[a], c1 = st->active[a + 1 < n_on ? a + 1 : a];
        const float *r0 = chan + c0 * DYNCP_CHAN_STRIDE, *r1 = chan + c1 * DYNCP_CHAN_STRIDE;
        float u0, u1;
        if (DYNCP_HOST_VEC && a + 3 < n_on) {
            prefetch_row(chan + st->active[a + 2] * DYNCP_CHAN_STRIDE);
            prefetch_row(chan + st->active[a + 3] * DYNCP_CHAN_STRIDE);
        }
        if (a + 1 < n_on) {
            dot2(r0, r1, h, BP, &u0, &u1);
        } else {
            u0 = dot(r0, h, BP);
            u1 = 0.0f;
        }
        w4[g] = r0 + BP;
        v4[g++] = hidden(r0, u0, ring, slot, pos, c0);
        if (a + 1 < n_on) {
            w4[g] = r1 + BP;
            v4[g++] = hidden(r1, u1, ring, slot, pos, c1);
        }
        if (g == 4) {
            axpy4(h2, w4, v4, B);
            g = 0;
        }
    }
    for (j = 0; j < g; j++) axpy(h2, w4[j], v4[j], B);
    for (b = 0; b < B; b++) h[b] = h2[b];
}

static void back(struct dyncp_state *st, float *mask)
{
    int f;
    dots(dyncp_back_w, BP, DYNCP_N_FREQ, st->h, BP, mask);
    for (f = 0; f < DYNCP_N_FREQ; f++) mask[f] = sigmoid(mask[f] + dyncp_back_b[f]);
}
