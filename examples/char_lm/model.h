/* char_lm's model, shared by the program (main.c) and its PyTorch conformance test: the CharLM of
 * torch_char_lm.py, with the same children and parameter names (embed.weight, cell.weight_ih,
 * cell.weight_hh, cell.bias_ih, cell.bias_hh, head.weight, head.bias). */
#ifndef CHAR_LM_MODEL_H
#define CHAR_LM_MODEL_H

#include "tapegrad.h"

/* Embedding(vocab, embed) -> GRUCell(embed, hidden) -> Linear(hidden, vocab), PyTorch's init. */
tg_module *charlm_new(int64_t vocab, int64_t embed, int64_t hidden, tg_rng *rng);
/* Logits [B, T, vocab] for ids [B, T] from the state h [B, hidden] (TG_NONE: zeros); *h_last
 * gets the state after the last character. Tape-owned, or NULL with the error set. */
tg_tensor *charlm_forward(tg_module *m, const tg_index *ids, tg_tensor *h, tg_tensor **h_last);
/* The mean cross-entropy of those logits against next [B, T], the characters that follow. */
tg_tensor *charlm_loss(tg_module *m, const tg_index *ids, const tg_index *next, tg_tensor *h,
                       tg_tensor **h_last);

#endif
