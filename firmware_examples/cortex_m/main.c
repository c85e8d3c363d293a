/*
 * main.c: a serial server that runs a generated model on a Cortex-M.
 *
 * The host writes the inputs, requests an invoke, then reads the outputs
 * and the ticks each layer took, all as frames described in protocol.h.
 * After reset the firmware sends a BOOT frame, so the host can tell a reset
 * from a lost reply. Nothing is allocated at run time: the receive buffer,
 * the model's arena and the per-layer counts are static.
 *
 * Build-time settings (-D): FW_MODEL_CRC (CRC-32 of model.tflite),
 * FW_COUNTER_HZ (SysTick clock), FW_MAX_PAYLOAD (largest payload, default
 * 256), and the UART driver's own settings.
 */
#include <string.h>

#include "firmware.h"
#include "model.h"
#include "protocol.h"

#ifndef FW_MAX_PAYLOAD
#define FW_MAX_PAYLOAD 256u
#endif
#ifndef FW_MODEL_CRC
#define FW_MODEL_CRC 0u
#endif
#ifndef FW_COUNTER_HZ
#error "define FW_COUNTER_HZ, the SysTick clock in Hz"
#endif

/* A frame that stops arriving for this many empty polls of the UART is
 * dropped: some tens of milliseconds on a board, less in QEMU. */
#ifndef FW_IDLE_POLLS
#define FW_IDLE_POLLS 200000u
#endif

/* The INFO reply must fit a frame: fail the build otherwise (C99 has no
 * _Static_assert). */
typedef char info_reply_fits[28 + 4 * (MODEL_INPUT_COUNT + MODEL_OUTPUT_COUNT) <= FW_MAX_PAYLOAD
                                 ? 1
                                 : -1];

enum parse_state { WAIT_SYNC0, WAIT_SYNC1, READ_BODY };

static uint8_t rx[4u + FW_MAX_PAYLOAD + FRAME_CRC_BYTES];
static uint32_t layer_ticks[MODEL_LAYER_COUNT];
static int model_ready;
static int last_invoke_seq = -1;
static uint8_t last_invoke_reply[13];

static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static void put_u16(uint8_t *p, uint32_t value) {
  p[0] = (uint8_t)value;
  p[1] = (uint8_t)(value >> 8);
}

static void put_u32(uint8_t *p, uint32_t value) {
  put_u16(p, value);
  put_u16(p + 2, value >> 16);
}

/* CRC-32, reflected polynomial 0xEDB88320, four bits at a time: a 64-byte
 * table instead of the usual 1 KB. */
static uint32_t crc32_update(uint32_t crc, const uint8_t *data, size_t size) {
  static const uint32_t nibble[16] = {
      0x00000000u, 0x1DB71064u, 0x3B6E20C8u, 0x26D930ACu, 0x76DC4190u, 0x6B6B51F4u,
      0x4DB26158u, 0x5005713Cu, 0xEDB88320u, 0xF00F9344u, 0xD6D6A3E8u, 0xCB61B38Cu,
      0x9B64C2B0u, 0x86D3D2D4u, 0xA00AE278u, 0xBDBDF21Cu};
  size_t i;

  for (i = 0; i < size; ++i) {
    crc ^= data[i];
    crc = (crc >> 4) ^ nibble[crc & 0xFu];
    crc = (crc >> 4) ^ nibble[crc & 0xFu];
  }
  return crc;
}

/* Send one frame whose payload is `head` followed by `body`. */
static void send_frame(uint8_t type, uint8_t seq, const uint8_t *head, size_t head_size,
                       const uint8_t *body, size_t body_size) {
  uint8_t header[FRAME_HEADER_BYTES];
  uint8_t trailer[FRAME_CRC_BYTES];
  uint32_t crc = 0xFFFFFFFFu;

  header[0] = FRAME_SYNC0;
  header[1] = FRAME_SYNC1;
  header[2] = type;
  header[3] = seq;
  put_u16(&header[4], (uint32_t)(head_size + body_size));
  crc = crc32_update(crc, &header[2], 4);
  crc = crc32_update(crc, head, head_size);
  if (body_size > 0) {
    crc = crc32_update(crc, body, body_size);
  }
  put_u32(trailer, ~crc);
  uart_write(header, sizeof header);
  uart_write(head, head_size);
  if (body_size > 0) {
    uart_write(body, body_size);
  }
  uart_write(trailer, sizeof trailer);
}

static void reply_status(uint8_t type, uint8_t seq, uint8_t status) {
  send_frame((uint8_t)(type | REPLY_BIT), seq, &status, 1, NULL, 0);
}

void fw_layer_begin(int32_t layer) {
  (void)layer;
  counter_start();
}

void fw_layer_end(int32_t layer) {
  const uint64_t ticks = counter_read();

  if (layer >= 0 && layer < MODEL_LAYER_COUNT) {
    layer_ticks[layer] = ticks > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)ticks;
  }
}

