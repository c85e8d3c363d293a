/*
 * startup.c: reset and exception entry for the Cortex-M serial server.
 *
 * The linker script (targets/cortex_m_sections.ld) provides the symbols
 * used here: the bounds of the stack, the load and run addresses of .data
 * and the bounds of .bss. Reset_Handler copies .data from flash, clears
 * .bss, fills the free stack with a pattern (fw_stack_used finds how deep
 * the stack went), turns on the FPU (and Helium) when the code was built for
 * one, then calls main. Faults report the exception over the serial line.
 */
#include <stddef.h>
#include <stdint.h>

#include "firmware.h"

extern uint32_t __stack_bottom[];
extern uint32_t __stack_top[];
extern const uint32_t __data_load[];
extern uint32_t __data_start[];
extern uint32_t __data_end[];
extern uint32_t __bss_start[];
extern uint32_t __bss_end[];

int main(void);
void Reset_Handler(void);
void Fault_Handler(void);
void Default_Handler(void);
void SysTick_Handler(void);

#define CPACR (*(volatile uint32_t *)0xE000ED88u)
#define STACK_PATTERN 0x57A5C0DEu
/* Bytes below the stack pointer that Reset_Handler leaves unpainted: its
 * own frame and the calls it makes. */
#define PAINT_MARGIN 64u
#define VTOR (*(volatile uint32_t *)0xE000ED08u)

typedef void (*vector_entry)(void);

/* Entries 0..15: the initial stack pointer and the core exceptions. External
 * interrupts stay disabled, so the table needs no entries for them. */
__attribute__((section(".vectors"), used)) static const vector_entry vector_table[16] = {
    (vector_entry)(uintptr_t)__stack_top,
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    Fault_Handler, /* SecureFault (Armv8-M) */
    0,
    0,
    0,
    Default_Handler, /* SVCall */
    Default_Handler, /* DebugMonitor */
    0,
    Default_Handler, /* PendSV */
    SysTick_Handler,
};

/* Words between two linker symbols; compared as addresses, because the
 * symbols are distinct objects to the C language. */
static size_t words_between(const uint32_t *start, const uint32_t *end) {
  return ((uintptr_t)end - (uintptr_t)start) / sizeof(uint32_t);
}

void Reset_Handler(void) {
  const size_t data_words = words_between(__data_start, __data_end);
  const size_t bss_words = words_between(__bss_start, __bss_end);
  uintptr_t sp;
  size_t paint_words;
  size_t i;

  for (i = 0; i < data_words; ++i) {
    __data_start[i] = __data_load[i];
  }
  for (i = 0; i < bss_words; ++i) {
    __bss_start[i] = 0;
  }
  __asm volatile("mov %0, sp" : "=r"(sp));
  paint_words = words_between(__stack_bottom, (const uint32_t *)(sp - PAINT_MARGIN));
  for (i = 0; i < paint_words; ++i) {
    ((volatile uint32_t *)__stack_bottom)[i] = STACK_PATTERN;
  }
#if defined(__ARM_FP) || defined(__ARM_FEATURE_MVE)
  /* Full access to coprocessors 10 and 11: the FPU and the M-profile
   * vector extension share them. */
  CPACR |= 0xFu << 20;
  __asm volatile("dsb\n\tisb" ::: "memory");
#endif
#if !defined(__ARM_ARCH_6M__)
  VTOR = (uint32_t)(uintptr_t)vector_table;
#endif
  (void)main();
  for (;;) {
  }
}

uint32_t fw_stack_size(void) {
  return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)__stack_bottom);
}

uint32_t fw_stack_used(void) {
  const size_t words = words_between(__stack_bottom, __stack_top);
  size_t i = 0;

  while (i < words && ((volatile const uint32_t *)__stack_bottom)[i] == STACK_PATTERN) {
    ++i;
  }
  return (uint32_t)((words - i) * sizeof(uint32_t));
}

void Fault_Handler(void) {
  uint32_t ipsr;

  __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
  fw_report_fault(ipsr & 0x1FFu);
  for (;;) {
  }
}

void Default_Handler(void) {
  for (;;) {
  }
}
