/* dyncp: the streaming contract (init, process one hop) and the STFT around the network.
 *
 * Exactly dyncp's streaming (dyncp/streaming.py): frame t covers the zero-padded input
 * [t*hop - n_fft/2, t*hop + n_fft/2); the spectrum is rfft(hann * frame); the output overlap-adds
 * hann * irfft(mask * spectrum) and divides by the overlap-added hann^2 of the frames that exist
 * (fewer at the start), like torch.istft. The FFT is a radix-2 complex FFT of n_fft/2 points
 * with the usual split for real signals; twiddles and windows are const tables.
 */
#include "dyncp_internal.h"

#include <math.h>

#define M_HALF (DYNCP_N_FFT / 2)

/* DYNCP_STATE_BYTES (dyncp.h, for static allocation) must cover the struct */
typedef char dyncp__state_bytes_check[sizeof(struct dyncp_state) <= DYNCP_STATE_BYTES ? 1 : -1];

size_t dyncp_state_size(void) { return sizeof(struct dyncp_state); }

const char *dyncp_info(void) { return dyncp_info_text; }

int dyncp_init(dyncp_state *st, size_t bytes)
{
    unsigned char *p = (unsigned char *)st;
    size_t i;
    if (st == NULL) return DYNCP_ERR_NULL;
    if (bytes < sizeof(struct dyncp_state) || ((uintptr_t)st & 3u) != 0) return DYNCP_ERR_MEMORY;
    for (i = 0; i < sizeof(struct dyncp_state); i++) p[i] = 0;   /* zeros = silence before */
    st->skip = DYNCP_N_FFT / (2 * DYNCP_HOP) - 1;
    st->mute = DYNCP_N_FFT - DYNCP_HOP;
    dyncp__net_reset(st);                                        /* the nominal budget */
    st->magic = DYNCP_MAGIC;
    return DYNCP_OK;
}

/* In-place complex FFT of M_HALF points, x interleaved; inverse: conjugate twiddles, no 1/n. */
static void cfft(float *x, int inverse)
{
    int i, j, len;
    for (i = 0; i < M_HALF; i++) {
        j = dyncp_bitrev[i];
        if (i < j) {
            float tr = x[2 * i], ti = x[2 * i + 1];
            x[2 * i] = x[2 * j]; x[2 * i + 1] = x[2 * j + 1];
            x[2 * j] = tr; x[2 * j + 1] = ti;
        }
    }
    for (len = 2; len <= M_HALF; len <<= 1) {
        int half = len >> 1, step = DYNCP_N_FFT / len;
        for (i = 0; i < M_HALF; i += len) {
            for (j = 0; j < half; j++) {
                float wr = dyncp_tw_cos[j * step];
                float wi = inverse ? dyncp_tw_sin[j * step] : -dyncp_tw_sin[j * step];
                float *a = x + 2 * (i + j), *b = x + 2 * (i + j + half);
                float br = b[0] * wr - b[1] * wi, bi = b[0] * wi + b[1] * wr;
                b[0] = a[0] - br; b[1] = a[1] - bi;
                a[0] = a[0] + br; a[1] = a[1] + bi;
            }
        }
    }
}

/* buf [n_fft] real (destroyed) -> spec [n_freq] complex: z = even + i odd, Z = FFT(z),
 * X[k] = E[k] + W^k O[k] with E = (Z[k] + conj Z[M-k]) / 2, O = -i (Z[k] - conj Z[M-k]) / 2. */
static void rfft(float *buf, float *spec)
{
    int k;
    cfft(buf, 0);
    for (k = 0; k <= M_HALF; k++) {
        int k1 = k == M_HALF ? 0 : k, k2 = k == 0 ? 0 : M_HALF - k;
        float zr = buf[2 * k1], zi = buf[2 * k1 + 1], cr = buf[2 * k2], ci = -buf[2 * k2 + 1];
        float er = 0.5f * (zr + cr), ei = 0.5f * (zi + ci);
        float orr = 0.5f * (zi - ci), oi = -0.5f * (zr - cr);
        float wr = dyncp_tw_cos[k], wi = -dyncp_tw_sin[k];
        spec[2 * k] = er + (orr * wr - oi * wi);
        spec[2 * k + 1] = ei + (orr * wi + oi * wr);
    }
}

/* spec [n_freq] complex -> buf [n_fft] real times n_fft (the 1/n_fft is in dyncp_win_syn).
 * The imaginary parts of bins 0 and n_fft/2 are ignored, as numpy's irfft does. */