void fw_report_fault(uint32_t exception) {
  uint8_t payload[4];

  put_u32(payload, exception);
  send_frame(MSG_FAULT, 0, payload, sizeof payload, NULL, 0);
}

static void handle_info(uint8_t seq) {
  uint8_t info[28 + 4 * (MODEL_INPUT_COUNT + MODEL_OUTPUT_COUNT)];
  uint8_t *p = &info[28];
  int32_t i;

  info[0] = STATUS_OK;
  put_u16(&info[1], PROTOCOL_VERSION);
  put_u16(&info[3], FW_MAX_PAYLOAD);
  put_u32(&info[5], FW_MODEL_CRC);
  put_u32(&info[9], FW_COUNTER_HZ);
  put_u32(&info[13], MODEL_LAYER_COUNT);
  put_u32(&info[17], MODEL_ARENA_SIZE);
  put_u32(&info[21], fw_stack_size());
  info[25] = MODEL_INPUT_COUNT;
  info[26] = MODEL_OUTPUT_COUNT;
  info[27] = (uint8_t)model_ready;
  for (i = 0; i < MODEL_INPUT_COUNT; ++i, p += 4) {
    put_u32(p, (uint32_t)model_input_bytes(i));
  }
  for (i = 0; i < MODEL_OUTPUT_COUNT; ++i, p += 4) {
    put_u32(p, (uint32_t)model_output_bytes(i));
  }
  send_frame(CMD_INFO | REPLY_BIT, seq, info, sizeof info, NULL, 0);
}

static void handle_write_input(uint8_t seq, const uint8_t *payload, uint32_t size) {
  uint8_t *input;
  uint32_t offset;
  uint32_t count;

  if (size < 5) {
    reply_status(CMD_WRITE_INPUT, seq, STATUS_BAD_ARGUMENT);
    return;
  }
  input = (uint8_t *)model_input(payload[0]);
  offset = get_u32(&payload[1]);
  count = size - 5;
  if (input == NULL || offset > model_input_bytes(payload[0]) ||
      count > model_input_bytes(payload[0]) - offset) {
    reply_status(CMD_WRITE_INPUT, seq, STATUS_BAD_ARGUMENT);
    return;
  }
  memcpy(input + offset, &payload[5], count);
  last_invoke_seq = -1;
  reply_status(CMD_WRITE_INPUT, seq, STATUS_OK);
}

static void handle_invoke(uint8_t seq) {
  if (last_invoke_seq != (int)seq) {
    uint64_t ticks = 0;
    int32_t layer;

    if (!model_ready) {
      reply_status(CMD_INVOKE, seq, STATUS_CHECK_FAILED);
      return;
    }
    send_frame(MSG_BUSY, seq, (const uint8_t[]){STATUS_OK}, 1, NULL, 0);
    model_invoke();
    /* The total is the layers' sum: the loop between them is not counted. */
    for (layer = 0; layer < MODEL_LAYER_COUNT; ++layer) {
      ticks += layer_ticks[layer];
    }
    last_invoke_reply[0] = STATUS_OK;
    put_u32(&last_invoke_reply[1], (uint32_t)ticks);
    put_u32(&last_invoke_reply[5], (uint32_t)(ticks >> 32));
    put_u32(&last_invoke_reply[9], fw_stack_used());
    last_invoke_seq = seq;
  }
  send_frame(CMD_INVOKE | REPLY_BIT, seq, last_invoke_reply, sizeof last_invoke_reply, NULL, 0);
}

/* Reply with `count` bytes from `offset` of a tensor of `tensor_size`
 * bytes at `tensor` (NULL for an index out of range). */
static void reply_bytes(uint8_t command, uint8_t seq, const uint8_t *tensor, size_t tensor_size,
                        uint32_t offset, uint32_t count) {
  uint8_t status = STATUS_OK;

  if (tensor == NULL || count > FW_MAX_PAYLOAD - 1u || offset > tensor_size ||
      count > tensor_size - offset) {
    reply_status(command, seq, STATUS_BAD_ARGUMENT);
    return;
  }
  send_frame((uint8_t)(command | REPLY_BIT), seq, &status, 1, tensor + offset, count);
}

static void handle_read_output(uint8_t seq, const uint8_t *payload, uint32_t size) {
  if (size != 7) {
    reply_status(CMD_READ_OUTPUT, seq, STATUS_BAD_ARGUMENT);
    return;
  }
  reply_bytes(CMD_READ_OUTPUT, seq, (const uint8_t *)model_output(payload[0]),
              model_output_bytes(payload[0]), get_u32(&payload[1]), get_u16(&payload[5]));
}

static void handle_read_layer(uint8_t seq, const uint8_t *payload, uint32_t size) {
  int32_t layer;

  if (size != 10 || get_u32(payload) >= MODEL_LAYER_COUNT) {
    reply_status(CMD_READ_LAYER, seq, STATUS_BAD_ARGUMENT);
    return;
  }
  layer = (int32_t)get_u32(payload);
  reply_bytes(CMD_READ_LAYER, seq, (const uint8_t *)model_layer_output(layer),
              model_layer_output_bytes(layer), get_u32(&payload[4]), get_u16(&payload[8]));
}

