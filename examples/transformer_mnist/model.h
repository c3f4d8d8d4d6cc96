/* transformer_mnist's model, shared by the program and its tests: the PyTorch twin's
 * RowTransformer (torch_transformer_mnist.py), with its parameter names. */
#ifndef TRANSFORMER_MNIST_MODEL_H
#define TRANSFORMER_MNIST_MODEL_H

#include "tapegrad.h"

/* Each image is a sequence of 28 rows: Linear(28, d) + a learned position "pos" [28, d], then
 * `layers` encoder layers (GELU), the mean over rows, Linear(d, 10). tg_module_forward(model,
 * images [N, 1, 28, 28]) gives the logits [N, 10]. NULL with the error set on failure. */
tg_module *row_transformer(int64_t d, int64_t heads, int64_t ff, int64_t layers, tg_rng *rng);

/* The first layer's attention weights [N, heads, 28, 28] (query row, key row), tape-owned. */
tg_tensor *row_transformer_attention(tg_module *model, tg_tensor *images);

#endif
