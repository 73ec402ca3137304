/* The compiled loops of snnkit.nn.native: the LIF scan (forward and backward) and 2 x 2 pooling, for float
   (suffix _f32) and double (_f64). lif_scan_real.h holds the kernels once, written over REAL; it is included
   below once per type, its function names pasted with the type's suffix (lif_forward_f32, ...). loihi_scan.h:
   loihi-emu's integer-exact fixed-point scan (double only).
   Build (snnkit/nn/native/build.py): -ffp-contract=off and -DSNNKIT_FUSED=1 or 0 (see CHARGE), and -fopenmp
   where the compiler has it: the scan and pooling loops then split the batch (the pooling: its planes) over the
   OpenMP threads torch uses (the same runtime, torch.set_num_threads), each sample's arithmetic unchanged. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#define RESTRICT __restrict__  /* every array argument is a separate buffer */
#define PASTE_(name, suffix) name##_##suffix
#define PASTE(name, suffix) PASTE_(name, suffix)
#define TYPED(name) PASTE(name, SUF)  /* TYPED(lif_forward) -> lif_forward_f32 while SUF is f32 */
/* Elements below which a loop stays on one thread (starting the team would cost more than it saves). */
#define PARALLEL_MIN 32768L
/* The charge beta * v + x: one rounding (fused) or two (-ffp-contract=off keeps them apart). */
#if SNNKIT_FUSED
#define CHARGE(a, b, c) FMA(a, b, c)
#else
#define CHARGE(a, b, c) ((a) * (b) + (c))
#endif

#define REAL float
#define SUF f32
#define FABS fabsf
#define EXP expf
#define FMA fmaf
#include "lif_scan_real.h"
#undef REAL
#undef SUF
#undef FABS
#undef EXP
#undef FMA

#define REAL double
#define SUF f64
#define FABS fabs
#define EXP exp
#define FMA fma
#include "lif_scan_real.h"
#undef REAL
#undef SUF
#undef FABS
#undef EXP
#undef FMA

#include "loihi_scan.h"
