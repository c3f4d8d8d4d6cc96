/* tapegrad — the whole public API in one include.
 *
 *   tensor.h    tensors and the ownership rules, errors, RNG, threads, state dicts
 *   autograd.h  the tape, tg_backward, and every differentiable op
 *   nn.h        modules: layers, Sequential, parameters, state dicts of models
 *   optim.h     SGD, Adam, AdamW and their state dicts
 *   data.h      safetensors checkpoints, MNIST idx files and loader, PNG images
 *
 * docs/guide.md walks through them with complete, tested examples. */
#ifndef TAPEGRAD_H
#define TAPEGRAD_H

#include "tensor.h"
#include "autograd.h"
#include "nn.h"
#include "optim.h"
#include "data.h"

#endif
