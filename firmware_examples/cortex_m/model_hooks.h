/*
 * model_hooks.h: forced into the compile of model.c (gcc -include), so the
 * generated invoke loop reads the counter before and after each layer.
 */
#ifndef MODEL_HOOKS_H
#define MODEL_HOOKS_H

#include "firmware.h"

#define MODEL_BEFORE_LAYER(layer) fw_layer_begin(layer)
#define MODEL_AFTER_LAYER(layer) fw_layer_end(layer)

#endif /* MODEL_HOOKS_H */
