using System.Numerics;
namespace NegDistill.Ops;

/// <summary>
/// Rotary position embedding, rotate-half pairing as in Hugging Face LLaMA checkpoints: within each
/// head, element i pairs with i + hd/2 and is rotated by angle pos·θ^(−2i/hd):
///   y_i = x_i cos − x_{i+hd/2} sin,   y_{i+hd/2} = x_{i+hd/2} cos + x_i sin.
/// The backward is the transposed rotation (sin → −sin). In place.
/// Rows are independent (the backend splits them over threads). <see cref="Apply{T}"/> takes each row's
/// cos/sin once for all heads and rotates a head's halves with vectors; it gives the bits of the
/// element-by-element <see cref="ApplyReference{T}"/> (the same products and sums, no fused multiply-add).
/// CPU twin of kernels/NegDistill.Kernels/RopeKernels.cs.
/// </summary>
public static class Rope
{
    /// <summary>The inverse frequency of pair i, computed in fp32 as transformers does.</summary>
    public static float InvFreq(int i, int headDim, float theta) => 1f / MathF.Pow(theta, (2 * i) / (float)headDim);

    /// <param name="x">(N, H·hd) in place</param><param name="pos">(N) absolute positions</param>
    public static void Apply<T>(Span<T> x, ReadOnlySpan<int> pos, int n, int nHeads, int headDim, float theta, bool inverse)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int half = headDim / 2, c = nHeads * headDim;
        float[] inv = new float[half];
        T[] cs = new T[half], sn = new T[half];
        for (int i = 0; i < half; i++) inv[i] = InvFreq(i, headDim, theta);
        int w = Vector.IsHardwareAccelerated ? Vector<T>.Count : int.MaxValue;
        for (int r = 0; r < n; r++)
        {
            for (int i = 0; i < half; i++)
            {
                float ang = pos[r] * inv[i];
                cs[i] = T.CreateTruncating(MathF.Cos(ang));
                sn[i] = T.CreateTruncating(inverse ? -MathF.Sin(ang) : MathF.Sin(ang));
            }
            for (int h = 0; h < nHeads; h++)
            {
                var x1 = x.Slice(r * c + h * headDim, half);
                var x2 = x.Slice(r * c + h * headDim + half, half);
                int i = 0;
                for (; i + w <= half; i += w)
                {
                    Vector<T> a = new(x1.Slice(i)), b = new(x2.Slice(i)), vc = new(cs, i), vs = new(sn, i);
                    (a * vc - b * vs).CopyTo(x1.Slice(i));
                    (b * vc + a * vs).CopyTo(x2.Slice(i));
                }
                for (; i < half; i++)
                {
                    T a = x1[i], b = x2[i];
                    x1[i] = a * cs[i] - b * sn[i];
                    x2[i] = b * cs[i] + a * sn[i];
                }
            }
        }
    }

    /// <summary>The rotation element by element, angles recomputed per element: the reference <see cref="Apply{T}"/> is tested against.</summary>
    /// <param name="x">(N, H·hd) in place</param><param name="pos">(N) absolute positions</param>
    public static void ApplyReference<T>(Span<T> x, ReadOnlySpan<int> pos, int n, int nHeads, int headDim, float theta, bool inverse)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int half = headDim / 2, c = nHeads * headDim;
        for (int r = 0; r < n; r++)
        {
            for (int i = 0; i < half; i++)
            {
                float ang = pos[r] * InvFreq(i, headDim, theta);
                T cs = T.CreateTruncating(MathF.Cos(ang));
                T sn = T.CreateTruncating(inverse ? -MathF.Sin(ang) : MathF.Sin(ang));
                for (int h = 0; h < nHeads; h++)
                {
                    int o = r * c + h * headDim + i;
                    T x1 = x[o], x2 = x[o + half];
                    x[o] = x1 * cs - x2 * sn;
                    x[o + half] = x2 * cs + x1 * sn;
                }
            }
        }
    }
}
