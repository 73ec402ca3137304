/* loihi-emu's fixed-point LIF scan of a feed-forward layer (snnkit.deploy.loihi.emulator, _steps and
   _scan_backward in torch). Every value is an integer held in a double and every operation is exact: |v| < 2**23,
   keep = m / 4096 with m < 2**12, so v * keep = v * m / 4096 needs 35 bits and trunc() rounds it toward zero as
   Lava's right shift does; sums stay far below 2**53. Included once by lif_scan.c (double only). */

/* Potentials before the reset over steps x batch x n (contiguous, neuron last), from zero state:
   hs[t] = (keep ? trunc(v * keep[i]) : v) + inputs[t] (inputs: u + bias), clipped to +-vmax when clip;
   then v = 0 where h > thr (reset 0), h - thr where h > thr (reset 1), else h (and always for reset 2, a readout).
   Returns the number of clipped values, or -1 without memory for the state. */
long loihi_forward_f64(const double *RESTRICT inputs, double *RESTRICT hs, long steps, long batch, long n,
                       const double *RESTRICT keep, double thr, int reset, int clip, double vmax)
{
    long size = batch * n, clipped = 0;
    double *v = calloc((size_t)(size > 0 ? size : 1), sizeof(double));
    if (!v)
        return -1;
    for (long t = 0; t < steps; t++) {
        const double *x = inputs + t * size;
        double *h = hs + t * size;
        for (long b = 0; b < batch; b++) {
            for (long i = 0; i < n; i++) {
                long j = b * n + i;
                double hj = (keep ? trunc(v[j] * keep[i]) : v[j]) + x[j];
                if (clip && (hj > vmax || hj < -vmax)) {
                    hj = hj > vmax ? vmax : -vmax;
                    clipped++;
                }
                h[j] = hj;
                v[j] = (reset == 2 || hj <= thr) ? hj : (reset == 1 ? hj - thr : 0.0);
            }
        }
    }
    free(v);
    return clipped;
}

/* The reverse recurrence of the scan's straight-through gradient over steps x batch x n:
   g[last] = g_in[last], g[t] = g_in[t] + (g[t + 1] * keep[i]) * pass[t] (keep NULL: no factor; pass NULL: no
   factor, else 0 or 1 per element), the products in the order autograd takes them. */
void loihi_backward_f64(const double *RESTRICT g_in, const double *RESTRICT pass, const double *RESTRICT keep,
                        double *RESTRICT g, long steps, long batch, long n)
{
    long size = batch * n;
    if (steps <= 0)
        return;
    memcpy(g + (steps - 1) * size, g_in + (steps - 1) * size, (size_t)size * sizeof(double));
    for (long t = steps - 2; t >= 0; t--) {
        const double *next = g + (t + 1) * size;
        for (long b = 0; b < batch; b++) {
            for (long i = 0; i < n; i++) {
                long j = b * n + i;
                double gv = keep ? next[j] * keep[i] : next[j];
                if (pass)
                    gv = gv * pass[t * size + j];
                g[t * size + j] = g_in[t * size + j] + gv;
            }
        }
    }
}

/* The whole straight-through gradient of a feed-forward layer whose current is emptied every step (LIF, IF), in
   one reverse pass over steps x batch x n, from g_out (the loss gradient at the layer's output on its steps) and
   hs (its potentials before the reset):
     fire:  f[t] = g_out[t] * d((hs[t] - thr) / thr) / thr   (d: the surrogate's derivative, deriv_row's code,
                                                                p1, p2; mode 2, a readout: f[t] = g_out[t])
     h:     g[last] = f[last], g[t] = f[t] + (g[t + 1] * keep[i]) * (hs[t] <= thr)   (keep NULL: no factor; the
            last factor only for mode 0, reset to zero; mode 1 subtracts a detached threshold)
     out:   g_u[t] = g[t] * scale   (scale a power of two, so g[t + 1] = g_u[t + 1] / scale exactly)
   Each product is taken in the order of the torch path it replaces (_scan_backward). g_u doubles as the row
   buffer of the surrogate's argument. */
void loihi_grad_f64(const double *RESTRICT g_out, const double *RESTRICT hs, const double *RESTRICT keep,
                    double *RESTRICT g_u, long steps, long batch, long n, double thr, int mode, int code,
                    double p1, double p2, double scale)
{
    long size = batch * n;
    double unscale = 1.0 / scale;
    for (long t = steps - 1; t >= 0; t--) {
        const double *go = g_out + t * size, *h = hs + t * size;
        double *row = g_u + t * size;
        if (mode != 2) {
            for (long j = 0; j < size; j++)
                row[j] = (h[j] - thr) / thr;
            deriv_row_f64(row, size, code, p1, p2);
            for (long j = 0; j < size; j++)
                row[j] = go[j] * row[j] / thr;
        } else {
            memcpy(row, go, (size_t)size * sizeof(double));
        }
        if (t < steps - 1) {
            const double *next = g_u + (t + 1) * size;
            for (long b = 0; b < batch; b++) {
                for (long i = 0; i < n; i++) {
                    long j = b * n + i;
                    double gv = next[j] * unscale;
                    if (keep)
                        gv = gv * keep[i];
                    if (mode == 0)
                        gv = gv * (h[j] <= thr ? 1.0 : 0.0);
                    row[j] = row[j] + gv;
                }
            }
        }
        for (long j = 0; j < size; j++)
            row[j] = row[j] * scale;
    }
}
