/* Fused elementwise kernels for train.py (float32, contiguous rows).
 * The matrix products stay in numpy's BLAS; everything between them is here, one pass
 * over memory each instead of numpy's one temporary array per operator. */
#include <math.h>
#include <stdint.h>

#define K0 0.7978845608028654f /* sqrt(2/pi) */
#define K1 0.044715f

/* y = (x - mean) * rstd * g + b, saving xhat and rstd for backward */
void ln_fwd(const float *x, const float *g, const float *b, float *y, float *xhat, float *rstd, int n, int c) {
    for (int i = 0; i < n; i++) {
        const float *xr = x + (int64_t)i * c;
        float mu = 0.f, var = 0.f;
        for (int j = 0; j < c; j++) mu += xr[j];
        mu /= c;
        for (int j = 0; j < c; j++) { float d = xr[j] - mu; var += d * d; }
        float r = 1.0f / sqrtf(var / c + 1e-5f);
        rstd[i] = r;
        float *hr = xhat + (int64_t)i * c, *yr = y + (int64_t)i * c;
        for (int j = 0; j < c; j++) { float h = (xr[j] - mu) * r; hr[j] = h; yr[j] = h * g[j] + b[j]; }
    }
}

/* dx += layernorm backward of dout; dg, db accumulate over rows (caller zeroes them) */
void ln_bwd(const float *dout, const float *xhat, const float *rstd, const float *g, float *dx, float *dg, float *db,
            int n, int c) {
    for (int i = 0; i < n; i++) {
        const float *dr = dout + (int64_t)i * c, *hr = xhat + (int64_t)i * c;
        float s1 = 0.f, s2 = 0.f;
        for (int j = 0; j < c; j++) {
            float dh = dr[j] * g[j];
            s1 += dh;
            s2 += dh * hr[j];
            dg[j] += dr[j] * hr[j];
            db[j] += dr[j];
        }
        s1 /= c;
        s2 /= c;
        float r = rstd[i], *xr = dx + (int64_t)i * c;
        for (int j = 0; j < c; j++) xr[j] += r * (dr[j] * g[j] - s1 - hr[j] * s2);
    }
}

/* f += bias (in place), then out = gelu(f), saving tanh for backward */
void bias_gelu_fwd(float *f, const float *bias, float *out, float *t, int n, int c) {
    for (int i = 0; i < n; i++) {
        float *fr = f + (int64_t)i * c, *orow = out + (int64_t)i * c, *tr = t + (int64_t)i * c;
        for (int j = 0; j < c; j++) {
            float v = fr[j] + bias[j];
            fr[j] = v;
            float th = tanhf(K0 * (v + K1 * v * v * v));
            tr[j] = th;
            orow[j] = 0.5f * v * (1.f + th);
        }
    }
}

/* d = d * gelu'(f), in place (the bias gradient is its column sum: colsum) */
void gelu_bwd(float *d, const float *f, const float *t, int n, int c) {
    for (int i = 0; i < n; i++) {
        float *dr = d + (int64_t)i * c;
        const float *fr = f + (int64_t)i * c, *tr = t + (int64_t)i * c;
        for (int j = 0; j < c; j++) {
            float v = fr[j], th = tr[j];
            float gd = 0.5f * (1.f + th) + 0.5f * v * (1.f - th * th) * K0 * (1.f + 3.f * K1 * v * v);
            dr[j] *= gd;
        }
    }
}

/* rows of length t x t per (batch, head): scale, causal mask, softmax, in place */
void causal_softmax(float *att, int nbh, int t, float scale) {
    for (int m = 0; m < nbh; m++) {
        for (int i = 0; i < t; i++) {
            float *row = att + ((int64_t)m * t + i) * t;
            float mx = -1e30f;
            for (int j = 0; j <= i; j++) { row[j] *= scale; if (row[j] > mx) mx = row[j]; }
            float s = 0.f;
            for (int j = 0; j <= i; j++) { float e = expf(row[j] - mx); row[j] = e; s += e; }
            float inv = 1.f / s;
            for (int j = 0; j <= i; j++) row[j] *= inv;
            for (int j = i + 1; j < t; j++) row[j] = 0.f;
        }
    }
}

/* datt := att * (datt - rowsum(datt * att)) * scale, in place */
void softmax_bwd(float *datt, const float *att, int nbh, int t, float scale) {
    for (int64_t r = 0; r < (int64_t)nbh * t; r++) {
        float *d = datt + r * t;
        const float *a = att + r * t;
        float s = 0.f;
        for (int j = 0; j < t; j++) s += d[j] * a[j];
        for (int j = 0; j < t; j++) d[j] = a[j] * (d[j] - s) * scale;
    }
}

/* logits (n, v) become dloss/dlogits of the mean cross-entropy; returns the loss */
float xent_fwd_bwd(float *logits, const int64_t *targets, int n, int v) {
    double loss = 0.0;
    float inv_n = 1.f / n;
    for (int i = 0; i < n; i++) {
        float *row = logits + (int64_t)i * v;
        float mx = row[0];
        for (int j = 1; j < v; j++) if (row[j] > mx) mx = row[j];
        float s = 0.f;
        for (int j = 0; j < v; j++) { float e = expf(row[j] - mx); row[j] = e; s += e; }
        float inv = 1.f / s;
        int64_t y = targets[i];
        loss -= log((double)row[y] * inv);
        for (int j = 0; j < v; j++) row[j] = row[j] * inv * inv_n;
        row[y] -= inv_n;
    }
    return (float)(loss / n);
}

/* one Adam step over the flat parameter buffer; a = lr * sqrt(1-b2^t) / (1-b1^t) */
void adam(float *w, const float *g, float *m, float *v, int64_t n, float b1, float b2, float a, float eps) {
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = b1 * m[i] + (1.f - b1) * gi;
        float vi = b2 * v[i] + (1.f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        w[i] -= a * mi / (sqrtf(vi) + eps);
    }
}

/* colsum: out[j] = sum_i x[i, j] (bias gradients) */
void colsum(const float *x, float *out, int n, int c) {
    for (int j = 0; j < c; j++) out[j] = 0.f;
    for (int i = 0; i < n; i++) {
        const float *r = x + (int64_t)i * c;
        for (int j = 0; j < c; j++) out[j] += r[j];
    }
}

/* embedding backward: dwte[idx[i]] += dx[i]; dwpe[i % t] += dx[i] (both zeroed by caller) */
void embed_bwd(const float *dx, const int64_t *idx, float *dwte, float *dwpe, int n, int t, int c) {
    for (int i = 0; i < n; i++) {
        const float *r = dx + (int64_t)i * c;
        float *a = dwte + idx[i] * c, *p = dwpe + (int64_t)(i % t) * c;
        for (int j = 0; j < c; j++) { a[j] += r[j]; p[j] += r[j]; }
    }
}
