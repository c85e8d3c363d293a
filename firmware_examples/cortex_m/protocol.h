/*
 * protocol.h: the framed serial protocol between the host and the firmware.
 *
 * Every message, in both directions, is one frame:
 *
 *   0xA5 0x5A | type u8 | sequence u8 | length u16 | payload | CRC-32 u32
 *
 * Integers are little-endian. The CRC-32 (the IEEE 802.3 polynomial, as in
 * zlib) covers type, sequence, length and payload. A reply has the request's
 * type with bit 7 set, the request's sequence number, and a status byte as
 * the first byte of its payload. A frame with a bad CRC or a length above
 * FW_MAX_PAYLOAD gets a NAK reply. The firmware confirms an INVOKE with a
 * BUSY frame before the model runs, so the host waits long only for a
 * confirmed invoke. An INVOKE whose sequence number equals the previous
 * one's gets that reply again, without running the model twice. The host side is toolkit/device.py.
 */
#ifndef PROTOCOL_H
#define PROTOCOL_H

#define PROTOCOL_VERSION 1u
#define FRAME_SYNC0 0xA5u
#define FRAME_SYNC1 0x5Au
#define FRAME_HEADER_BYTES 6u
#define FRAME_CRC_BYTES 4u
#define REPLY_BIT 0x80u

/* Requests. */
#define CMD_INFO 0x01u         /* -> model and firmware description */
#define CMD_WRITE_INPUT 0x02u  /* u8 input, u32 offset, bytes */
#define CMD_INVOKE 0x03u       /* -> u64 total ticks, u32 deepest stack */
#define CMD_READ_OUTPUT 0x04u  /* u8 output, u32 offset, u16 size -> bytes */
#define CMD_READ_COUNTS 0x05u  /* u32 first layer, u16 count -> u32 ticks each */
#define CMD_INVOKE_LAYER 0x06u /* u32 layer: run one layer, in order after the inputs */
#define CMD_READ_LAYER 0x07u   /* u32 layer, u32 offset, u16 size -> output bytes */

/* Frames the firmware sends on its own. */
#define MSG_BOOT 0x7Fu  /* after reset: u16 version, u32 model CRC, u16 max payload */
#define MSG_BUSY 0x7Du  /* an INVOKE started; its reply follows when done */
#define MSG_FAULT 0x7Eu /* u32 exception number */
#define MSG_NAK 0xFFu   /* status: a frame arrived damaged */

/* Status bytes. */
#define STATUS_OK 0u
#define STATUS_BAD_CRC 1u
#define STATUS_UNKNOWN_COMMAND 2u
#define STATUS_BAD_ARGUMENT 3u
#define STATUS_CHECK_FAILED 4u
#define STATUS_TOO_LONG 5u

#endif /* PROTOCOL_H */
