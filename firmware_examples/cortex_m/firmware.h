/*
 * firmware.h: the pieces of the Cortex-M serial server.
 *
 * One UART driver per board family implements the uart_* functions
 * (uart_cmsdk.c, uart_nrf51.c, uart_stm32.c), and the build passes its
 * base address and clock with -D. counter.c counts SysTick ticks in each
 * layer. main.c replies to framed requests (see protocol.h).
 */
#ifndef FIRMWARE_H
#define FIRMWARE_H

#include <stddef.h>
#include <stdint.h>

/* Set up the UART at FW_BAUD_RATE, 8 data bits, no parity, 1 stop bit. */
void uart_init(void);

/* Return the next received byte (0..255), or -1 when none is waiting. */
int uart_poll(void);

/* Send `size` bytes, waiting while the transmitter is busy. */
void uart_write(const uint8_t *data, size_t size);

/* (Re)start SysTick from zero on the core clock, counting wraps in an
 * interrupt. */
void counter_start(void);

/* Ticks since counter_start, at FW_COUNTER_HZ. */
uint64_t counter_read(void);

/* Called from the model's layer hooks; store each layer's ticks. */
void fw_layer_begin(int32_t layer);
void fw_layer_end(int32_t layer);

/* The stack's size, and the deepest it has been since reset (bytes). */
uint32_t fw_stack_size(void);
uint32_t fw_stack_used(void);

/* Send a fault report frame; called from the fault handler. */
void fw_report_fault(uint32_t exception);

#endif /* FIRMWARE_H */
