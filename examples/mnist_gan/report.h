/* mnist_gan's logs and report: losses.csv, losses.svg, eval.csv and the self-contained
 * report.html (report.c). */
#ifndef MNIST_GAN_REPORT_H
#define MNIST_GAN_REPORT_H

#include "gan.h"

/* ---- logs and the report (report.c) -------------------------------------------------------- */

typedef struct gan_log gan_log;

/* Opens OUT/losses.csv for a run: a new file (keep_until < 0), or, when resuming, the rows up
 * to iteration keep_until kept (later ones dropped: the resumed run writes them again). The
 * columns are the recipe's losses: iteration,epoch,batch,d_real,d_fake,g,seconds, or for
 * wgan-gp iteration,epoch,batch,critic,wasserstein,penalty,g,seconds. */
gan_log *gan_log_open(const char *out_dir, int64_t keep_until, gan_recipe recipe);
/* Appends one row (and flushes it). */
tg_status gan_log_row(gan_log *g, int64_t it, int64_t epoch, int64_t batch, const gan_losses *l,
                      double seconds);
/* Rewrites OUT/report.html (loss curves and the grid at png_path, embedded) and
 * OUT/losses.svg (the curves alone). */
tg_status gan_log_report(gan_log *g, const char *png_path, const char *title);
/* Closes the log. NULL is ignored. */
void gan_log_close(gan_log *g);

/* Appends one measurement of G (metrics.h) to OUT/eval.csv (made at the first one; on resume,
 * gan_log_open kept the rows up to the checkpoint); the report then shows the FID curve. */
struct gan_figures;
tg_status gan_log_eval(gan_log *g, int64_t it, const struct gan_figures *f);

#endif
