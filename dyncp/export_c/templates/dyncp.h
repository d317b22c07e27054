/* dyncp: speech enhancement with Dynamic Channel Pruning, exported C library (@VARIANT@).
 *
 * Model "@MODEL@", exported by dyncp @VERSION@. C99, no malloc, no global mutable state, only
 * libm. The weights are const arrays (flash); each stream's state lives in memory you provide.
 *
 *     static uint64_t mem[(DYNCP_STATE_BYTES + 7) / 8];      8-byte aligned
 *     dyncp_state *st = (dyncp_state *)mem;
 *     dyncp_init(st, sizeof mem);
 *     for (;;) {                                            every DYNCP_HOP samples
 *         dyncp_process(st, in, out, DYNCP_HOP);            in and out may be the same buffer
 *     }
 *
 * Output = enhanced input delayed by DYNCP_LATENCY samples (the first DYNCP_LATENCY output
 * samples are zeros). Equal, sample for sample, to dyncp's own streaming
 * (`dyncp stream --engine sparse`): per frame each gate is evaluated first, then only the
 * active channels are computed and only their weights read.
 */
#ifndef DYNCP_H
#define DYNCP_H

#include <stddef.h>
#include <stdint.h>

#define DYNCP_SAMPLE_RATE @SAMPLE_RATE@  /* Hz */
#define DYNCP_HOP @HOP@                  /* samples per dyncp_process call (@HOP_MS@ ms) */
#define DYNCP_N_FFT @N_FFT@              /* STFT size (periodic Hann window) */
#define DYNCP_LATENCY @LATENCY@          /* output delay in samples (n_fft - hop) */
#define DYNCP_N_FREQ @N_FREQ@            /* bins of dyncp_mask's spectra */
#define DYNCP_N_BLOCKS @N_BLOCKS@        /* gated blocks */
#define DYNCP_CHANNELS @HID@             /* gated channels per block */
#define DYNCP_STATE_BYTES @STATE_BYTES@  /* >= dyncp_state_size(): per-stream state + scratch */
#define DYNCP_BUDGET @BUDGET@            /* 1: a budget model, Φ set at run time */
#define DYNCP_BUDGET_MIN @BUDGET_MIN@f   /* budget models: Φ in [MIN, MAX], or 0 */
#define DYNCP_BUDGET_MAX @BUDGET_MAX@f

enum {
    DYNCP_OK = 0,
    DYNCP_ERR_NULL = -1,    /* a NULL pointer */
    DYNCP_ERR_LENGTH = -2,  /* n != DYNCP_HOP (nothing processed, state unchanged) */
    DYNCP_ERR_MEMORY = -3,  /* dyncp_init: fewer than dyncp_state_size() bytes, or misaligned */
    DYNCP_ERR_STATE = -4,   /* the state was not initialised with dyncp_init */
    DYNCP_ERR_VALUE = -5,   /* a NaN or Inf input sample (output zeroed, state unchanged) */
    DYNCP_ERR_BUDGET = -6   /* dyncp_set_budget: not a budget model, or Φ out of range */
};

typedef struct dyncp_state dyncp_state;

/* Bytes one stream's state needs (state and all scratch; the library uses little stack). */
size_t dyncp_state_size(void);

/* Initialise (or reset) a stream in caller memory of `bytes` bytes, aligned to 8 bytes. */
int dyncp_init(dyncp_state *st, size_t bytes);

/* One hop: n (== DYNCP_HOP) float samples in [-1, 1] in, n enhanced samples out. Returns DYNCP_OK
 * or a negative DYNCP_ERR_* code. */
int dyncp_process(dyncp_state *st, const float *in, float *out, size_t n);

/* Budget models: the pruning ratio Φ from now on (0, or DYNCP_BUDGET_MIN to DYNCP_BUDGET_MAX;
 * 0 computes every channel and no gate, the static cost). dyncp_init sets the model's nominal Φ.
 * Returns DYNCP_ERR_BUDGET for another Φ or a model without a budget. Any frame may change it. */
int dyncp_set_budget(dyncp_state *st, float phi);

/* Advanced, for a caller with its own STFT: mask[DYNCP_N_FREQ] in [0, 1] for one frame's
 * magnitudes mag[DYNCP_N_FREQ] = |rfft(hann * frame)|. Advances the network state only; do not
 * mix with dyncp_process on one state. */
int dyncp_mask(dyncp_state *st, const float *mag, float *mask);

/* Gates of the last frame: gates[b * DYNCP_CHANNELS + c] = 1 where channel c of block b was
 * computed (if gates is not NULL; n >= DYNCP_N_BLOCKS * DYNCP_CHANNELS). Returns the number of
 * channels computed in that frame, or a negative DYNCP_ERR_* code. */
int dyncp_gates(const dyncp_state *st, uint8_t *gates, size_t n);

/* One line: model, variant, sizes. */
const char *dyncp_info(void);

#endif /* DYNCP_H */
