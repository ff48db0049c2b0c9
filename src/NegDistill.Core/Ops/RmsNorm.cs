using System.Numerics;
using System.Numerics.Tensors;
namespace NegDistill.Ops;

/// <summary>
/// RMSNorm: y = x · rstd · w, rstd = 1/√(mean(x²) + eps).
/// Backward, with g = dy ⊙ w:  dx = rstd · (g − x · rstd² · (g·x)/C),  dw = Σ_rows dy ⊙ x · rstd.
/// CPU twin of kernels/NegDistill.Kernels/RmsNormKernels.cs.
/// </summary>
public static class RmsNorm
{
    /// <param name="outp">(N,C)</param><param name="rstd">(N) kept for backward</param><param name="x">(N,C)</param><param name="w">(C)</param>
    public static void Forward<T>(Span<T> outp, Span<T> rstd, ReadOnlySpan<T> x, ReadOnlySpan<T> w, int n, int c, T eps)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = 0; i < n; i++)
        {
            var xi = x.Slice(i * c, c);
            T ms = TensorPrimitives.Dot(xi, xi) / T.CreateTruncating(c);
            T r = T.One / T.Sqrt(ms + eps);
            rstd[i] = r;
            var yi = outp.Slice(i * c, c);
            TensorPrimitives.Multiply(xi, r, yi);
            TensorPrimitives.Multiply(yi, w, yi);
        }
    }

    /// <param name="dx">(N,C) +=</param><param name="dw">(C) +=</param><param name="dout">(N,C)</param>
    public static void Backward<T>(Span<T> dx, Span<T> dw, ReadOnlySpan<T> dout, ReadOnlySpan<T> x, ReadOnlySpan<T> w, ReadOnlySpan<T> rstd, int n, int c)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int i = 0; i < n; i++)
        {
            var xi = x.Slice(i * c, c);
            var di = dout.Slice(i * c, c);
            var dxi = dx.Slice(i * c, c);
            T r = rstd[i];
            T gx = T.Zero;
            for (int j = 0; j < c; j++) gx += di[j] * w[j] * xi[j];
            T coef = r * r * r * gx / T.CreateTruncating(c);
            for (int j = 0; j < c; j++)
            {
                dxi[j] += r * di[j] * w[j] - coef * xi[j];
                dw[j] += di[j] * xi[j] * r;
            }
        }
    }
}
