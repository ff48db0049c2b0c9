using System.Numerics;
using System.Numerics.Tensors;
namespace NegDistill.Ops;

/// <summary>
/// RMSNorm: y = x · rstd · w, rstd = 1/√(mean(x²) + eps).
/// Backward, with g = dy ⊙ w:  dx = rstd · (g − x · rstd² · (g·x)/C),  dw = Σ_rows dy ⊙ x · rstd,
/// the dw sum taken per block of <see cref="BlockRows"/> rows and then over the blocks in order (see Backward).
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

    /// <summary>Rows per block of the backward's dw sum: each block of rows sums its part of dw on its own, and the parts
    /// are added in block order, so the backend runs blocks in parallel and gets the same bits at any thread count.</summary>
    public const int BlockRows = 32;

    /// <param name="dx">(N,C) +=</param><param name="dw">(C) +=</param><param name="dout">(N,C)</param>
    public static void Backward<T>(Span<T> dx, Span<T> dw, ReadOnlySpan<T> dout, ReadOnlySpan<T> x, ReadOnlySpan<T> w, ReadOnlySpan<T> rstd, int n, int c)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int blocks = (n + BlockRows - 1) / BlockRows;
        var parts = new T[(long)blocks * c];
        for (int b = 0; b < blocks; b++)
        {
            int lo = b * BlockRows, rows = Math.Min(BlockRows, n - lo);
            BackwardBlock(dx.Slice(lo * c, rows * c), parts.AsSpan(b * c, c), dout.Slice(lo * c, rows * c), x.Slice(lo * c, rows * c), w, rstd.Slice(lo, rows), rows, c);
        }
        AddParts(dw, parts, blocks, c);
    }

    /// <summary>
    /// One block of rows: dx += its rows' gradient; part = Σ over the block's rows (in order) of dy ⊙ x · rstd.
    /// Vectors of <see cref="Vector{T}"/> over C (the dot product g·x sums in vector lanes, then across them).
    /// </summary>
    /// <param name="dx">(rows,C) +=</param><param name="part">(C) overwritten; empty: dw not wanted (a frozen weight)</param><param name="dout">(rows,C)</param>
    /// <param name="x">(rows,C)</param><param name="w">(C)</param><param name="rstd">(rows)</param>
    public static void BackwardBlock<T>(Span<T> dx, Span<T> part, ReadOnlySpan<T> dout, ReadOnlySpan<T> x, ReadOnlySpan<T> w, ReadOnlySpan<T> rstd, int rows, int c)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        bool parts = !part.IsEmpty;
        part.Clear();
        int vw = Vector.IsHardwareAccelerated ? Vector<T>.Count : int.MaxValue;
        int full = vw == int.MaxValue ? 0 : c / vw * vw;
        for (int i = 0; i < rows; i++)
        {
            var xi = x.Slice(i * c, c);
            var di = dout.Slice(i * c, c);
            var dxi = dx.Slice(i * c, c);
            T r = rstd[i];
            var acc = Vector<T>.Zero;
            for (int j = 0; j < full; j += vw) acc += new Vector<T>(di.Slice(j)) * new Vector<T>(w.Slice(j)) * new Vector<T>(xi.Slice(j));
            T gx = Vector.Sum(acc);
            for (int j = full; j < c; j++) gx += di[j] * w[j] * xi[j];
            T coef = r * r * r * gx / T.CreateTruncating(c);
            var vr = new Vector<T>(r);
            var vcoef = new Vector<T>(coef);
            for (int j = 0; j < full; j += vw)
            {
                Vector<T> d = new(di.Slice(j)), xv = new(xi.Slice(j));
                (new Vector<T>(dxi.Slice(j)) + (vr * d * new Vector<T>(w.Slice(j)) - vcoef * xv)).CopyTo(dxi.Slice(j));
                if (parts) (new Vector<T>(part.Slice(j)) + d * xv * vr).CopyTo(part.Slice(j));
            }
            for (int j = full; j < c; j++)
            {
                dxi[j] += r * di[j] * w[j] - coef * xi[j];
                if (parts) part[j] += di[j] * xi[j] * r;
            }
        }
    }

    /// <summary>dw += parts[0] + parts[1] + … in block order.</summary>
    /// <param name="dw">(C) +=</param><param name="parts">(blocks, C)</param>
    public static void AddParts<T>(Span<T> dw, ReadOnlySpan<T> parts, int blocks, int c)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        for (int b = 0; b < blocks; b++)
        {
            var pb = parts.Slice(b * c, c);
            for (int j = 0; j < c; j++) dw[j] += pb[j];
        }
    }
}
