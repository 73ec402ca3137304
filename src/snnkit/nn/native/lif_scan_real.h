/* The kernels for one floating type, included by lif_scan.c once per type with REAL (the type), SUF (the
   name suffix), FABS, EXP and FMA (its math functions) defined; TYPED(name) is name_SUF. */

/* u -> d spike / d u in place over one row; < 0 leaves u. The cases are the surrogates of
   src/snnkit/nn/surrogate.py: each class's kernel_code is its case here, its kernel_params() give p1, p2, and
   its derivative() is the formula below (tests/test_scan_speed_equivalence.py checks that they agree). */
static void TYPED(deriv_row)(REAL *RESTRICT u, long n, int code, REAL p1, REAL p2) {
    long i;
    switch (code) {
    case 0: /* atan: p1 = pi/2 alpha, p2 = alpha/2 */
        for (i = 0; i < n; ++i) { const REAL z = p1 * u[i]; u[i] = p2 / ((REAL)1 + z * z); }
        break;
    case 1: /* fast_sigmoid: p1 = k */
        for (i = 0; i < n; ++i) { const REAL z = p1 * FABS(u[i]) + (REAL)1; u[i] = (REAL)1 / (z * z); }
        break;
    case 2: /* triangle: p1 = gamma, p2 = gamma^2 */
        for (i = 0; i < n; ++i) { const REAL z = p1 - FABS(u[i]); u[i] = (z > 0 ? z : (REAL)0) / p2; }
        break;
    case 3: /* rectangular: p1 = width / 2, p2 = width */
        for (i = 0; i < n; ++i) u[i] = (FABS(u[i]) < p1 ? (REAL)1 : (REAL)0) / p2;
        break;
    case 4: /* sigmoid: p1 = k */
        for (i = 0; i < n; ++i) { const REAL g = (REAL)1 / ((REAL)1 + EXP(-p1 * u[i])); u[i] = p1 * g * ((REAL)1 - g); }
        break;
    case 5: /* escape: p1 = k, p2 = b */
        for (i = 0; i < n; ++i) u[i] = p1 * EXP(-p2 * FABS(u[i]));
        break;
    case 6: /* straight-through */
        for (i = 0; i < n; ++i) u[i] = (REAL)1;
        break;
    default:
        break;
    }
}

/* One step of a row of N neurons: charge h = beta v + x (rounded as torch.addcmul), fire if h > th, reset.
   pn (one parameter per neuron), sub (reset by subtraction), wh and wu (write h, write u = h - th) are constants
   at every call site, so each combination compiles to its own branch-free loop, which the compiler vectorises.
   (Tested inside the loop, they kept the loop scalar, with a branch per neuron on whether it fired: 16x slower
   on random input.) */
static inline __attribute__((always_inline)) void TYPED(row)(
        const REAL *RESTRICT x, const REAL *RESTRICT beta, const REAL *RESTRICT th, const REAL *RESTRICT vr,
        REAL *RESTRICT v, REAL *RESTRICT s, REAL *RESTRICT h, REAL *RESTRICT u, long N,
        const int pn, const int sub, const int wh, const int wu) {
    const REAL b0 = beta[0], t0 = th[0], r0 = vr[0];  /* the shared values, read before the loop (GCC 12 left
                                                         one variant scalar when they were read inside it) */
    for (long n = 0; n < N; ++n) {
        const REAL b = pn ? beta[n] : b0, t = pn ? th[n] : t0, r = pn ? vr[n] : r0;
        const REAL hv = CHARGE(b, v[n], x[n]);
        const REAL sv = hv > t ? (REAL)1 : (REAL)0;
        s[n] = sv;
        if (wh) h[n] = hv;
        if (wu) u[n] = hv - t;
        v[n] = sub ? hv - sv * t : (hv > t ? r : hv);
    }
}

/* row() with the outputs wanted (h, u: NULL when not), for one (pn, sub). */
static inline __attribute__((always_inline)) void TYPED(row_outputs)(
        const REAL *RESTRICT x, const REAL *RESTRICT beta, const REAL *RESTRICT th, const REAL *RESTRICT vr,
        REAL *RESTRICT v, REAL *RESTRICT s, REAL *RESTRICT h, REAL *RESTRICT u, long N, const int pn,
        const int sub) {
    if (h && u) TYPED(row)(x, beta, th, vr, v, s, h, u, N, pn, sub, 1, 1);
    else if (h) TYPED(row)(x, beta, th, vr, v, s, h, u, N, pn, sub, 1, 0);
    else if (u) TYPED(row)(x, beta, th, vr, v, s, h, u, N, pn, sub, 0, 1);
    else TYPED(row)(x, beta, th, vr, v, s, h, u, N, pn, sub, 0, 0);
}

/* Forward over O x T x N: input element (o, t, n) at o*xso + t*xst + n (a stride may be 0: an input constant
   over time), outputs at o*so + t*st + n. h and sg may be NULL (not wanted).
   beta, th, vr: N values each, or one each when per_neuron is 0. Returns 0, or 1 if out of memory. */
