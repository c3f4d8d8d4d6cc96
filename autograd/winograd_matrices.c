/* The transforms of Winograd's F(m x m, r x r) (autograd/winograd.c), built from the
 * interpolation points by Toom-Cook: A and B hold binary fractions, exact in float, the
 * Lagrange denominators go into G. Apart from the kernels because they are plain setup code,
 * compiled once (winograd.c is compiled once per ISA level). */
#include "winograd.h"

#include <string.h>

/* Coefficients of prod over l in [0, n), l != skip, of (x - a[l]), lowest first: n + 1 of them
 * (the top one 0 when a factor is skipped). */
static void poly_of_roots(const double *a, int n, int skip, double *c)
{
    memset(c, 0, (size_t)(n + 1) * sizeof(double));
    c[0] = 1.0;
    int deg = 0;
    for (int l = 0; l < n; l++) {
        if (l == skip)
            continue;
        deg++;
        for (int q = deg; q >= 0; q--)
            c[q] = (q > 0 ? c[q - 1] : 0.0) - a[l] * c[q];
    }
}

int tg_winograd_tile(int m, int r)
{
    return (m == 4 && (r == 2 || r == 3 || r == 5)) || (m == 6 && r == 3) ? m + r - 1 : 0;
}

int tg_winograd_m6 = 1;

int tg_winograd_out_tile(int64_t Ho, int64_t Wo, int r)
{
    if (r != 3 || !tg_winograd_m6)
        return 4;
    /* tiles of each kind times their points: F(6x6, 3x3)'s 64 against F(4x4, 3x3)'s 36 */
    const int64_t p4 = (Ho + 3) / 4 * ((Wo + 3) / 4) * 36, p6 = (Ho + 5) / 6 * ((Wo + 5) / 6) * 64;
    return p6 < p4 ? 6 : 4;
}

bool tg_winograd_matrices(int m, int r, double *A, double *B, double *G)
{
    const int T = tg_winograd_tile(m, r), NF = T - 1;
    if (!T)
        return false;
    /* the first 4 for 5 x 5 tiles, 5 for 6 x 6 ones, all 7 for 8 x 8 ones: powers of two, so
     * A and B hold binary fractions exact in float (B's from 1/4 to 21/4, A's powers of the
     * points: up to 32 and 1/32 for F(6x6, 3x3)) */
    static const double a[TG_WINO_TMAX - 1] = {0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5};
    double c[TG_WINO_TMAX + 1];
    /* Finite points: rows of values a^i (A) and a^k / f (G), with f = prod (a_j - a_l); the
     * columns of B are the polynomials f * L_j, L_j the Lagrange basis. */
    for (int j = 0; j < NF; j++) {
        double f = 1.0;
        for (int l = 0; l < NF; l++)
            f *= l == j ? 1.0 : a[j] - a[l];
        double p = 1.0;
        for (int i = 0; i < T; i++, p *= a[j]) {
            if (i < m)
                A[j * m + i] = p;
            if (i < r)
                G[j * r + i] = p / f;
        }
        poly_of_roots(a, NF, j, c);
        for (int q = 0; q < T; q++)
            B[q * T + j] = c[q];
    }
    /* The point at infinity: the leading coefficients, and the polynomial of all the roots
     * (the product of the polynomials minus its leading term vanishes at every finite point). */
    for (int i = 0; i < m; i++)
        A[NF * m + i] = i == m - 1;
    for (int k = 0; k < r; k++)
        G[NF * r + k] = k == r - 1;
    poly_of_roots(a, NF, -1, c);
    for (int q = 0; q < T; q++)
        B[q * T + NF] = c[q];
    return true;
}
