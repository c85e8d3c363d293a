/*
 * uart_nrf51.c: the UART of the nRF51 (BBC micro:bit), on the micro:bit's
 * USB serial pins P0.24 (TX) and P0.25 (RX).
 */
#include "firmware.h"

#define UART_BASE 0x40002000u
#define REG(offset) (*(volatile uint32_t *)(UART_BASE + (offset)))
#define TASKS_STARTRX REG(0x000u)
#define TASKS_STARTTX REG(0x008u)
#define EVENTS_RXDRDY REG(0x108u)
#define EVENTS_TXDRDY REG(0x11Cu)
#define ENABLE REG(0x500u)
#define PSELTXD REG(0x50Cu)
#define PSELRXD REG(0x514u)
#define RXD REG(0x518u)
#define TXD REG(0x51Cu)
#define BAUDRATE REG(0x524u)

#define BAUDRATE_115200 0x01D7E000u
#define ENABLE_UART 4u
#define PIN_TX 24u
#define PIN_RX 25u

void uart_init(void) {
  PSELTXD = PIN_TX;
  PSELRXD = PIN_RX;
  BAUDRATE = BAUDRATE_115200;
  ENABLE = ENABLE_UART;
  EVENTS_RXDRDY = 0;
  EVENTS_TXDRDY = 0;
  TASKS_STARTTX = 1;
  TASKS_STARTRX = 1;
}

int uart_poll(void) {
  if (!EVENTS_RXDRDY) {
    return -1;
  }
  EVENTS_RXDRDY = 0;
  return (int)(RXD & 0xFFu);
}

void uart_write(const uint8_t *data, size_t size) {
  size_t i;

  for (i = 0; i < size; ++i) {
    TXD = data[i];
    while (!EVENTS_TXDRDY) {
    }
    EVENTS_TXDRDY = 0;
  }
}