int TYPED(lif_forward)(const REAL *RESTRICT x, long xso, long xst, REAL *RESTRICT s, REAL *RESTRICT h,
                      REAL *RESTRICT sg, long O, long T, long N, long so, long st,
                      const REAL *RESTRICT beta, const REAL *RESTRICT th, const REAL *RESTRICT vr,
                      int per_neuron, int subtract, int code, REAL p1, REAL p2) {
    int failed = 0;
#pragma omp parallel if (O > 1 && O * T * N >= PARALLEL_MIN) reduction(| : failed)
    {
    REAL *RESTRICT v = (REAL *)malloc((size_t)(N > 0 ? N : 1) * sizeof(REAL));
    failed = !v;
#pragma omp for schedule(static)
    for (long o = 0; o < O; ++o) {
        if (!v) continue;
        memset(v, 0, (size_t)N * sizeof(REAL));
        for (long t = 0; t < T; ++t) {
            const long off = o * so + t * st;
            const REAL *RESTRICT xp = x + o * xso + t * xst;
            REAL *RESTRICT sp = s + off;
            REAL *RESTRICT hp = h ? h + off : 0;
            REAL *RESTRICT up = sg ? sg + off : 0;
            if (per_neuron) {
                if (subtract) TYPED(row_outputs)(xp, beta, th, vr, v, sp, hp, up, N, 1, 1);
                else TYPED(row_outputs)(xp, beta, th, vr, v, sp, hp, up, N, 1, 0);
            } else {
                if (subtract) TYPED(row_outputs)(xp, beta, th, vr, v, sp, hp, up, N, 0, 1);
                else TYPED(row_outputs)(xp, beta, th, vr, v, sp, hp, up, N, 0, 0);
            }
            if (up) TYPED(deriv_row)(up, N, code, p1, p2);
        }
    }
    free(v);
    }
    return failed;
}

/* dh[t] = gs[t] sg[t] + gh[t] + beta dh[t+1] (1 - s[t]) (no (1 - s[t]) factor for subtract); gs, gh may be NULL.
   dh: written at every step; or NULL, and then acc, O x N contiguous, gets each neuron's sum over the steps
   (the gradient of a drive repeated over time), added from the last step to the first.
   Returns 0, or 1 if out of memory. */
int TYPED(lif_backward)(const REAL *RESTRICT gs, const REAL *RESTRICT gh, const REAL *RESTRICT sg,
                       const REAL *RESTRICT s, REAL *RESTRICT dh, REAL *RESTRICT acc, long O, long T, long N,
                       long so, long st, const REAL *RESTRICT beta, int per_neuron, int subtract) {
    int failed = 0;
#pragma omp parallel if (O > 1 && O * T * N >= PARALLEL_MIN) reduction(| : failed)
    {
    REAL *RESTRICT carry = (REAL *)malloc((size_t)(N > 0 ? N : 1) * sizeof(REAL));
    failed = !carry;
#pragma omp for schedule(static)
    for (long o = 0; o < O; ++o) {
        if (!carry) continue;
        memset(carry, 0, (size_t)N * sizeof(REAL));
        REAL *RESTRICT ap = dh ? 0 : acc + o * N;
        if (ap) memset(ap, 0, (size_t)N * sizeof(REAL));
        for (long t = T - 1; t >= 0; --t) {
            const long off = o * so + t * st;
            const REAL *RESTRICT sgp = sg + off, *RESTRICT sp = s + off;
            const REAL *RESTRICT gsp = gs ? gs + off : 0, *RESTRICT ghp = gh ? gh + off : 0;
            REAL *RESTRICT dp = dh ? dh + off : 0;
            for (long n = 0; n < N; ++n) {
                REAL g = (subtract || sp[n] == (REAL)0) ? carry[n] : (REAL)0;
                if (gsp) g += gsp[n] * sgp[n];
                if (ghp) g += ghp[n];
                if (dp) dp[n] = g;
                else ap[n] += g;
                carry[n] = g * beta[per_neuron ? n : 0];
            }
        }
    }
    free(carry);
    }
    return failed;
}

/* 2 x 2 windows, stride 2, over P contiguous H x W planes (H, W even): y = ((x00 + x10) + (x01 + x11)) * scale,
   the order of snnkit.nn.layers._Pool2x2's torch path. */
void TYPED(pool2_forward)(const REAL *RESTRICT x, REAL *RESTRICT y, long P, long H, long W, REAL scale) {
    const long h2 = H / 2, w2 = W / 2;
#pragma omp parallel for schedule(static) if (P > 1 && P * H * W >= PARALLEL_MIN)
    for (long p = 0; p < P; ++p)
        for (long i = 0; i < h2; ++i) {
            const REAL *RESTRICT r0 = x + (p * H + 2 * i) * W, *RESTRICT r1 = r0 + W;
            REAL *RESTRICT yp = y + (p * h2 + i) * w2;
            for (long j = 0; j < w2; ++j)
                yp[j] = ((r0[2 * j] + r1[2 * j]) + (r0[2 * j + 1] + r1[2 * j + 1])) * scale;
        }
}

/* Its backward: every input of a window gets the window's gradient times scale. */
void TYPED(pool2_backward)(const REAL *RESTRICT g, REAL *RESTRICT dx, long P, long H, long W, REAL scale) {
    const long h2 = H / 2, w2 = W / 2;
#pragma omp parallel for schedule(static) if (P > 1 && P * H * W >= PARALLEL_MIN)
    for (long p = 0; p < P; ++p)
        for (long i = 0; i < h2; ++i) {
            const REAL *RESTRICT gp = g + (p * h2 + i) * w2;
            REAL *RESTRICT r0 = dx + (p * H + 2 * i) * W, *RESTRICT r1 = r0 + W;
            for (long j = 0; j < w2; ++j) {
                const REAL v = gp[j] * scale;
                r0[2 * j] = v; r0[2 * j + 1] = v; r1[2 * j] = v; r1[2 * j + 1] = v;
            }
        }
}