static void irfft(float *spec, float *buf)
{
    int k;
    spec[1] = 0.0f;
    spec[2 * M_HALF + 1] = 0.0f;
    for (k = 0; k < M_HALF; k++) {
        float xr = spec[2 * k], xi = spec[2 * k + 1];
        float cr = spec[2 * (M_HALF - k)], ci = -spec[2 * (M_HALF - k) + 1];
        float er = xr + cr, ei = xi + ci;                /* 2 E[k] */
        float dr = xr - cr, di = xi - ci;                /* 2 W^k O[k] */
        float c = dyncp_tw_cos[k], s = dyncp_tw_sin[k];
        float orr = dr * c - di * s, oi = dr * s + di * c; /* 2 O[k] */
        buf[2 * k] = er - oi;
        buf[2 * k + 1] = ei + orr;
    }
    cfft(buf, 1);
}

static int check(const dyncp_state *st)
{
    if (st == NULL) return DYNCP_ERR_NULL;
    return st->magic == DYNCP_MAGIC ? DYNCP_OK : DYNCP_ERR_STATE;
}

int dyncp_process(dyncp_state *st, const float *in, float *out, size_t n)
{
    int i, err = check(st);
    const float *inv_env;
    if (err) return err;
    if (in == NULL || out == NULL) return DYNCP_ERR_NULL;
    if (n != DYNCP_HOP) return DYNCP_ERR_LENGTH;
    for (i = 0; i < DYNCP_HOP; i++) {
        if (!isfinite(in[i])) {
            for (i = 0; i < DYNCP_HOP; i++) out[i] = 0.0f;
            return DYNCP_ERR_VALUE;
        }
    }
    /* analysis frame: the last n_fft - hop samples, then this hop (in may alias out) */
    for (i = 0; i < DYNCP_N_FFT - DYNCP_HOP; i++) st->buf[i] = st->in_tail[i];
    for (i = 0; i < DYNCP_HOP; i++) st->buf[DYNCP_N_FFT - DYNCP_HOP + i] = in[i];
    for (i = 0; i < DYNCP_N_FFT - DYNCP_HOP; i++) st->in_tail[i] = st->buf[DYNCP_HOP + i];
    if (st->skip > 0) {  /* hop < n_fft/2: the first frame needs n_fft/2 samples */
        st->skip--;
        for (i = 0; i < DYNCP_HOP; i++) out[i] = 0.0f;
        return DYNCP_OK;
    }
    for (i = 0; i < DYNCP_N_FFT; i++) st->buf[i] *= dyncp_window[i];
    rfft(st->buf, st->spec);
    for (i = 0; i < DYNCP_N_FREQ; i++) {
        float re = st->spec[2 * i], im = st->spec[2 * i + 1];
        st->mag[i] = sqrtf(re * re + im * im);
    }
    for (i = DYNCP_N_FREQ; i < DYNCP_FREQ_PAD; i++) st->mag[i] = 0.0f;
    inv_env = dyncp_inv_env[st->frames < DYNCP_OVERLAP - 1 ? st->frames : DYNCP_OVERLAP - 1];
    dyncp__net(st, st->mag, st->mask);
    for (i = 0; i < DYNCP_N_FREQ; i++) {
        st->spec[2 * i] *= st->mask[i];
        st->spec[2 * i + 1] *= st->mask[i];
    }
    irfft(st->spec, st->buf);
    /* overlap-add: emit the first hop, keep the rest */
    for (i = 0; i < DYNCP_N_FFT - DYNCP_HOP; i++)
        st->buf[i] = st->ola[i] + st->buf[i] * dyncp_win_syn[i];
    for (; i < DYNCP_N_FFT; i++) st->buf[i] = st->buf[i] * dyncp_win_syn[i];
    for (i = 0; i < DYNCP_HOP; i++) out[i] = st->buf[i] * inv_env[i];
    for (i = 0; i < DYNCP_N_FFT - DYNCP_HOP; i++) st->ola[i] = st->buf[DYNCP_HOP + i];
    for (i = 0; st->mute > 0 && i < DYNCP_HOP; i++, st->mute--) out[i] = 0.0f;
    return DYNCP_OK;
}

int dyncp_mask(dyncp_state *st, const float *mag, float *mask)
{
    int i, err = check(st);
    if (err) return err;
    if (mag == NULL || mask == NULL) return DYNCP_ERR_NULL;
    for (i = 0; i < DYNCP_N_FREQ; i++) st->mag[i] = mag[i];
    for (; i < DYNCP_FREQ_PAD; i++) st->mag[i] = 0.0f;
    dyncp__net(st, st->mag, mask);
    return DYNCP_OK;
}

int dyncp_gates(const dyncp_state *st, uint8_t *gates, size_t n)
{
    int b, c, err = check(st);
    if (err) return err;
    if (gates != NULL) {
        if (n < (size_t)DYNCP_N_BLOCKS * DYNCP_HID) return DYNCP_ERR_LENGTH;
        for (b = 0; b < DYNCP_N_BLOCKS; b++)
            for (c = 0; c < DYNCP_HID; c++)
                gates[b * DYNCP_HID + c] = (uint8_t)((st->gates[b][c >> 3] >> (c & 7)) & 1u);
    }
    return (int)st->n_active;
}
