/* dyncp on an emulated Cortex-M (qemu MPS2 boards, semihosting): stream a file through the
 * exported library hop by hop, count instructions per hop with SysTick under qemu -icount, and
 * write the output, the per-hop counts and the gates back to the host.
 *
 * Files (in qemu's working directory): in.f32 (float32 samples, a multiple of DYNCP_HOP) ->
 * out.f32 (float32), ticks.u32 (SysTick ticks per dyncp_process call), gates.u8 (per call
 * DYNCP_N_BLOCKS * DYNCP_CHANNELS bytes), report.txt (calibration and stack use).
 */
#include "dyncp.h"

#include <stdint.h>

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define MAX_HOPS 4096
#define STACK_PAINT 0x5AA5F00Du

static uint64_t mem[(DYNCP_STATE_BYTES + 7) / 8];
static float in[DYNCP_HOP], out[DYNCP_HOP];
static uint32_t ticks[MAX_HOPS];
static uint8_t gates[DYNCP_N_BLOCKS * DYNCP_CHANNELS];
extern uint32_t __stack_limit__;

/* ARM semihosting: operation in r0, argument block in r1, result in r0 */
static int semi(int op, void *arg)
{
    register int r0 __asm__("r0") = op;
    register void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static int sh_open(const char *name, int mode)
{
    uint32_t len = 0, a[3];
    while (name[len]) len++;
    a[0] = (uint32_t)name; a[1] = (uint32_t)mode; a[2] = len;
    return semi(0x01, a);
}

static int sh_rw(int op, int fd, void *buf, uint32_t n)   /* returns bytes NOT transferred */
{
    uint32_t a[3];
    a[0] = (uint32_t)fd; a[1] = (uint32_t)buf; a[2] = n;
    return semi(op, a);
}

static void sh_close(int fd) { uint32_t a = (uint32_t)fd; semi(0x02, &a); }

static void sh_exit(int ok)
{
    uint32_t a[2];
    a[0] = 0x20026u;                 /* ADP_Stopped_ApplicationExit */
    a[1] = (uint32_t)(ok ? 0 : 1);
    semi(0x20, a);                   /* SYS_EXIT_EXTENDED */
    for (;;) {}
}

static char *put_u(char *p, uint32_t v)
{
    char tmp[12];
    int n = 0;
    do { tmp[n++] = (char)('0' + v % 10u); v /= 10u; } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

static char *put_s(char *p, const char *s) { while (*s) *p++ = *s++; return p; }

static uint32_t elapsed(uint32_t t0, uint32_t t1) { return (t0 - t1) & 0x00FFFFFFu; }

/* a loop of exactly 2 * n instructions (subs + taken bne), for ticks -> instructions */
static uint32_t calibrate(uint32_t n)
{
    uint32_t t0 = SYST_CVR, t1;
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
    t1 = SYST_CVR;
    return elapsed(t0, t1);
}

int main(void)
{
    dyncp_state *st = (dyncp_state *)mem;
    int fin = sh_open("in.f32", 1 /* "rb" */), fout = sh_open("out.f32", 5 /* "wb" */);
    int fgate = sh_open("gates.u8", 5), hops = 0, rc_bad = 0, fd;
    uint32_t cal, *p, sp, lowest;
    char text[512], *q = text;
    if (fin < 0 || fout < 0 || fgate < 0 || dyncp_init(st, sizeof mem) != DYNCP_OK) sh_exit(0);
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 5u;                   /* enable, processor clock, no interrupt */
    cal = calibrate(1000000u);
    /* paint the stack below us, to measure how deep dyncp_process goes */
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (p = &__stack_limit__; (uint32_t)p < sp - 64u; p++) *p = STACK_PAINT;
    while (hops < MAX_HOPS && sh_rw(0x06, fin, in, sizeof in) == 0) {
        uint32_t t0 = SYST_CVR, t1;
        int rc = dyncp_process(st, in, out, DYNCP_HOP);
        t1 = SYST_CVR;
        ticks[hops++] = elapsed(t0, t1);
        rc_bad |= rc != DYNCP_OK;
        sh_rw(0x05, fout, out, sizeof out);
        dyncp_gates(st, gates, sizeof gates);
        sh_rw(0x05, fgate, gates, sizeof gates);
    }
    for (p = &__stack_limit__; *p == STACK_PAINT; p++) {}
    lowest = (uint32_t)p;
    sh_close(fin);
    sh_close(fout);
    sh_close(fgate);
    fd = sh_open("ticks.u32", 5);
    sh_rw(0x05, fd, ticks, (uint32_t)hops * 4u);
    sh_close(fd);
    q = put_s(q, "calibration_ticks_per_2M_insns ");  q = put_u(q, cal);
    q = put_s(q, "\nhops ");                           q = put_u(q, (uint32_t)hops);
    q = put_s(q, "\nstack_bytes ");                    q = put_u(q, sp - lowest);
    q = put_s(q, "\nstate_bytes ");                    q = put_u(q, (uint32_t)dyncp_state_size());
    q = put_s(q, "\nerrors ");                         q = put_u(q, (uint32_t)rc_bad);
    q = put_s(q, "\n");
    fd = sh_open("report.txt", 4 /* "w" */);
    sh_rw(0x05, fd, text, (uint32_t)(q - text));
    sh_close(fd);
    sh_exit(!rc_bad);
    return 0;
}
