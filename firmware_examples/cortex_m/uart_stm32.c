/*
 * uart_stm32.c: the USART of STM32F7 and STM32L4 parts (the same register
 * layout), on the pins a board routes to its ST-LINK virtual COM port.
 *
 * Settings (-D) come from the target description. UART_BASE is the USART
 * and UART_CLOCK_HZ its clock after reset (16 MHz HSI on the F7, 4 MHz MSI
 * on the L4). RCC_GPIO_ENR and RCC_GPIO_BITS enable the GPIO ports' clocks,
 * RCC_UART_ENR and RCC_UART_BIT the USART's. TX_GPIO, TX_PIN, RX_GPIO and
 * RX_PIN name the pins, and PIN_AF is their alternate function number.
 */
#include "firmware.h"

#ifndef FW_BAUD_RATE
#define FW_BAUD_RATE 115200u
#endif

#define REG(address) (*(volatile uint32_t *)(address))
#define USART_CR1 REG(UART_BASE + 0x00u)
#define USART_BRR REG(UART_BASE + 0x0Cu)
#define USART_ISR REG(UART_BASE + 0x1Cu)
#define USART_ICR REG(UART_BASE + 0x20u)
#define USART_RDR REG(UART_BASE + 0x24u)
#define USART_TDR REG(UART_BASE + 0x28u)

#define CR1_UE 0x1u
#define CR1_RE 0x4u
#define CR1_TE 0x8u
#define ISR_ERRORS 0xFu /* parity, framing, noise, overrun */
#define ISR_RXNE 0x20u
#define ISR_TXE 0x80u

#define GPIO_MODER(port) REG((port) + 0x00u)
#define GPIO_AFR(port, pin) REG((port) + 0x20u + 4u * ((pin) / 8u))

static void route_pin(uint32_t port, uint32_t pin) {
  const uint32_t shift = 4u * (pin % 8u);

  GPIO_AFR(port, pin) = (GPIO_AFR(port, pin) & ~(0xFu << shift)) | ((uint32_t)PIN_AF << shift);
  GPIO_MODER(port) = (GPIO_MODER(port) & ~(0x3u << (2u * pin))) | (0x2u << (2u * pin));
}

void uart_init(void) {
  REG(RCC_GPIO_ENR) |= RCC_GPIO_BITS;
  REG(RCC_UART_ENR) |= 1u << RCC_UART_BIT;
  (void)REG(RCC_UART_ENR); /* let the clock enable take effect */
  route_pin(TX_GPIO, TX_PIN);
  route_pin(RX_GPIO, RX_PIN);
  USART_CR1 = 0;
  USART_BRR = (UART_CLOCK_HZ + FW_BAUD_RATE / 2u) / FW_BAUD_RATE;
  USART_CR1 = CR1_UE | CR1_RE | CR1_TE;
}

int uart_poll(void) {
  const uint32_t status = USART_ISR;

  if (status & ISR_ERRORS) {
    USART_ICR = ISR_ERRORS; /* the frame's CRC catches the lost byte */
  }
  if (!(status & ISR_RXNE)) {
    return -1;
  }
  return (int)(USART_RDR & 0xFFu);
}

void uart_write(const uint8_t *data, size_t size) {
  size_t i;

  for (i = 0; i < size; ++i) {
    while (!(USART_ISR & ISR_TXE)) {
    }
    USART_TDR = data[i];
  }
}
