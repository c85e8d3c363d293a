/*
 * counter.c: a 64-bit tick count from the 24-bit SysTick timer.
 *
 * SysTick runs from the core clock and reloads every 2^24 ticks; its
 * interrupt counts the wraps. Under QEMU with -icount shift=0 each
 * instruction takes one virtual nanosecond, so ticks * 1e9 / FW_COUNTER_HZ
 * counts instructions to one tick. QEMU starts the timer's phase when it is
 * enabled, and the host's bytes arrive at no fixed virtual time. So
 * counter_start restarts the timer at the start of each measurement, and the
 * count depends only on the instructions run.
 */
#include "firmware.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)

#define SYST_ENABLE 0x1u
#define SYST_TICKINT 0x2u
#define SYST_CLKSOURCE_CORE 0x4u
#define SYST_PERIOD 0x01000000u

static volatile uint32_t wraps;

void SysTick_Handler(void);

void SysTick_Handler(void) { ++wraps; }

void counter_start(void) {
  SYST_CSR = 0;
  SYST_RVR = SYST_PERIOD - 1u;
  SYST_CVR = 0;
  wraps = 0;
  SYST_CSR = SYST_ENABLE | SYST_TICKINT | SYST_CLKSOURCE_CORE;
}

uint64_t counter_read(void) {
  uint32_t before;
  uint32_t value;
  uint32_t after;

  /* Read the wrap count on both sides of the timer value: when they differ,
   * the timer wrapped in between, and the second pair is consistent. */
  do {
    before = wraps;
    value = SYST_CVR;
    after = wraps;
  } while (before != after);
  /* The interrupt counts each arrival at zero; the tick after it reloads
   * the timer to SYST_PERIOD - 1, so zero ends one period exactly. */
  return (uint64_t)after * SYST_PERIOD + (value == 0 ? 0u : SYST_PERIOD - value);
}
