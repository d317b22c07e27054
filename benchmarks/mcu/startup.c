/* Minimal Cortex-M start-up for the qemu benchmark: vector table, FPU on, .bss zeroed, main. */
#include <stdint.h>

extern uint32_t __stack_top__, __bss_start__, __bss_end__;
int main(void);
void reset_handler(void);

static void fault(void) { for (;;) {} }

__attribute__((section(".vectors"), used))
static const void *const vectors[16] = {
    &__stack_top__, (void *)reset_handler, (void *)fault, (void *)fault, (void *)fault,
    (void *)fault, (void *)fault, 0, 0, 0, 0, (void *)fault, (void *)fault, 0, (void *)fault,
    (void *)fault,
};

void reset_handler(void)
{
    uint32_t *p;
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;    /* CPACR: CP10, CP11 full access */
    __asm__ volatile("dsb\n\tisb");
    for (p = &__bss_start__; p < &__bss_end__; p++) *p = 0;
    main();
    for (;;) {}
}
