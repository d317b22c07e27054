/* dyncp: the per-stream state and the pieces shared by dyncp.c and dyncp_net.c. Not public. */
#ifndef DYNCP_INTERNAL_H
#define DYNCP_INTERNAL_H

#include "dyncp.h"
#include "dyncp_model.h"

#define DYNCP_MAGIC 0x44594e43u       /* "DYNC": set by dyncp_init */
#define DYNCP_MAGIC_INIT 0x494e4954u  /* "INIT": while dyncp_init runs */

#if DYNCP_INT8
typedef int16_t dyncp_act;       /* depthwise ring: u quantised per channel */
#else
typedef float dyncp_act;
#endif

/* One stream. 4-byte members first, then 2- and 1-byte ones: no padding inside. The scratch
 * arrays at the end carry nothing from one frame to the next; they live here, not on the stack,
 * so that the caller's one block of memory is all the RAM the library uses. */
struct dyncp_state {
    uint32_t magic;
    uint32_t frames;                   /* network frames computed (saturates) */
    uint32_t skip;                     /* hops to swallow before the first frame (n_fft > 2 hop) */
    uint32_t mute;                     /* output samples still to zero (before the signal) */
    uint32_t pool_pos;                 /* pooling ring slot of the current frame */
    uint32_t n_active;                 /* gated channels computed in the last frame */
    uint32_t bypass;                   /* budget models: Φ = 0, every channel, no gate */
    float budget_logit;                /* budget models: logit of the Φ code */
    uint32_t ring_pos[DYNCP_N_BLOCKS]; /* depthwise ring slot of the current frame, per block */
    float in_tail[DYNCP_N_FFT - DYNCP_HOP];               /* last n_fft - hop input samples */
    float ola[DYNCP_N_FFT - DYNCP_HOP];                   /* overlap-add tail */
    float pool[DYNCP_N_BLOCKS][DYNCP_POOL][DYNCP_RED];    /* gate: last L projected inputs */
    /* scratch */
    float buf[DYNCP_N_FFT];            /* FFT in place: n_fft/2 complex */
    float spec[2 * DYNCP_N_FREQ];      /* spectrum, interleaved re, im */
    float mag[DYNCP_FREQ_PAD];
    float mask[DYNCP_N_FREQ];
    float h[DYNCP_RES_PAD];            /* residual stream */
    float h2[DYNCP_RES_PAD];
    float z[DYNCP_RED_PAD];            /* gate: pooled projection */
    float scores[DYNCP_HID];
    float sel[DYNCP_SEL];              /* min_active floor: a copy of the scores */
#if DYNCP_INT8
    int32_t acc[DYNCP_RES_PAD];        /* PW2 accumulators */
#endif
    dyncp_act ring[DYNCP_RING_TOTAL][DYNCP_HID]; /* per block (k-1)*d+1 frames of u; 0 = pruned */
#if DYNCP_INT8
    int16_t xq[DYNCP_XQ];              /* quantised spectrum / residual stream */
    int16_t zq[DYNCP_RED_PAD];         /* quantised gate hidden layer */
#endif
    uint16_t active[DYNCP_HID];        /* channels to compute in the current block */
    uint8_t gates[DYNCP_N_BLOCKS][(DYNCP_HID + 7) / 8];   /* last frame, one bit a channel */
};

/* The mask estimator: mag [DYNCP_FREQ_PAD] (zero-padded) -> mask [DYNCP_N_FREQ]. */
void dyncp__net(struct dyncp_state *st, const float *mag, float *mask);
void dyncp__net_reset(struct dyncp_state *st);

#endif /* DYNCP_INTERNAL_H */