/* Running one layer again reads the same inputs and rewrites the same
 * output (the planner never places an output over an input of its own
 * layer), so a repeated request is harmless. */
static void handle_invoke_layer(uint8_t seq, const uint8_t *payload, uint32_t size) {
  if (size != 4 || get_u32(payload) >= MODEL_LAYER_COUNT) {
    reply_status(CMD_INVOKE_LAYER, seq, STATUS_BAD_ARGUMENT);
    return;
  }
  if (!model_ready) {
    reply_status(CMD_INVOKE_LAYER, seq, STATUS_CHECK_FAILED);
    return;
  }
  last_invoke_seq = -1;
  model_invoke_layer((int32_t)get_u32(payload));
  reply_status(CMD_INVOKE_LAYER, seq, STATUS_OK);
}

static void handle_read_counts(uint8_t seq, const uint8_t *payload, uint32_t size) {
  uint32_t first;
  uint32_t count;
  uint8_t status = STATUS_OK;

  if (size != 6) {
    reply_status(CMD_READ_COUNTS, seq, STATUS_BAD_ARGUMENT);
    return;
  }
  first = get_u32(payload);
  count = get_u16(&payload[4]);
  if (first > MODEL_LAYER_COUNT || count > MODEL_LAYER_COUNT - first ||
      count * 4u > FW_MAX_PAYLOAD - 1u) {
    reply_status(CMD_READ_COUNTS, seq, STATUS_BAD_ARGUMENT);
    return;
  }
  /* The counts are stored little-endian already: every Cortex-M this
   * firmware builds for runs little-endian. */
  send_frame(CMD_READ_COUNTS | REPLY_BIT, seq, &status, 1, (const uint8_t *)&layer_ticks[first],
             count * 4u);
}

static void dispatch(uint8_t type, uint8_t seq, const uint8_t *payload, uint32_t size) {
  switch (type) {
    case CMD_INFO:
      handle_info(seq);
      break;
    case CMD_WRITE_INPUT:
      handle_write_input(seq, payload, size);
      break;
    case CMD_INVOKE:
      handle_invoke(seq);
      break;
    case CMD_READ_OUTPUT:
      handle_read_output(seq, payload, size);
      break;
    case CMD_READ_COUNTS:
      handle_read_counts(seq, payload, size);
      break;
    case CMD_INVOKE_LAYER:
      handle_invoke_layer(seq, payload, size);
      break;
    case CMD_READ_LAYER:
      handle_read_layer(seq, payload, size);
      break;
    default:
      reply_status(type, seq, STATUS_UNKNOWN_COMMAND);
      break;
  }
}

int main(void) {
  enum parse_state state = WAIT_SYNC0;
  uint32_t received = 0;
  uint32_t expected = 4;
  uint32_t idle_polls = 0;
  uint8_t boot[8];

  uart_init();
  counter_start();
  model_ready = model_check() == TK_OK;
  put_u16(boot, PROTOCOL_VERSION);
  put_u32(&boot[2], FW_MODEL_CRC);
  put_u16(&boot[6], FW_MAX_PAYLOAD);
  send_frame(MSG_BOOT, 0, boot, sizeof boot, NULL, 0);

  for (;;) {
    const int byte = uart_poll();

    if (byte < 0) {
      if (state == READ_BODY && ++idle_polls > FW_IDLE_POLLS) {
        state = WAIT_SYNC0;
      }
      continue;
    }
    idle_polls = 0;
    switch (state) {
      case WAIT_SYNC0:
        if (byte == FRAME_SYNC0) {
          state = WAIT_SYNC1;
        }
        break;
      case WAIT_SYNC1:
        if (byte == FRAME_SYNC1) {
          state = READ_BODY;
          received = 0;
          expected = 4;
        } else if (byte != FRAME_SYNC0) {
          state = WAIT_SYNC0;
        }
        break;
      case READ_BODY:
        rx[received++] = (uint8_t)byte;
        if (received == 4) {
          const uint32_t length = get_u16(&rx[2]);

          if (length > FW_MAX_PAYLOAD) {
            send_frame(MSG_NAK, rx[1], (const uint8_t[]){STATUS_TOO_LONG}, 1, NULL, 0);
            state = WAIT_SYNC0;
            break;
          }
          expected = 4 + length + FRAME_CRC_BYTES;
        }
        if (received == expected) {
          const uint32_t length = expected - 4 - FRAME_CRC_BYTES;
          const uint32_t crc = ~crc32_update(0xFFFFFFFFu, rx, 4 + length);

          state = WAIT_SYNC0;
          if (crc != get_u32(&rx[4 + length])) {
            send_frame(MSG_NAK, rx[1], (const uint8_t[]){STATUS_BAD_CRC}, 1, NULL, 0);
            break;
          }
          dispatch(rx[0], rx[1], &rx[4], length);
        }
        break;
    }
  }
}
