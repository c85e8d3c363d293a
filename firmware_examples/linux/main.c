/*
 * main.c: run a generated model on Linux (a host PC or an ARM single-board
 * computer) from files.
 *
 * Usage: model_runner INPUT.bin OUTPUT.bin
 * INPUT.bin contains the raw bytes of every model input, one after another in
 * input order (MODEL_INPUTn_BYTES each); OUTPUT.bin receives the raw bytes
 * of every output the same way. Several inferences run back to back when
 * INPUT.bin contains several such records. Exit status 0 on success, 1 on a
 * usage or I/O error, 2 when the model's parameter check fails.
 *
 * Build it with a deployed directory DIR: compile this file, DIR/model.c,
 * DIR/model_weights.c and every .c file in DIR/kernels/src, with DIR and
 * DIR/kernels/include on the include path, and link with -lm.
 */
#include <stdio.h>
#include <string.h>

#include "model.h"

/* Read exactly `size` bytes; 1 on success, 0 at a clean end of file, -1 on
 * a short record. */
static int read_record(FILE *file, void *buffer, size_t size) {
  const size_t got = fread(buffer, 1, size, file);
  if (got == size) {
    return 1;
  }
  return got == 0 && feof(file) ? 0 : -1;
}

int main(int argc, char **argv) {
  FILE *input_file;
  FILE *output_file;
  long records = 0;
  int status = 0;

  if (argc != 3) {
    fprintf(stderr, "usage: %s INPUT.bin OUTPUT.bin\n", argv[0]);
    return 1;
  }
  if (model_check() != TK_OK) {
    fprintf(stderr, "error: the model's parameter check failed; deploy the model again\n");
    return 2;
  }
  input_file = fopen(argv[1], "rb");
  if (input_file == NULL) {
    fprintf(stderr, "error: cannot open input file %s\n", argv[1]);
    return 1;
  }
  output_file = fopen(argv[2], "wb");
  if (output_file == NULL) {
    fprintf(stderr, "error: cannot create output file %s\n", argv[2]);
    fclose(input_file);
    return 1;
  }

  for (;;) {
    int32_t i;
    int read_status = 1;

    for (i = 0; i < MODEL_INPUT_COUNT && read_status == 1; ++i) {
      read_status = read_record(input_file, model_input(i), model_input_bytes(i));
      if (read_status == 0 && i > 0) {
        read_status = -1;
      }
    }
    if (read_status == 0) {
      break;
    }
    if (read_status < 0) {
      fprintf(stderr, "error: %s ends inside record %ld; each record is the inputs' bytes\n",
              argv[1], records);
      status = 1;
      break;
    }

    model_invoke();

    for (i = 0; i < MODEL_OUTPUT_COUNT; ++i) {
      if (fwrite(model_output(i), 1, model_output_bytes(i), output_file) !=
          model_output_bytes(i)) {
        fprintf(stderr, "error: writing %s failed\n", argv[2]);
        status = 1;
        break;
      }
    }
    ++records;
  }

  fclose(input_file);
  if (fclose(output_file) != 0) {
    status = 1;
  }
  return status;
}
