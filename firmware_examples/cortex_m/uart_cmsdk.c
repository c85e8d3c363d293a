/*
 * uart_cmsdk.c: the Arm CMSDK APB UART of the MPS2 and MPS3 FPGA boards.
 *
 * Settings (-D): UART_BASE, the register block's address; UART_CLOCK_HZ,
 * the APB clock, for the baud divider (QEMU ignores the rate but refuses a
 * divider below 16).
 */
#include "firmware.h"

#ifndef FW_BAUD_RATE
#define FW_BAUD_RATE 115200u
#endif

#define UART_DATA (*(volatile uint32_t *)(UART_BASE + 0x00u))
#define UART_STATE (*(volatile uint32_t *)(UART_BASE + 0x04u))
#define UART_CTRL (*(volatile uint32_t *)(UART_BASE + 0x08u))
#define UART_BAUDDIV (*(volatile uint32_t *)(UART_BASE + 0x10u))

#define STATE_TX_FULL 0x1u
#define STATE_RX_FULL 0x2u
#define STATE_OVERRUNS 0xCu
#define CTRL_TX_ENABLE 0x1u
#define CTRL_RX_ENABLE 0x2u

void uart_init(void) {
  UART_BAUDDIV = UART_CLOCK_HZ / FW_BAUD_RATE;
  UART_CTRL = CTRL_TX_ENABLE | CTRL_RX_ENABLE;
}

int uart_poll(void) {
  const uint32_t state = UART_STATE;

  if (state & STATE_OVERRUNS) {
    UART_STATE = STATE_OVERRUNS; /* write 1 to clear; the frame's CRC catches the loss */
  }
  if (!(state & STATE_RX_FULL)) {
    return -1;
  }
  return (int)(UART_DATA & 0xFFu);
}

void uart_write(const uint8_t *data, size_t size) {
  size_t i;

  for (i = 0; i < size; ++i) {
    while (UART_STATE & STATE_TX_FULL) {
    }
    UART_DATA = data[i];
  }
}
